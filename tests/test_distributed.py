"""Synchronized batch norm over MPI against batch norm of the whole batch in one process.

``mpi_worker.py`` runs under ``mpiexec`` with 2 and 3 ranks, each holding an
unequal part of every batch (some none, some one sample); the whole batches
are rebuilt here and normalized in this process by the NumPy reference and
by numbanorm.  Skipped without mpi4py; the multi-rank tests also without an
``mpiexec`` beside the interpreter or on the PATH.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py")
import mpi_worker  # noqa: E402
from mpi4py import MPI  # noqa: E402

import numbanorm as nbn  # noqa: E402
from numbanorm.distributed import (  # noqa: E402
    SyncBatchNorm,
    sync_batch_norm_backward,
    sync_batch_norm_forward,
)

import reference as ref  # noqa: E402
from helpers import OPEN_MPI_ENV, assert_close, mpiexec_path, run_in_own_session  # noqa: E402

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
LAUNCH_TIMEOUT = 300
REDUCED_SCALE = 10.0


# ----------------------------------------------------------------------------
# One process: a communicator of one rank, and what needs no communication.
# These run first and so also compile the kernels the ranks then load.


class CountingComm:
    """``MPI.COMM_SELF`` that counts the collectives called on it."""

    def __init__(self):
        self.calls = []

    def Get_size(self):
        return 1

    def Allgather(self, send, receive):
        self.calls.append("Allgather")
        MPI.COMM_SELF.Allgather(send, receive)

    def Allreduce(self, send, receive):
        self.calls.append("Allreduce")
        MPI.COMM_SELF.Allreduce(send, receive)


@pytest.mark.parametrize(
    "shape, axis, dtype", [((4, 3, 5, 8), 1, np.float32), ((4, 5, 3), -1, np.float64)]
)
def test_one_rank_is_plain_batch_norm(rng, shape, axis, dtype):
    x = (3.0 + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    channels = shape[axis]
    weight, bias = rng.standard_normal(channels), rng.standard_normal(channels)
    running = [np.zeros(channels), np.ones(channels)]
    expected_running = [np.zeros(channels), np.ones(channels)]
    y, mean, rstd = sync_batch_norm_forward(
        x, *running, weight, bias, comm=MPI.COMM_SELF, axis=axis
    )
    expected = nbn.batch_norm_forward(x, *expected_running, weight, bias, axis=axis)
    for actual, truth in zip((y, mean, rstd, *running), (*expected, *expected_running)):
        assert actual.dtype == truth.dtype
        assert_close(actual, truth, dtype)
    grads = sync_batch_norm_backward(dy, x, mean, rstd, weight, comm=MPI.COMM_SELF, axis=axis)
    expected_grads = nbn.batch_norm_backward(dy, x, *expected[1:], weight, axis=axis)
    for actual, truth in zip(grads, expected_grads):
        assert actual.dtype == truth.dtype
        assert_close(actual, truth, dtype, scale=REDUCED_SCALE)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_rank_with_where_is_masked_batch_norm(rng, dtype):
    """Padded sequences; channel 2 has nothing selected, and normalizes to its bias."""
    x = (3.0 + rng.standard_normal((4, 3, 7))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    where = np.arange(7) < np.array([7, 0, 3, 5])[:, None, None]
    where = where & (np.arange(3) < 2)[:, None]
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    y, mean, rstd = sync_batch_norm_forward(
        x, None, None, weight, bias, comm=MPI.COMM_SELF, where=where
    )
    expected = nbn.batch_norm_forward(x, None, None, weight, bias, where=where)
    for actual, truth in zip((y, mean, rstd), expected):
        assert actual.dtype == truth.dtype
        assert_close(actual, truth, dtype)
    np.testing.assert_array_equal(y[:, 2], np.broadcast_to(bias[2], (4, 7)).astype(dtype))
    grads = sync_batch_norm_backward(dy, x, mean, rstd, weight, comm=MPI.COMM_SELF, where=where)
    expected_grads = nbn.batch_norm_backward(dy, x, *expected[1:], weight, where=where)
    for actual, truth in zip(grads, expected_grads):
        assert np.isfinite(actual).all()
        assert_close(actual, truth, dtype, scale=REDUCED_SCALE)
    np.testing.assert_array_equal(grads[0][:, 2], 0)


def test_training_with_fewer_than_two_selected_raises_and_changes_nothing(rng):
    x = rng.standard_normal((4, 3, 5))
    where = np.zeros((4, 1, 5), bool)
    where[2, 0, 3] = True
    running_mean, running_var = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="more than 1 value per channel.*got 1 selected"):
        sync_batch_norm_forward(x, running_mean, running_var, comm=MPI.COMM_SELF, where=where)
    np.testing.assert_array_equal(running_mean, 0)
    np.testing.assert_array_equal(running_var, 1)
    layer = SyncBatchNorm(3, comm=MPI.COMM_SELF, dtype=np.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(x, where)
    assert layer.num_batches_tracked == 0


def test_where_is_checked(rng):
    x = rng.standard_normal((4, 3, 5))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        sync_batch_norm_forward(x, comm=MPI.COMM_SELF, where=np.ones((4, 1, 5)))
    with pytest.raises(ValueError, match=r"where of shape \(4, 2, 5\).*\(4, 3, 5\)"):
        sync_batch_norm_forward(x, comm=MPI.COMM_SELF, where=np.ones((4, 2, 5), bool))
    with pytest.raises(ValueError, match=r"where of shape \(3,\).*\(4, 3, 5\)"):
        sync_batch_norm_backward(
            x, x, np.zeros(3), np.ones(3), comm=MPI.COMM_SELF, where=np.ones(3, bool)
        )


def test_evaluation_communicates_nothing(rng):
    x = rng.standard_normal((4, 3, 5))
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    comm = CountingComm()
    y, mean, rstd = sync_batch_norm_forward(x, running_mean, running_var, comm=comm, training=False)
    assert comm.calls == []
    expected = nbn.batch_norm_forward(x, running_mean, running_var, training=False)
    for actual, truth in zip((y, mean, rstd), expected):
        np.testing.assert_array_equal(actual, truth)


@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (0, 3, 4)])
def test_training_needs_more_than_one_value_per_channel_over_all_ranks(shape):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync_batch_norm_forward(np.ones(shape), comm=MPI.COMM_SELF)


def test_arguments_are_checked_as_in_batch_norm(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="weight must have shape"):
        sync_batch_norm_forward(x, weight=np.ones(4), comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        sync_batch_norm_forward(x, np.zeros(3), comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="dy must have shape"):
        sync_batch_norm_backward(np.ones((4, 4)), x, np.zeros(3), np.ones(3), comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="rstd must have shape"):
        sync_batch_norm_backward(x, x, np.zeros(3), np.ones(2), comm=MPI.COMM_SELF)


class DeviceArray:
    """Stands for a GPU array: what numbanorm recognizes one by."""

    __cuda_array_interface__ = {}


def test_host_and_device_arrays_do_not_mix():
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        sync_batch_norm_forward(x, weight=DeviceArray(), comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        sync_batch_norm_backward(x, x, np.zeros(3), np.ones(3), DeviceArray(), comm=MPI.COMM_SELF)


def test_layer_synchronizes_in_training_mode_only(rng):
    comm = CountingComm()
    layer = SyncBatchNorm(3, comm=comm, dtype=np.float64)
    x = rng.standard_normal((4, 3, 5))
    layer(x)
    layer.eval()
    layer.backward(np.ones_like(x))  # the backward of a training forward
    assert comm.calls == ["Allgather", "Allreduce"]
    layer(x)
    layer.backward(np.ones_like(x))
    assert comm.calls == ["Allgather", "Allreduce"]


def test_importing_numbanorm_imports_no_optional_dependency():
    code = (
        "import sys, numbanorm, numbanorm.distributed; "
        "print(sorted({'mpi4py', 'dask', 'distributed'} & set(sys.modules)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


# ----------------------------------------------------------------------------
# Several ranks under mpiexec


@pytest.fixture(
    scope="module",
    params=[(2, False), (3, False), (3, True)],
    ids=["2ranks", "3ranks", "3ranks-device"],
)
def ranks(request, tmp_path_factory):
    """``(number of ranks, [each rank's saved results])`` of one mpiexec launch.

    The device launch runs the functional cases on device arrays, under the
    CUDA simulator.
    """
    mpiexec = mpiexec_path()
    if mpiexec is None:
        pytest.skip("no mpiexec beside the Python interpreter or on the PATH")
    n_ranks, device = request.param
    out_dir = tmp_path_factory.mktemp(f"ranks{n_ranks}")
    env = {**os.environ, **OPEN_MPI_ENV, **({"NUMBA_ENABLE_CUDASIM": "1"} if device else {})}
    run_in_own_session(
        [
            mpiexec,
            "-n",
            str(n_ranks),
            sys.executable,
            str(WORKER),
            str(out_dir),
            *(["device"] if device else []),
        ],
        env=env,
        timeout=LAUNCH_TIMEOUT,
        what=f"mpiexec with {n_ranks} ranks",
        stderr=subprocess.STDOUT,
    )
    results = []
    for rank in range(n_ranks):
        with np.load(out_dir / f"rank{rank}.npz") as saved:
            results.append(dict(saved))
    return n_ranks, results


ALL_CASES = {**mpi_worker.CASES, **mpi_worker.MASKED_CASES}


def _masked_batch_norm(arrays, axis, momentum, eps=1e-5):
    """Forward, backward and running statistics of batch norm with ``where``, float64 NumPy.

    Each channel's statistics are those of the elements ``where`` gathers
    (none: ``mean = rstd = 0``); the gradient through them reaches those
    elements, divided by their number.
    """
    x = np.moveaxis(arrays["x"].astype(np.float64), axis, -1)
    dy = np.moveaxis(arrays["dy"].astype(np.float64), axis, -1)
    where = np.moveaxis(np.broadcast_to(arrays["where"], arrays["x"].shape), axis, -1)
    channels = x.shape[-1]
    weight = arrays.get("weight", np.ones(channels)).astype(np.float64)
    bias = arrays.get("bias", np.zeros(channels)).astype(np.float64)
    mean, rstd, unbiased, count = (np.zeros(channels) for _ in range(4))
    for c in range(channels):
        selected = x[..., c][where[..., c]]
        count[c] = selected.size
        if selected.size:
            mean[c] = selected.mean()
            rstd[c] = 1.0 / np.sqrt(selected.var() + eps)
        if selected.size > 1:
            unbiased[c] = selected.var(ddof=1)
    x_hat = (x - mean) * rstd
    g = dy * weight
    reduced = tuple(range(x.ndim - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        feedback = np.where(
            where, (g.sum(axis=reduced) + x_hat * (g * x_hat).sum(axis=reduced)) / count, 0.0
        )
    expected = dict(
        y=np.moveaxis(x_hat * weight + bias, -1, axis),
        mean=mean,
        rstd=rstd,
        dx=np.moveaxis(rstd * (g - feedback), -1, axis),
        dweight=(dy * x_hat).sum(axis=reduced),
        dbias=dy.sum(axis=reduced),
    )
    if "running_mean" in arrays:
        expected["running_mean"] = (1 - momentum) * arrays["running_mean"] + momentum * mean
        expected["running_var"] = (1 - momentum) * arrays["running_var"] + momentum * unbiased
    return expected


def _whole_batch_reference(name, n_ranks):
    """The case's arrays and its forward and backward on the whole batch, float64 NumPy."""
    arrays = mpi_worker.case_arrays(name, n_ranks)
    if name in mpi_worker.MASKED_CASES:
        return _masked_batch_norm(arrays, ALL_CASES[name]["axis"], mpi_worker.MOMENTUM)
    case = mpi_worker.CASES[name]
    x, weight, bias = arrays["x"], arrays.get("weight"), arrays.get("bias")
    y, mean, rstd = ref.batch_norm_forward(x, None, None, weight, bias, axis=case["axis"])
    dx, dweight, dbias = ref.batch_norm_backward(
        arrays["dy"], x, mean, rstd, weight, axis=case["axis"]
    )
    expected = dict(y=y, mean=mean, rstd=rstd, dx=dx, dweight=dweight, dbias=dbias)
    if case["running"]:
        expected["running_mean"], expected["running_var"] = ref.batch_norm_running_stats(
            x,
            arrays["running_mean"],
            arrays["running_var"],
            momentum=mpi_worker.MOMENTUM,
            axis=case["axis"],
        )
    return expected


def _assert_identical_on_every_rank(results, key):
    for rank, result in enumerate(results[1:], 1):
        np.testing.assert_array_equal(
            result[key], results[0][key], err_msg=f"{key} of rank {rank} differs from rank 0's"
        )


def _check_case(ranks, name, part, shared, scale=1.0):
    """Each rank's part of ``part`` and the ``shared`` results, identical on every rank,
    against the float64 NumPy reference on the whole batch."""
    n_ranks, results = ranks
    case = ALL_CASES[name]
    expected = _whole_batch_reference(name, n_ranks)
    for rank, result in enumerate(results):
        assert_close(
            result[f"{name}.{part}"],
            mpi_worker.rank_part(expected[part], case["sizes"][n_ranks], rank),
            case["dtype"],
            err_msg=f"{part} of rank {rank}",
        )
    for key in shared:
        _assert_identical_on_every_rank(results, f"{name}.{key}")
        assert_close(
            results[0][f"{name}.{key}"], expected[key], case["dtype"], scale=scale, err_msg=key
        )


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_forward_equals_batch_norm_of_the_whole_batch(ranks, name):
    _check_case(ranks, name, "y", ("mean", "rstd"))


@pytest.mark.parametrize("name", [n for n, case in ALL_CASES.items() if case["running"]])
def test_running_statistics_are_the_whole_batch_ones_on_every_rank(ranks, name):
    _check_case(ranks, name, "y", ("running_mean", "running_var"))


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_backward_equals_batch_norm_backward_of_the_whole_batch(ranks, name):
    _check_case(ranks, name, "dx", ("dweight", "dbias"), scale=REDUCED_SCALE)


@pytest.mark.parametrize("masked", [False, True], ids=["all", "masked"])
def test_layer_equals_batch_norm_layer_on_the_whole_batch(ranks, masked):
    """The masked run selects nothing on rank 0, whose gradients then come
    from the statistics of the other ranks' selections."""
    n_ranks, results = ranks
    prefix = "masked_layer" if masked else "layer"
    if f"{prefix}.y0" not in results[0]:
        pytest.skip("the layer holds host arrays: it does not run in the device launch")
    single = nbn.BatchNorm(mpi_worker.LAYER_CHANNELS, momentum=None)
    single.weight[...] = [0.5, 1.0, 2.0]
    single.bias[...] = [0.1, -0.2, 0.3]
    batches = mpi_worker.layer_batches(n_ranks)
    masks = mpi_worker.layer_masks(n_ranks) if masked else [None] * len(batches)
    expected = {}
    for step, ((x, dy), where, sizes) in enumerate(
        zip(batches, masks, mpi_worker.LAYER_SIZES[n_ranks])
    ):
        if step == len(batches) - 1:
            expected.update({f"grad_{name}": grad.copy() for name, grad in single.grads.items()})
            single.eval()
        y = single(x, where)
        dx = single.backward(dy)
        for rank, result in enumerate(results):
            assert_close(
                result[f"{prefix}.y{step}"],
                mpi_worker.rank_part(y, sizes, rank),
                np.float32,
                err_msg=f"y of step {step}, rank {rank}",
            )
            assert_close(
                result[f"{prefix}.dx{step}"],
                mpi_worker.rank_part(dx, sizes, rank),
                np.float32,
                err_msg=f"dx of step {step}, rank {rank}",
            )
    expected.update(single.state_dict())
    for key, value in expected.items():
        _assert_identical_on_every_rank(results, f"{prefix}.{key}")
        assert_close(
            results[0][f"{prefix}.{key}"], value, np.float32, scale=REDUCED_SCALE, err_msg=key
        )
    assert int(results[0][f"{prefix}.num_batches_tracked"]) == 2
