"""The public API on device arrays, checked against the CPU backend.

Shapes are tiny: under the simulator every GPU thread is a Python thread.
They are chosen so that both kernel regimes (a block per group, and column
tiles merged per group) run; ``test_both_regimes_are_covered`` checks that.
"""

import math

import numpy as np
import pytest
from numba import cuda

import numbanorm
from numbanorm import _cuda
from numbanorm._cuda_shared import BLOCK_THREADS, SIMULATED

from helpers import norm_functions

TOLERANCE = {
    np.dtype(np.float16): dict(rtol=2e-3, atol=2e-3),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
}


def device(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    assert not isinstance(a, np.ndarray), "a device call returned a host array"
    return a.copy_to_host()


def assert_matches(got, expected, dtype, scale=1.0):
    """A device result equals the CPU backend's, in shape, dtype and value."""
    got = host(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    tol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(
        got.astype(np.float64),
        expected.astype(np.float64),
        rtol=tol["rtol"] * scale,
        atol=tol["atol"] * scale,
    )


# (name, shape, call kwargs, function pairs)
CHANNEL_CASES = [
    ("batch_norm NCHW", (2, 3, 4, 5), dict(axis=1)),
    ("batch_norm channels-last", (2, 4, 5, 3), dict(axis=-1)),
    ("batch_norm 2-D", (6, 3), dict(axis=1)),
    ("batch_norm long rows", (1, 2, 12), dict(axis=1)),
]
DTYPES = [np.float64, np.float32, np.float16]


def _data(rng, shape, dtype, offset=0.0):
    return (rng.standard_normal(shape) * 2 + 0.5 + offset).astype(dtype)


def _check_forward_backward(rng, forward, backward, x, param_shape, dtype, centered=True, **kwargs):
    weight = rng.standard_normal(param_shape).astype(dtype)
    params = {"weight": weight}
    if centered:
        params["bias"] = rng.standard_normal(param_shape).astype(dtype)
    expected = forward(x, **params, **kwargs)
    got = forward(device(x), **{name: device(p) for name, p in params.items()}, **kwargs)
    for g, e in zip(got, expected):
        assert_matches(g, e, dtype)
    dy = _data(rng, x.shape, dtype)
    stats = expected[1:]
    expected_grads = backward(dy, x, *stats, weight, **kwargs)
    got_grads = backward(device(dy), device(x), *map(device, stats), device(weight), **kwargs)
    for g, e in zip(got_grads, expected_grads):
        assert_matches(g, e, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,kwargs", CHANNEL_CASES, ids=[c[0] for c in CHANNEL_CASES])
def test_batch_norm(rng, dtype, name, shape, kwargs):
    x = _data(rng, shape, dtype)
    channels = shape[kwargs["axis"]]
    _check_forward_backward(
        rng,
        numbanorm.batch_norm_forward,
        numbanorm.batch_norm_backward,
        x,
        (channels,),
        dtype,
        **kwargs,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [1, -1])
def test_instance_norm(rng, dtype, axis):
    x = _data(rng, (2, 3, 5, 4) if axis == 1 else (2, 5, 4, 3), dtype)
    _check_forward_backward(
        rng,
        numbanorm.instance_norm_forward,
        numbanorm.instance_norm_backward,
        x,
        (3,),
        dtype,
        axis=axis,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((2, 4, 3, 2), 1), ((2, 3, 2, 4), -1), ((3, 4), 1)])
def test_group_norm(rng, dtype, shape, axis):
    x = _data(rng, shape, dtype)

    def forward(x, weight, bias, **kw):
        return numbanorm.group_norm_forward(x, 2, weight, bias, **kw)

    def backward(dy, x, mean, rstd, weight, **kw):
        return numbanorm.group_norm_backward(dy, x, 2, mean, rstd, weight, **kw)

    _check_forward_backward(rng, forward, backward, x, (shape[axis],), dtype, axis=axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,axis", [((3, 8), -1), ((2, 3, 4), (1, 2)), ((4, 3, 2), 0), ((3, 2, 5), 1)]
)
def test_layer_norm(rng, dtype, shape, axis):
    x = _data(rng, shape, dtype)
    axes = (axis,) if isinstance(axis, int) else axis
    param_shape = tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    _check_forward_backward(
        rng,
        numbanorm.layer_norm_forward,
        numbanorm.layer_norm_backward,
        x,
        param_shape,
        dtype,
        axis=axis,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((3, 8), -1), ((2, 6, 2), 1)])
def test_rms_norm(rng, dtype, shape, axis):
    x = _data(rng, shape, dtype)
    _check_forward_backward(
        rng,
        numbanorm.rms_norm_forward,
        numbanorm.rms_norm_backward,
        x,
        (shape[axis],),
        dtype,
        centered=False,
        axis=axis,
    )


def test_both_regimes_are_covered():
    regimes = set()
    for shape4 in [(1, 2, 3, 20), (1, 1, 2, 12), (1, 2, 3, 1), (3, 1, 1, 8)]:
        regimes.add(_cuda._rows_regime(shape4))
    assert regimes == {True, False}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels", [3, 3 * BLOCK_THREADS + 1])
def test_running_statistics_update_on_the_device(rng, training, channels):
    """More channels than a block has threads: one block folds them all in."""
    x = _data(rng, (4, channels, 5), np.float32)
    running = [rng.random(channels).astype(np.float32) + 0.5 for _ in range(2)]
    expected_running = [r.copy() for r in running]
    expected = numbanorm.batch_norm_forward(x, *expected_running, training=training, momentum=0.3)
    device_running = [device(r) for r in running]
    got = numbanorm.batch_norm_forward(device(x), *device_running, training=training, momentum=0.3)
    for g, e in zip(got, expected):
        assert_matches(g, e, np.float32)
    for g, e in zip(device_running, expected_running):
        assert_matches(g, e, np.float32)
    dy = _data(rng, x.shape, np.float32)
    expected_grads = numbanorm.batch_norm_backward(dy, x, *expected[1:], training=training)
    got_grads = numbanorm.batch_norm_backward(
        device(dy), device(x), *map(device, expected[1:]), training=training
    )
    for g, e in zip(got_grads, expected_grads):
        assert_matches(g, e, np.float32, scale=10)


def test_update_running_folds_more_channels_than_a_block_has_threads(rng):
    channels = 3 * BLOCK_THREADS + 1
    running = [rng.random(channels) + 0.5 for _ in range(2)]
    mean, var = rng.standard_normal((2, 2, channels))
    var = np.abs(var)
    targets = [device(r) for r in running]
    _cuda.CudaBackend(targets[0]).update_running(*targets, device(mean), device(var), 0.25, 1.5)
    for got, old, new in zip(targets, running, (mean.mean(0), 1.5 * var.mean(0))):
        np.testing.assert_allclose(host(got), 0.75 * old + 0.25 * new, rtol=1e-12)


def test_instance_norm_running_statistics(rng):
    x = _data(rng, (2, 3, 6), np.float64)
    running = [np.zeros(3), np.ones(3)]
    device_running = [device(r) for r in running]
    numbanorm.instance_norm(x, *running)
    numbanorm.instance_norm(device(x), *device_running)
    for g, e in zip(device_running, running):
        assert_matches(g, e, np.float64)


def _out_array(shape, layout):
    """A device result array in C order, or one whose axes run backwards in memory."""
    if layout == "C":
        return cuda.device_array(shape, np.float32)
    backwards = cuda.device_array(shape[::-1], np.float32)
    return _cuda._permuted(backwards, tuple(range(len(shape)))[::-1])


@pytest.mark.parametrize("layout", ["C", "reversed axes"])
def test_out_receives_the_result(rng, layout):
    x = _data(rng, (3, 2, 6), np.float32)
    out = _out_array(x.shape, layout)
    result = numbanorm.layer_norm(device(x), out=out, axis=(1, 2))
    assert result is out
    assert_matches(out, numbanorm.layer_norm(x, axis=(1, 2)), np.float32)
    dy = _data(rng, x.shape, np.float32)
    _, mean, rstd = numbanorm.layer_norm_forward(x, axis=(1, 2))
    dx_out = _out_array(x.shape, layout)
    dx, _, _ = numbanorm.layer_norm_backward(
        device(dy), device(x), device(mean), device(rstd), axis=(1, 2), out=dx_out
    )
    assert dx is dx_out
    assert_matches(
        dx_out, numbanorm.layer_norm_backward(dy, x, mean, rstd, axis=(1, 2))[0], np.float32
    )


def test_out_in_another_layout_and_in_place(rng):
    x = _data(rng, (4, 3), np.float64)
    expected = numbanorm.batch_norm(x)
    # A Fortran-ordered result array for a C-ordered input: written through a copy.
    out = _cuda._permuted(cuda.to_device(np.zeros((3, 4))), (1, 0))
    assert numbanorm.batch_norm(device(x), out=out) is out
    assert_matches(out, expected, np.float64)
    in_place = device(x)
    numbanorm.batch_norm(in_place, out=in_place)
    assert_matches(in_place, expected, np.float64)


def test_strided_and_transposed_inputs_are_copied_on_the_device(rng):
    base = _data(rng, (4, 6, 5), np.float32)
    x = device(base)[:, ::2, 1:]
    expected = numbanorm.layer_norm_forward(base[:, ::2, 1:], axis=0)
    got = numbanorm.layer_norm_forward(x, axis=0)
    for g, e in zip(got, expected):
        assert_matches(g, e, np.float32)


@pytest.mark.parametrize(
    "axis,keepdims", [(None, False), (None, True), ((0, 2), False), (1, True), ((), False)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_moments(rng, axis, keepdims, dtype):
    x = (rng.standard_normal((3, 4, 2)) * 3 + 1).astype(dtype)
    expected = numbanorm.moments(x, axis=axis, ddof=1, keepdims=keepdims)
    got = numbanorm.moments(device(x), axis=axis, ddof=1, keepdims=keepdims)
    for g, e in zip(got, expected):
        assert_matches(g, e, np.float64 if dtype == np.int32 else dtype)


def test_full_reduction_gives_zero_dimensional_device_arrays(rng):
    x = _data(rng, (5, 4), np.float32)
    mean, var = numbanorm.moments(device(x))
    assert mean.shape == () and var.shape == ()
    np.testing.assert_allclose(host(mean), x.mean(dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(host(var), x.var(dtype=np.float64), rtol=1e-5)


def test_empty_reduction_warns_and_gives_nan():
    x = cuda.to_device(np.zeros((0, 3)))
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        mean, var = numbanorm.moments(x, axis=0)
    assert np.isnan(host(mean)).all() and np.isnan(host(var)).all()


@pytest.mark.parametrize("shape, axis", [((5, 600), -1), ((600, 3), 0), ((2, 3, 300), (0, 2))])
def test_large_offset_keeps_its_variance(rng, shape, axis):
    """float32 data of mean 1e4 and deviation 1: the variance to 1e-6, as on the CPU."""
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    exact = x.astype(np.float64).var(axis=axis)
    mean, var = numbanorm.moments(device(x), axis=axis)
    np.testing.assert_allclose(host(var), exact, rtol=1e-6)
    np.testing.assert_allclose(host(mean), x.astype(np.float64).mean(axis=axis), rtol=1e-7)
    naive = (x * x).mean(axis=axis) - x.mean(axis=axis) ** 2
    assert np.abs(naive - exact).max() > 1e-2 * exact.max()


def test_nan_stays_in_its_group(rng):
    x = _data(rng, (3, 8), np.float32)
    x[1, 3] = np.nan
    y = host(numbanorm.layer_norm(device(x)))
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()


def test_results_are_bit_identical_between_runs(rng):
    x = device(_data(rng, (2, 3, 4, 5), np.float32))
    dy = device(_data(rng, (2, 3, 4, 5), np.float32))
    runs = []
    for _ in range(2):
        y, mean, rstd = numbanorm.batch_norm_forward(x)
        grads = numbanorm.batch_norm_backward(dy, x, mean, rstd)
        runs.append([host(a) for a in (y, mean, rstd, *grads)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_float16_keeps_its_dtype_and_gives_float32_statistics(rng):
    x = _data(rng, (3, 8), np.float16)
    y, mean, rstd = numbanorm.layer_norm_forward(device(x))
    assert y.dtype == np.float16
    assert mean.dtype == rstd.dtype == np.float32


def test_mixing_host_and_device_arrays_is_a_type_error(rng):
    x = _data(rng, (3, 4), np.float32)
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.layer_norm(device(x), weight=np.ones(4, np.float32))
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.layer_norm(x, weight=device(np.ones(4, np.float32)))
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.batch_norm(device(x), out=np.empty_like(x))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: numbanorm.layer_norm(x, weight=x[0, :2]),
        lambda x: numbanorm.batch_norm(x, axis=3),
        lambda x: numbanorm.group_norm(x, 3),
        lambda x: numbanorm.batch_norm(x, training=False),
        lambda x: numbanorm.batch_norm(x, eps=-1.0),
    ],
    ids=["weight shape", "axis", "groups", "no running stats", "eps"],
)
def test_errors_match_the_cpu_backend(rng, call):
    x = _data(rng, (3, 4), np.float32)
    with pytest.raises(Exception) as on_host:
        call(x)
    with pytest.raises(type(on_host.value)) as on_device:
        call(device(x))
    assert str(on_device.value) == str(on_host.value)


def test_cuda_available():
    assert numbanorm.cuda_available()


def test_block_reduction_merges_like_numpy(rng):
    """The block merge (shuffles on a GPU, shared memory in the simulator) on a ragged group."""
    x = _data(rng, (1, 1, 1, 3 * BLOCK_THREADS + 5), np.float64)
    mean, var = numbanorm.moments(device(x), axis=3)
    np.testing.assert_allclose(host(mean), x.mean(axis=3), rtol=1e-12)
    np.testing.assert_allclose(host(var), x.var(axis=3), rtol=1e-12)
    assert not math.isnan(float(host(var).ravel()[0]))


def _gpu_library(name):
    """CuPy or PyTorch with a usable GPU, else skip (always under the simulator)."""
    if SIMULATED:
        pytest.skip("the CUDA simulator has no CuPy or PyTorch device arrays")
    module = pytest.importorskip(name)
    if name == "torch" and not module.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return module


def test_cupy_arrays_in_cupy_arrays_out(rng):
    cupy = _gpu_library("cupy")
    x = _data(rng, (4, 3, 5), np.float32)
    running = cupy.zeros(3, cupy.float32), cupy.ones(3, cupy.float32)
    y, mean, rstd = numbanorm.batch_norm_forward(cupy.asarray(x), *running)
    assert all(isinstance(a, cupy.ndarray) for a in (y, mean, rstd))
    expected_running = np.zeros(3, np.float32), np.ones(3, np.float32)
    expected = numbanorm.batch_norm_forward(x, *expected_running)
    for got, want in zip((y, mean, rstd, *running), (*expected, *expected_running)):
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-5, atol=1e-5)
    out = cupy.empty_like(y)
    assert numbanorm.batch_norm(cupy.asarray(x), out=out) is out


def test_torch_cuda_tensors_in_torch_tensors_out(rng):
    torch = _gpu_library("torch")
    x = _data(rng, (4, 8), np.float32)
    weight = torch.ones(8, device="cuda", requires_grad=True)
    y, mean, rstd = numbanorm.layer_norm_forward(torch.from_numpy(x).cuda(), weight)
    assert all(isinstance(a, torch.Tensor) and a.is_cuda for a in (y, mean, rstd))
    expected = numbanorm.layer_norm_forward(x, np.ones(8, np.float32))
    for got, want in zip((y, mean, rstd), expected):
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_random_layouts_match_the_cpu_backend(seed):
    """Random shapes, axes and memory orders (permuted, sliced) through every norm."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(2, 5))
    shape = tuple(int(n) for n in rng.integers(1, 5, ndim))
    order = tuple(int(a) for a in rng.permutation(ndim))
    base = _data(rng, tuple(shape[a] for a in order), np.float64)
    x = np.transpose(base, np.argsort(order))
    device_x = _cuda._permuted(device(base), tuple(int(a) for a in np.argsort(order)))
    axis = int(rng.integers(-ndim, ndim))
    dy = _data(rng, shape, np.float64)
    calls = [
        (numbanorm.layer_norm_forward, numbanorm.layer_norm_backward, dict(axis=axis)),
        (numbanorm.rms_norm_forward, numbanorm.rms_norm_backward, dict(axis=axis)),
    ]
    if x.size // shape[axis] > 1:
        calls.append((numbanorm.batch_norm_forward, numbanorm.batch_norm_backward, dict(axis=axis)))
    for forward, backward, kwargs in calls:
        expected = forward(x, **kwargs)
        got = forward(device_x, **kwargs)
        for g, e in zip(got, expected):
            assert_matches(g, e, np.float64)
        expected_grads = backward(dy, x, *expected[1:], **kwargs)
        got_grads = backward(device(dy), device_x, *got[1:], **kwargs)
        for g, e in zip(got_grads, expected_grads):
            assert_matches(g, e, np.float64, scale=10)
    mean, var = numbanorm.moments(device_x, axis=axis, keepdims=True)
    np.testing.assert_allclose(host(mean), x.mean(axis=axis, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(host(var), x.var(axis=axis, keepdims=True), rtol=1e-12, atol=1e-12)


def test_moments_accumulator_updates_from_device_batches(rng):
    data = _data(rng, (6, 3, 4), np.float32, offset=1e3)
    accumulator = numbanorm.Moments()
    for batch in np.split(data, 3):
        accumulator.update(device(batch), axis=(0, 2))
    np.testing.assert_allclose(
        accumulator.mean, data.astype(np.float64).mean(axis=(0, 2)), rtol=1e-6
    )
    np.testing.assert_allclose(
        accumulator.var(ddof=1), data.astype(np.float64).var(axis=(0, 2), ddof=1), rtol=1e-5
    )
    assert accumulator.count == 6 * 4


# (norm, shape, axis, groups, whether the rows regime runs under the simulator)
IN_PLACE_CASES = [
    ("layer_norm", (3, 8), -1, None, True),
    ("layer_norm", (5, 3), -1, None, True),
    ("rms_norm", (3, 8), -1, None, True),
    ("rms_norm", (5, 3), -1, None, True),
    ("group_norm", (2, 4, 6), 1, 2, True),
    ("group_norm", (2, 4), 1, 2, True),
    ("group_norm", (1, 10, 4), -1, 2, False),
    ("instance_norm", (2, 3, 8), 1, None, True),
    ("instance_norm", (1, 20, 3), -1, None, False),
    ("batch_norm", (1, 2, 12), 1, None, True),
    ("batch_norm", (4, 3, 8), 1, None, False),
    # Enough rows for the unrolled loops of the column tiles, and for those
    # of the rows regime's parameter sums over many samples.
    ("batch_norm", (64, 3), 1, None, False),
    ("layer_norm", (40, 3), -1, None, True),
]


@pytest.mark.parametrize("target", ["dy", "x"])
@pytest.mark.parametrize("norm, shape, axis, groups, rows", IN_PLACE_CASES)
def test_in_place_backward_matches_the_cpu(rng, regimes, norm, shape, axis, groups, rows, target):
    """``out=dy`` or ``out=x``: ``dx`` overwrites an input the parameter gradients read."""
    x = _data(rng, shape, np.float32)
    dy = _data(rng, shape, np.float32)
    weight = rng.standard_normal(shape[axis]).astype(np.float32)
    forward, backward, extra, params = norm_functions(norm, groups, weight)
    stats = forward(x, *extra, *params, axis=axis)[1:]
    expected = backward(dy, x, *extra, *stats, weight, axis=axis)
    inputs = {"dy": device(dy), "x": device(x)}
    got = backward(
        inputs["dy"],
        inputs["x"],
        *extra,
        *map(device, stats),
        device(weight),
        axis=axis,
        out=inputs[target],
    )
    assert got[0] is inputs[target]
    assert regimes and regimes[-1] == rows
    for g, e in zip(got, expected):
        assert_matches(g, e, np.float32, scale=10)


# A CUDA device's launch limits: blocks per grid in x, y and z, threads per block.
MAX_GRID = (2**31 - 1, 65_535, 65_535)
MAX_THREADS_PER_BLOCK = 1_024


@pytest.mark.parametrize(
    "slices, rows, K",
    [(200_000, 1, 16), (70_000, 3, 40), (1, 10**7, 3), (100, 5_000, 100_000)],
)
def test_column_launches_stay_within_the_hardware_limits(slices, rows, K):
    """More than 65,535 slices of short rows, as layer norm over a short last axis has."""
    _, chunks = _cuda._chunks(slices, rows, K)
    grid, block = _cuda._column_grid(slices, K, chunks)
    grid = tuple(grid) + (1,) * (3 - len(grid))
    assert all(1 <= g <= limit for g, limit in zip(grid, MAX_GRID)), grid
    assert math.prod(block) <= MAX_THREADS_PER_BLOCK
    tiles = -(-K // _cuda.TILE_COLUMNS)
    assert grid[0] == tiles * slices and grid[1] == chunks


def _relative_error(got, exact):
    return np.abs(np.asarray(got, np.float64) - exact).max() / np.abs(exact).max()


# As IN_PLACE_CASES, with groups of at least 3 elements: in a group of two,
# ``y`` is +-1 whatever ``x`` is, and ``dx`` is rounding noise.
OFFSET_CASES = [
    ("layer_norm", (3, 8), -1, None, True),
    ("layer_norm", (6, 3), -1, None, True),
    ("rms_norm", (3, 8), -1, None, True),
    ("rms_norm", (5, 3), -1, None, True),
    ("group_norm", (2, 4, 6), 1, 2, True),
    ("group_norm", (2, 3, 4), -1, 2, True),
    ("group_norm", (1, 10, 4), -1, 2, False),
    ("instance_norm", (2, 3, 8), 1, None, True),
    ("instance_norm", (2, 6, 3), -1, None, True),
    ("instance_norm", (1, 20, 3), -1, None, False),
    ("batch_norm", (1, 2, 12), 1, None, True),
    ("batch_norm", (4, 3, 8), 1, None, False),
    # Enough rows for the unrolled loops of the column tiles, and for those
    # of the rows regime's parameter sums over many samples.
    ("batch_norm", (64, 3), 1, None, False),
    ("layer_norm", (40, 3), -1, None, True),
]


@pytest.mark.parametrize("dtype, offset", [(np.float32, 1e4), (np.float16, 0.0)])
@pytest.mark.parametrize("norm, shape, axis, groups, rows", OFFSET_CASES)
def test_results_are_as_accurate_as_the_cpu(
    rng, regimes, norm, shape, axis, groups, rows, dtype, offset
):
    """Statistics, ``y`` and ``dx`` of device arrays at the CPU's accuracy: float32 at
    offset 1e4, and float16, read and written as float16 and computed in float32.

    The reference is the CPU backend in float64 on the same values.
    """
    x = (offset + rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight = (1 + rng.random(shape[axis])).astype(dtype)
    forward, backward, extra, params = norm_functions(norm, groups, weight)

    def run(a, to=lambda v: v):
        cast = [to(None if p is None else p.astype(a.dtype)) for p in params]
        # One eps for every dtype: RMS norm's default is the dtype's epsilon.
        y, *stats = forward(to(a), *extra, *cast, axis=axis, eps=1e-5)
        dx = backward(to(dy.astype(a.dtype)), to(a), *extra, *stats, cast[-1], axis=axis)[0]
        return [r if isinstance(r, np.ndarray) else host(r) for r in (y, *stats, dx)]

    exact = run(x.astype(np.float64))
    cpu = run(x)
    gpu = run(x, device)
    assert regimes and set(regimes) == {rows}
    for name, g, c, e in zip(["y", *(["mean"] * (len(exact) - 3)), "rstd", "dx"], gpu, cpu, exact):
        tolerance = 1e-6 if name in ("mean", "rstd") else 4 * _relative_error(c, e) + 1e-6
        assert _relative_error(g, e) <= tolerance, name
