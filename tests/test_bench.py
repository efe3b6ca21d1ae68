"""The benchmark peers compute what numbanorm computes, and the bench command reports it."""

import json

import numpy as np
import pytest

from numbanorm.__main__ import main
from numbanorm._cli import bench, peers
from numbanorm._cli.peers import BENCHMARK_CASES, IMPLEMENTATIONS, Case, PeerUnavailable, build
from numbanorm._specs import NORMS

SMALL_CASES = (
    Case("layer_norm", (24, 40), "rows"),
    Case("rms_norm", (24, 40), "rows"),
    Case("batch_norm", (4, 6, 5, 3), "NCHW"),
    Case("batch_norm", (50, 6), "2-D"),
    Case("batch_norm", (4, 5, 3, 6), "NHWC"),
    Case("group_norm", (4, 6, 5, 3), "NCHW", groups=3),
    Case("group_norm", (4, 5, 3, 6), "NHWC", groups=3),
    Case("instance_norm", (4, 6, 5, 3), "NCHW"),
    Case("instance_norm", (4, 5, 3, 6), "NHWC"),
    Case("moments", (24, 40), "rows"),
    Case("moments", (4, 6, 5, 3), "NCHW"),
)


def test_every_norm_has_cases_and_every_peers_version():
    names = {norm.name for norm in NORMS}
    assert names <= {case.norm for case in BENCHMARK_CASES}
    assert names <= {case.norm for case in SMALL_CASES}
    assert set(peers.TORCH_FUNCTIONS) == set(peers.ONNX_OPERATORS) == names


def _arrays(result, case):
    """The arrays of any implementation's result, as NumPy, channels back where ``x`` has them."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    arrays = []
    for item in items:
        if hasattr(item, "detach"):  # a torch tensor, channels-first when x is channels-last
            item = item.detach()
            if case.layout == "NHWC" and item.ndim == len(case.shape):
                item = item.permute(0, *range(2, item.ndim), 1)
            item = item.numpy()
        arrays.append(np.asarray(item, dtype=np.float64))
    return arrays


@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda case: case.label)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS[1:])
@pytest.mark.parametrize("direction", ["forward", "eval", "backward"])
def test_peers_agree_with_numbanorm(case, impl, direction):
    data = case.data(np.float32, seed=3)
    try:
        peer = build(impl, direction, case, data)
    except PeerUnavailable:
        pytest.skip(f"{impl} has no {direction} of {case.label} here")
    expected = _arrays(build("numbanorm", direction, case, data)(), case)
    actual = _arrays(peer(), case)
    if direction == "forward" and case.norm != "moments":
        expected = expected[:1]  # numbanorm's forward also returns its statistics
        actual = actual[:1]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("direction", ["forward", "eval", "backward"])
def test_out_directions_write_what_the_allocating_ones_return(direction):
    case = SMALL_CASES[2]
    data = case.data(np.float64, seed=1)
    written = build("numbanorm", f"{direction}_out", case, data)()
    returned = build("numbanorm", direction, case, data)()
    if not isinstance(returned, tuple):  # eval: the plain function, y alone
        returned = (returned,)
    if direction != "backward":  # the plain function returns y; *_forward also the statistics
        written, returned = (written,), returned[:1]
    assert len(written) == len(returned)
    for a, e in zip(written, returned):
        np.testing.assert_array_equal(a, e)
    with pytest.raises(PeerUnavailable):
        build("numpy", f"{direction}_out", case, data)


def test_run_reports_bandwidth_and_peer_ratios():
    results = bench.run(
        ["layer_norm.backward", "moments"], quick=True, peers=("numpy",), cases=SMALL_CASES
    )
    assert [r["op"] for r in results] == [
        "layer_norm.backward",
        "moments.forward",
        "moments.forward",
    ]
    for r in results:
        moved = 4 * np.prod(r["shape"]) * (3 if r["op"].endswith("backward") else 1)
        assert r["gb_per_s"] == pytest.approx(moved / r["seconds"] / 1e9)
        assert r["fraction_of_copy"] == pytest.approx(r["gb_per_s"] / r["copy_gb_per_s"])
        assert set(r["peers"]) == {"numpy"} and r["peers"]["numpy"] > 0


def test_bench_prints_a_row_per_op_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    bench.bench(["rms_norm.*"], quick=True, json_path=path, peers=("numpy",), cases=SMALL_CASES[:2])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == [
        "rms_norm.forward",
        "rms_norm.forward_out",
        "rms_norm.backward",
        "rms_norm.backward_out",
    ]
    saved = json.loads(path.read_text())
    assert saved["machine"]["threads"] >= 1
    assert [r["op"] for r in saved["results"]] == [line.split()[0] for line in lines[2:]]


def test_eval_runs_for_the_norms_with_running_statistics_alone():
    results = bench.run(["*.eval*"], quick=True, peers=(), cases=SMALL_CASES)
    assert {(r["op"], r["layout"]) for r in results} == {
        (f"{norm}.{direction}", layout)
        for norm, layout in [
            ("batch_norm", "NCHW"),
            ("batch_norm", "2-D"),
            ("batch_norm", "NHWC"),
            ("instance_norm", "NCHW"),
            ("instance_norm", "NHWC"),
        ]
        for direction in ("eval", "eval_out")
    }
    table = bench.markdown_table(results)
    assert table.splitlines()[0] == "| op | shape | eval, out= | eval |"


def test_bench_command_rejects_an_unknown_op(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--ops", "no_such_norm"])
    error = capsys.readouterr().err
    assert "no benchmark matches no_such_norm" in error
    for name in ("layer_norm", "batch_norm", "moments", "forward_out", "backward"):
        assert name in error
