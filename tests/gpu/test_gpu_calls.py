"""What one public call costs on the device: kernel launches, allocations, host waits.

A recorder wraps the kernels' launch configuration, ``cuda.device_array``
(the allocator of Numba arrays, and of the scratch pool), copies to the
host and device synchronization.  Every launch is also checked against
the hardware's limits.
"""

import math

import numpy as np
import pytest
from numba import cuda

import numbanorm
from numbanorm import _cuda, _cuda_elementwise
from numbanorm._cuda_shared import BLOCK_THREADS, MAX_TEAM

from helpers import norm_functions

# A CUDA device's launch limits: blocks per grid in x, y and z, threads per block.
MAX_GRID = (2**31 - 1, 65_535, 65_535)
MAX_THREADS_PER_BLOCK = 1_024


class Recorder:
    def __init__(self):
        self.launches = []
        self.allocations = 0
        self.host_waits = 0

    def clear(self):
        self.__init__()


def _dims(value):
    dims = tuple(value) if isinstance(value, tuple) else (value,)
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


@pytest.fixture
def recorder(monkeypatch):
    record = Recorder()
    kernel_type = type(_cuda_elementwise.strided_copy)
    configure = kernel_type.__getitem__

    def launch(kernel, config):
        grid, block = _dims(config[0]), _dims(config[1])
        record.launches.append((kernel, grid, block))
        return configure(kernel, config)

    def counted(function, field):
        def call(*args, **kwargs):
            setattr(record, field, getattr(record, field) + 1)
            return function(*args, **kwargs)

        return call

    array_type = type(cuda.to_device(np.zeros(1)))
    monkeypatch.setattr(kernel_type, "__getitem__", launch)
    monkeypatch.setattr(cuda, "device_array", counted(cuda.device_array, "allocations"))
    monkeypatch.setattr(cuda, "synchronize", counted(cuda.synchronize, "host_waits"))
    monkeypatch.setattr(array_type, "copy_to_host", counted(array_type.copy_to_host, "host_waits"))
    return record


def device(a):
    return cuda.to_device(np.ascontiguousarray(a))


# (norm, shape, axis, groups, whether the rows regime runs under the simulator,
#  launches of a forward, launches of a backward).
#
# The targets are 1 launch for a row-wise norm's forward, 2 for
# batch norm's and 2 for any backward.  The columns regime (few large
# groups: batch norm, channels-last instance and group norm) takes 2 for a
# forward (the statistics, the elementwise pass), which is batch norm's
# target but one over instance and group norm's.
CASES = [
    ("layer_norm", (3, 8), -1, None, True, 1, 2),
    ("layer_norm", (6, 3), -1, None, True, 1, 2),
    ("rms_norm", (3, 8), -1, None, True, 1, 2),
    ("group_norm", (2, 4, 6), 1, 2, True, 1, 2),
    ("group_norm", (1, 10, 4), -1, 2, False, 2, 2),
    ("instance_norm", (2, 3, 8), 1, None, True, 1, 2),
    ("instance_norm", (1, 20, 3), -1, None, False, 2, 2),
    ("batch_norm", (1, 2, 12), 1, None, True, 1, 2),
    ("batch_norm", (4, 3, 8), 1, None, False, 2, 2),
]


def _check_launches(recorder):
    for kernel, grid, block in recorder.launches:
        assert all(1 <= g <= limit for g, limit in zip(grid, MAX_GRID)), (kernel, grid)
        assert math.prod(block) <= MAX_THREADS_PER_BLOCK, (kernel, block)


@pytest.mark.parametrize("norm, shape, axis, groups, rows, forwards, backwards", CASES)
def test_a_call_launches_little_and_allocates_only_its_results(
    recorder, regimes, norm, shape, axis, groups, rows, forwards, backwards
):
    rng = np.random.default_rng(0)
    x = device(rng.standard_normal(shape).astype(np.float32))
    dy = device(rng.standard_normal(shape).astype(np.float32))
    channels = shape[axis]
    weight = device(np.ones(channels, np.float32))
    bias = device(np.zeros(channels, np.float32))
    forward, backward, extra, params = norm_functions(norm, groups, weight, bias)

    # The first call compiles and grows the scratch pool.
    stats = forward(x, *extra, *params, axis=axis)[1:]
    backward(dy, x, *extra, *stats, weight, axis=axis)

    recorder.clear()
    results = forward(x, *extra, *params, axis=axis)
    assert len(recorder.launches) == forwards
    assert recorder.allocations == len(results)
    assert recorder.host_waits == 0
    _check_launches(recorder)

    recorder.clear()
    gradients = backward(dy, x, *extra, *stats, weight, axis=axis)
    assert len(recorder.launches) == backwards
    assert recorder.allocations == len(gradients)
    assert recorder.host_waits == 0
    _check_launches(recorder)
    assert set(regimes) == {rows}


def test_large_scratch_is_allocated_per_call_and_not_kept(recorder, monkeypatch):
    monkeypatch.setattr(_cuda, "_POOLED_BYTES", 0)
    monkeypatch.setattr(_cuda, "_SCRATCH", {})
    x = np.random.default_rng(0).standard_normal((4, 3, 8)).astype(np.float32)
    expected = numbanorm.batch_norm_forward(x, axis=1)
    got = numbanorm.batch_norm_forward(device(x), axis=1)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.copy_to_host(), e, rtol=1e-5, atol=1e-6)
    assert _cuda._SCRATCH == {}
    assert recorder.allocations > len(got)


def test_rows_launch_the_grid_the_device_holds_with_a_team_per_short_row(recorder):
    """40 rows of 3: one-thread teams, several a block, blocks looping over the rows."""
    x = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float32)
    expected = numbanorm.layer_norm(x)
    recorder.clear()
    got = numbanorm.layer_norm(device(x))
    np.testing.assert_allclose(got.copy_to_host(), expected, rtol=1e-5, atol=1e-6)
    ((_, grid, block),) = recorder.launches
    assert block[0] == BLOCK_THREADS
    assert grid[0] == _cuda._resident_blocks(block[0]) < 40 // BLOCK_THREADS
    assert _cuda._team_launch((40, 1, 1, 3), 3)[2] == 0
    assert _cuda._team_launch((40, 1, 1, 1000), 1000)[2] == MAX_TEAM.bit_length() - 1


class _ForeignArray:
    """A device array of another library: only its CUDA array interface."""

    def __init__(self, stream):
        self.__cuda_array_interface__ = {"stream": stream}


class _Stream:
    def __init__(self, pointer):
        self.handle = pointer


@pytest.mark.parametrize(
    "producer, ours, waits",
    [(None, 5, False), (5, 5, False), (1, 0, False), (2, 0, False), (7, 5, True), (7, 0, True)],
)
def test_foreign_arrays_are_taken_without_a_host_wait(monkeypatch, producer, ours, waits):
    """CuPy and PyTorch arrays name the stream that made them: the call's stream waits for
    it on the device, where it is another one, and the host never waits."""
    events = []

    class Event:
        def __init__(self, timing):
            assert not timing

        def record(self, stream):
            events.append(("record", stream.handle))

        def wait(self, stream):
            events.append(("wait", stream.handle if stream else 0))

    taken = []
    monkeypatch.setattr(
        cuda, "as_cuda_array", lambda a, sync: taken.append(sync) or a, raising=False
    )
    monkeypatch.setattr(cuda, "event", Event, raising=False)
    monkeypatch.setattr(cuda, "external_stream", _Stream, raising=False)
    array = _ForeignArray(producer)
    assert _cuda._kernel_array(array, _Stream(ours) if ours else 0) is array
    assert taken == [False]
    assert events == ([("record", producer), ("wait", ours)] if waits else [])


@pytest.mark.parametrize("norm, shape, axis, groups, rows, forwards, backwards", CASES)
def test_a_masked_call_launches_as_an_unmasked_one(
    recorder, regimes, norm, shape, axis, groups, rows, forwards, backwards
):
    """``where=`` costs no launch, allocation or host wait: the kernels count as they sum."""
    rng = np.random.default_rng(0)
    x = device(rng.standard_normal(shape).astype(np.float32))
    dy = device(rng.standard_normal(shape).astype(np.float32))
    where = device(rng.random(shape) < 0.7)
    weight = device(np.ones(shape[axis], np.float32))
    forward, backward, extra, params = norm_functions(norm, groups, weight, weight)

    stats = forward(x, *extra, *params, axis=axis, where=where)[1:]
    backward(dy, x, *extra, *stats, weight, axis=axis, where=where)

    recorder.clear()
    results = forward(x, *extra, *params, axis=axis, where=where)
    assert (len(recorder.launches), recorder.allocations, recorder.host_waits) == (
        forwards,
        len(results),
        0,
    )
    recorder.clear()
    gradients = backward(dy, x, *extra, *stats, weight, axis=axis, where=where)
    assert (len(recorder.launches), recorder.allocations, recorder.host_waits) == (
        backwards,
        len(gradients),
        0,
    )
    _check_launches(recorder)
    assert set(regimes) == {rows}


def test_a_mask_the_canonical_view_cannot_stride_costs_one_copy(recorder):
    """Layer norm over (1, 2) with a mask broadcast along axis 2: the I block merges a
    broadcast axis with a real one, so the mask is expanded, in pooled scratch."""
    rng = np.random.default_rng(0)
    x = device(rng.standard_normal((2, 3, 4)).astype(np.float32))
    where = device(rng.random((2, 3, 1)) < 0.7)
    numbanorm.layer_norm_forward(x, axis=(1, 2), where=where)
    recorder.clear()
    results = numbanorm.layer_norm_forward(x, axis=(1, 2), where=where)
    assert len(recorder.launches) == 2  # the copy, then the rows kernel
    assert recorder.allocations == len(results)
    assert recorder.host_waits == 0


@pytest.mark.parametrize("shape, rows", [((1, 2, 12), True), ((4, 3, 8), False)])
def test_masked_training_with_running_statistics_waits_for_the_counts(
    recorder, regimes, shape, rows
):
    """The driver checks the selected counts on the host before anything is written, and
    folds the groups with at least two into the running statistics there: three host
    waits (the counts, mean and var), two small uploads and one more launch."""
    rng = np.random.default_rng(0)
    x = device(rng.standard_normal(shape).astype(np.float32))
    where = device(rng.random((shape[0], 1, shape[2])) < 0.7)
    running = [device(np.zeros(shape[1], np.float32)) for _ in range(2)]
    numbanorm.batch_norm_forward(x, *running, where=where)
    recorder.clear()
    results = numbanorm.batch_norm_forward(x, *running, where=where)
    assert len(recorder.launches) == (1 if rows else 2) + 1
    assert recorder.allocations == len(results) + 2
    assert recorder.host_waits == 3
    assert set(regimes) == {rows}
