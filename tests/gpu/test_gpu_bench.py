"""``python -m numbanorm bench --gpu``'s plumbing, on a tiny case."""

import numpy as np

from numbanorm._cli import bench, gpu_peers, peers
from numbanorm._cli.peers import Case, PeerUnavailable

TINY = (Case("layer_norm", (4, 8), "rows"), Case("batch_norm", (2, 3, 4), "NCHW"))


def test_gpu_bench_times_numbanorm_against_the_device_copy():
    results = bench.run(["*.forward", "batch_norm.backward_out"], quick=True, cases=TINY, gpu=True)
    assert [r["op"] for r in results] == [
        "layer_norm.forward",
        "batch_norm.forward",
        "batch_norm.backward_out",
    ]
    for r in results:
        assert r["seconds"] > 0 and r["copy_gb_per_s"] > 0 and r["fraction_of_copy"] > 0
        assert set(r["peers"]) <= set(gpu_peers.IMPLEMENTATIONS[1:])


def test_gpu_numbanorm_call_computes_the_cpu_result():
    case = TINY[1]
    data = case.data(np.float64)
    placed = []

    def place(a):
        placed.append(gpu_peers.to_device(a))
        return placed[-1]

    y = peers._numbanorm("forward", case, data, place=place)()[0]
    expected = peers._numbanorm("forward", case, data)()[0]
    np.testing.assert_allclose(y.copy_to_host(), expected, rtol=1e-12, atol=1e-12)


def test_peers_have_no_out_directions():
    try:
        gpu_peers.build("torch", "forward_out", TINY[0], TINY[0].data())
    except PeerUnavailable as error:
        assert "out=" in str(error)
    else:
        raise AssertionError("a peer claimed an out= forward")
