"""``out=`` overlapping an input gives the result of separate arrays, as NumPy's ufuncs do.

Exact aliasing (``out`` is an input: the same elements) stays in place,
without a copy; outputs that overlap each other are refused.
"""

import math
import tracemalloc

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import _overlap
from numbanorm._kernels import SERIAL_MAX_ELEMENTS

# Both sides of the serial/parallel threshold: the kernels differ in order.
SHAPES = {"small": (6, 4, 10), "large": (40, 16, 64)}
assert math.prod(SHAPES["small"]) <= SERIAL_MAX_ELEMENTS < math.prod(SHAPES["large"])


def _channel_forward(function, **options):
    def call(a, out):
        return function(
            a["x"], a["running_mean"], a["running_var"], a["weight"], a["bias"], out=out, **options
        )

    return call


def _channel_arrays(rng, shape):
    C = shape[1]
    return dict(
        x=rng.standard_normal(shape),
        weight=1 + rng.standard_normal(C),
        bias=rng.standard_normal(C),
        running_mean=rng.standard_normal(C),
        running_var=1 + rng.random(C),
    )


def _row_arrays(rng, shape, *names):
    arrays = dict(
        x=rng.standard_normal(shape),
        weight=1 + rng.standard_normal(shape[-1]),
        bias=rng.standard_normal(shape[-1]),
    )
    return {name: arrays[name] for name in names}


FORWARD = {
    "batch_norm": (_channel_arrays, _channel_forward(nbn.batch_norm)),
    "batch_norm eval": (_channel_arrays, _channel_forward(nbn.batch_norm, training=False)),
    "instance_norm": (_channel_arrays, _channel_forward(nbn.instance_norm)),
    "instance_norm eval": (
        _channel_arrays,
        _channel_forward(nbn.instance_norm, use_input_stats=False),
    ),
    "group_norm": (
        lambda rng, shape: _channel_arrays(rng, shape),
        lambda a, out: nbn.group_norm(a["x"], 2, a["weight"], a["bias"], out=out),
    ),
    "layer_norm": (
        lambda rng, shape: _row_arrays(rng, shape, "x", "weight", "bias"),
        lambda a, out: nbn.layer_norm(a["x"], a["weight"], a["bias"], out=out),
    ),
    "layer_norm axes (1, 2)": (
        lambda rng, shape: dict(
            x=rng.standard_normal(shape), weight=1 + rng.standard_normal(shape[1:])
        ),
        lambda a, out: nbn.layer_norm(a["x"], a["weight"], axis=(1, 2), out=out),
    ),
    "rms_norm": (
        lambda rng, shape: _row_arrays(rng, shape, "x", "weight"),
        lambda a, out: nbn.rms_norm(a["x"], a["weight"], out=out),
    ),
}
# In training the running statistics are outputs, updated in place.
RUNNING_OUTPUTS = {"batch_norm", "instance_norm"}

BACKWARD = {
    "batch_norm": (
        lambda x, w: nbn.batch_norm_forward(x, weight=w),
        lambda a, out: nbn.batch_norm_backward(
            a["dy"], a["x"], a["mean"], a["rstd"], a["weight"], out=out
        ),
    ),
    "batch_norm eval": (
        lambda x, w: nbn.batch_norm_forward(
            x, np.zeros(x.shape[1]), np.ones(x.shape[1]), weight=w, training=False
        ),
        lambda a, out: nbn.batch_norm_backward(
            a["dy"], a["x"], a["mean"], a["rstd"], a["weight"], training=False, out=out
        ),
    ),
    "instance_norm": (
        lambda x, w: nbn.instance_norm_forward(x, weight=w),
        lambda a, out: nbn.instance_norm_backward(
            a["dy"], a["x"], a["mean"], a["rstd"], a["weight"], out=out
        ),
    ),
    "group_norm": (
        lambda x, w: nbn.group_norm_forward(x, 2, w),
        lambda a, out: nbn.group_norm_backward(
            a["dy"], a["x"], 2, a["mean"], a["rstd"], a["weight"], out=out
        ),
    ),
    "layer_norm": (
        nbn.layer_norm_forward,
        lambda a, out: nbn.layer_norm_backward(
            a["dy"], a["x"], a["mean"], a["rstd"], a["weight"], out=out
        ),
    ),
    "rms_norm": (
        lambda x, w: (lambda y, rrms: (y, None, rrms))(*nbn.rms_norm_forward(x, w)),
        lambda a, out: nbn.rms_norm_backward(a["dy"], a["x"], a["rstd"], a["weight"], out=out),
    ),
}


def _backward_arrays(rng, name, shape):
    forward = BACKWARD[name][0]
    x = rng.standard_normal(shape)
    weight = 1 + rng.standard_normal(max(shape[1], shape[-1]))
    weight = weight[: shape[-1]] if name in ("layer_norm", "rms_norm") else weight[: shape[1]]
    _, mean, rstd = forward(x, weight)
    arrays = dict(dy=rng.standard_normal(shape), x=x, mean=mean, rstd=rstd, weight=weight)
    return {k: v for k, v in arrays.items() if v is not None}


def _overlapping(arrays, name, out_shape, out_first):
    """``arrays`` with ``arrays[name]`` moved into one buffer with a new ``out``.

    The two partially overlap: ``out`` starts inside the argument, or the
    argument starts inside ``out`` (where it is smaller, it lies inside).
    """
    value = arrays[name]
    size, out_size = value.size, math.prod(out_shape)
    at, out_at = (out_size // 2, 0) if out_first else (0, max(size // 2, 1))
    buffer = np.full(max(at + size, out_at + out_size), np.nan)
    moved = buffer[at : at + size].reshape(value.shape)
    moved[...] = value
    out = buffer[out_at : out_at + out_size].reshape(out_shape)
    assert np.shares_memory(moved, out)
    return dict(arrays, **{name: moved}), out


def _copies(arrays):
    return {name: np.array(value, copy=True) for name, value in arrays.items()}


def _forward_cases():
    for norm, (arrays, _) in FORWARD.items():
        names = arrays(np.random.default_rng(0), SHAPES["small"])
        for name in names:
            if norm in RUNNING_OUTPUTS and name.startswith("running"):
                continue  # outputs overlapping outputs: test_overlapping_outputs_are_refused
            yield norm, name


@pytest.mark.parametrize("out_first", [False, True], ids=["out after", "out before"])
@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("norm, argument", list(_forward_cases()))
def test_forward_out_overlapping_an_input(rng, norm, argument, size, out_first):
    make, call = FORWARD[norm]
    arrays = make(rng, SHAPES[size])
    expected_arrays = _copies(arrays)
    expected = call(expected_arrays, None)
    moved, out = _overlapping(arrays, argument, SHAPES[size], out_first)
    assert call(moved, out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var"):
        if name in moved and name != argument:
            np.testing.assert_allclose(moved[name], expected_arrays[name], rtol=1e-12)


@pytest.mark.parametrize("out_first", [False, True], ids=["out after", "out before"])
@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("argument", ["dy", "x", "mean", "rstd", "weight"])
@pytest.mark.parametrize("norm", BACKWARD)
def test_backward_out_overlapping_an_input(rng, norm, argument, size, out_first):
    arrays = _backward_arrays(rng, norm, SHAPES[size])
    if argument not in arrays:
        pytest.skip(f"{norm}_backward has no {argument}")
    call = BACKWARD[norm][1]
    expected = call(_copies(arrays), None)
    moved, out = _overlapping(arrays, argument, SHAPES[size], out_first)
    actual = call(moved, out)
    assert actual[0] is out
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def _assert_no_copy(peak, x, size):
    # Python's own allocations hide a copy of a small input: look at large ones.
    if size == "large":
        assert peak < x.nbytes // 4, f"{peak} bytes allocated for an input of {x.nbytes}"


def _peak_bytes(call):
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("same_object", [True, False], ids=["out is x", "view of x"])
@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("norm", FORWARD)
def test_forward_in_place_is_in_place(rng, norm, size, same_object):
    make, call = FORWARD[norm]
    arrays = make(rng, SHAPES[size])
    expected = call(_copies(arrays), None)
    x = arrays["x"]
    out = x if same_object else x[...]
    y, peak = _peak_bytes(lambda: call(arrays, out))
    assert y is out and np.shares_memory(y, x)
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)
    _assert_no_copy(peak, x, size)


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("argument", ["dy", "x"])
@pytest.mark.parametrize("norm", BACKWARD)
def test_backward_in_place_is_in_place(rng, norm, argument, size):
    arrays = _backward_arrays(rng, norm, SHAPES[size])
    call = BACKWARD[norm][1]
    expected = call(_copies(arrays), None)
    target = arrays[argument]
    actual, peak = _peak_bytes(lambda: call(arrays, target))
    assert actual[0] is target
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    _assert_no_copy(peak, target, size)


def _shifted_pair(size, shift):
    buffer = np.arange(size + shift, dtype=np.float64)
    return buffer[:size], buffer[shift:]


OUTPUT_PAIRS = {
    "running_mean and running_var": lambda x, C: (None, *_shifted_pair(C, C // 2)),
    "the same running array": lambda x, C: (None, *(2 * [np.ones(C)])),
    "out and running_mean": lambda x, C: (
        lambda b: (b[: x.size].reshape(x.shape), b[-C:], np.ones(C))
    )(np.ones(x.size + C - 1)),
    "out and running_var": lambda x, C: (
        lambda b: (b[C - 1 :].reshape(x.shape), np.zeros(C), b[:C])
    )(np.ones(x.size + C - 1)),
}


@pytest.mark.parametrize(
    "function",
    [nbn.batch_norm, nbn.instance_norm, nbn.batch_norm_forward, nbn.instance_norm_forward],
)
@pytest.mark.parametrize("case", OUTPUT_PAIRS)
def test_overlapping_outputs_are_refused(rng, case, function):
    x = rng.standard_normal(SHAPES["small"])
    out, running_mean, running_var = OUTPUT_PAIRS[case](x, x.shape[1])
    if out is not None and function.__name__.endswith("_forward"):
        pytest.skip("no out")
    kwargs = {} if out is None else dict(out=out)
    before = [a.copy() for a in (running_mean, running_var)]
    first, second = case.replace("the same running array", "running_mean and running_var").split(
        " and "
    )
    with pytest.raises(ValueError, match=f"(?s)(?=.*{first})(?=.*{second})"):
        function(x, running_mean, running_var, **kwargs)
    for a, b in zip((running_mean, running_var), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", SHAPES)
def test_running_statistics_overlapping_x_are_updated_from_the_batch(rng, size):
    """Running statistics inside ``x``: updated from the batch as it was."""
    x = rng.standard_normal(SHAPES[size])
    C = x.shape[1]
    running_mean, running_var = x[0, 0, :C], 1 + x[1, 0, :C] ** 2
    expected_mean, expected_var = running_mean.copy(), running_var.copy()
    expected = nbn.batch_norm(x.copy(), expected_mean, expected_var)
    y = nbn.batch_norm(x, running_mean, running_var)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-12)


class _DeviceArray:
    """Only a CUDA array interface, as a GPU library's array shows it."""

    def __init__(self, pointer, shape, strides=None, typestr="<f4"):
        self.__cuda_array_interface__ = dict(
            data=(pointer, False), shape=shape, strides=strides, typestr=typestr, version=3
        )


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (_DeviceArray(0x1000, (4, 8)), _DeviceArray(0x1000 + 128, (4, 8)), None),
        (_DeviceArray(0x1000, (4, 8)), _DeviceArray(0x1000 + 124, (4, 8)), "partial"),
        (_DeviceArray(0x1000, (4, 8)), _DeviceArray(0x1000, (4, 8), (32, 4)), "same"),
        (_DeviceArray(0x1000, (4, 8)), _DeviceArray(0x1000, (8, 4)), "partial"),
        (_DeviceArray(0x1000, (4, 8)), _DeviceArray(0x1000, (4, 8), typestr="<i4"), "partial"),
        (_DeviceArray(0x1000, (4, 8), (4, 16)), _DeviceArray(0x1000 + 124, (2,)), "partial"),
        (_DeviceArray(0x1000 + 12, (4,), (-4,)), _DeviceArray(0x1000 - 4, (1,)), None),
        (_DeviceArray(0x1000 + 12, (4,), (-4,)), _DeviceArray(0x1000, (1,)), "partial"),
        (_DeviceArray(0x1000, (0, 8)), _DeviceArray(0x1000, (4, 8)), None),
        (_DeviceArray(0x1000, (4, 8)), np.ones(3), None),
    ],
    ids=[
        "disjoint",
        "one element",
        "same",
        "reshaped",
        "other dtype",
        "strided",
        "negative stride",
        "negative stride, shared",
        "empty",
        "host and device",
    ],
)
def test_device_arrays_overlap_by_their_bounds(a, b, expected):
    assert _overlap.overlap(a, b) == expected
    assert _overlap.overlap(b, a) == expected
