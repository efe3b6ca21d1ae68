import numpy as np
import pytest

import numbanorm as nbn

import reference as ref
from helpers import assert_close, random_array
from norms import NORM_CASES

SHAPE = (8, 6, 12)

# Every norm with its default axis, and the other layouts worth a case of their own.
CASES = {
    **NORM_CASES,
    "batch_norm_last": NORM_CASES["batch_norm"].with_axis(-1),
    "layer_norm_outer": NORM_CASES["layer_norm"].with_axis((0, 2)),
}


def _view(base, kind):
    if kind == "contiguous":
        return base
    if kind == "transposed":
        return base.transpose(2, 1, 0)
    if kind == "channels_swapped":
        return base.transpose(0, 2, 1)
    if kind == "strided":
        return base[::2, :, 1::3]
    if kind == "reversed":
        return base[::-1, ::-1, ::-2]
    if kind == "fortran":
        return np.asfortranarray(base)
    if kind == "broadcast":
        return np.broadcast_to(base[:1], base.shape)
    if kind == "read_only":
        read_only = base.copy()
        read_only.setflags(write=False)
        return read_only
    raise ValueError(kind)


VIEW_DTYPES = [
    ("transposed", np.float32),
    ("channels_swapped", np.float64),
    ("strided", np.float32),
    ("reversed", np.float64),
    ("fortran", np.float32),
    ("broadcast", np.float64),
    ("read_only", np.float32),
]


def _forward_and_backward(name, x, dy):
    case = CASES[name]
    y, *stats = case.forward(x)
    expected_y, *expected_stats = case.forward(x, module=ref)
    grads = case.backward(dy, x, stats)
    expected_grads = case.backward(dy, x, stats, module=ref)
    return (y, stats, grads), (expected_y, expected_stats, expected_grads)


def _assert_results_close(results, expected, dtype):
    (y, stats, grads), (expected_y, expected_stats, expected_grads) = results, expected
    assert_close(y, expected_y, dtype, err_msg="y")
    for value, truth in zip(stats, expected_stats):
        assert_close(value, truth, dtype, err_msg="statistics")
    for value, truth in zip(grads, expected_grads):
        assert_close(value, truth, dtype, scale=10.0, err_msg="gradient")


@pytest.mark.parametrize("view, dtype", VIEW_DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_non_contiguous_and_read_only_inputs(rng, name, view, dtype):
    x = _view(random_array(rng, SHAPE, dtype), view)
    dy = _view(random_array(rng, SHAPE, dtype, loc=0.0, scale=1.0), view)
    results, expected = _forward_and_backward(name, x, dy)
    _assert_results_close(results, expected, dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_float16_computes_in_float32_and_returns_float16(rng, name):
    x = random_array(rng, SHAPE, np.float16)
    dy = random_array(rng, SHAPE, np.float16, loc=0.0, scale=1.0)
    results, expected = _forward_and_backward(name, x, dy)
    y, stats, grads = results
    assert y.dtype == np.float16
    assert all(value.dtype == np.float32 for value in stats)
    assert grads[0].dtype == np.float16
    assert all(grad.dtype == np.float32 for grad in grads[1:])
    _assert_results_close(results, expected, np.float16)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
@pytest.mark.parametrize("name", list(NORM_CASES))
def test_integer_and_bool_inputs_are_promoted_to_float64(rng, name, dtype):
    x = random_array(rng, SHAPE, dtype)
    dy = random_array(rng, SHAPE, np.float64, loc=0.0, scale=1.0)
    results, expected = _forward_and_backward(name, x, dy)
    y, stats, grads = results
    assert y.dtype == np.float64
    assert all(value.dtype == np.float64 for value in stats)
    assert all(grad.dtype == np.float64 for grad in grads)
    _assert_results_close(results, expected, np.float64)


def test_nested_lists_are_accepted():
    data = [[1.0, 2.0, 4.0], [3.0, -1.0, 0.5]]
    x = np.array(data)
    assert_close(nbn.layer_norm(data), ref.layer_norm_forward(x)[0], np.float64)
    assert_close(nbn.batch_norm(data), ref.batch_norm_forward(x)[0], np.float64)
    assert_close(
        nbn.rms_norm(data),
        ref.rms_norm_forward(x, eps=ref.rms_norm_default_eps(x.dtype))[0],
        np.float64,
    )
    assert_close(
        nbn.layer_norm(data, [1.0, 2.0, 3.0], [0.0, 1.0, 0.0]),
        ref.layer_norm_forward(x, [1.0, 2.0, 3.0], [0.0, 1.0, 0.0])[0],
        np.float64,
    )


def test_strided_weight_and_bias(rng):
    x = random_array(rng, SHAPE)
    buffer = random_array(rng, (4, 24))
    channel_weight, channel_bias = buffer[0, ::4], buffer[1, 1::4]
    row_weight, row_bias = buffer[2, ::2], buffer[3, ::-2]
    assert_close(
        nbn.batch_norm(x, weight=channel_weight, bias=channel_bias),
        ref.batch_norm_forward(x, weight=channel_weight, bias=channel_bias)[0],
        x.dtype,
    )
    assert_close(
        nbn.layer_norm(x, row_weight, row_bias),
        ref.layer_norm_forward(x, row_weight, row_bias)[0],
        x.dtype,
    )
    group_norm = NORM_CASES["group_norm"]
    assert_close(
        group_norm.plain(x, channel_weight, channel_bias),
        group_norm.forward(x, channel_weight, channel_bias, module=ref)[0],
        x.dtype,
    )


ZERO_BATCH = {
    "batch_norm_eval": (
        lambda x, rm, rv: nbn.batch_norm_forward(x, rm, rv, training=False),
        lambda dy, x, s: nbn.batch_norm_backward(dy, x, *s, training=False),
        (6,),
        (6,),
    ),
    "layer_norm": (
        lambda x, rm, rv: nbn.layer_norm_forward(x),
        lambda dy, x, s: nbn.layer_norm_backward(dy, x, *s),
        (0, 6),
        (12,),
    ),
    "group_norm": (
        lambda x, rm, rv: NORM_CASES["group_norm"].forward(x),
        lambda dy, x, s: NORM_CASES["group_norm"].backward(dy, x, s),
        (0, NORM_CASES["group_norm"].num_groups),
        (6,),
    ),
    "instance_norm": (
        lambda x, rm, rv: nbn.instance_norm_forward(x),
        lambda dy, x, s: nbn.instance_norm_backward(dy, x, *s),
        (0, 6),
        (6,),
    ),
    "rms_norm": (
        lambda x, rm, rv: nbn.rms_norm_forward(x),
        lambda dy, x, s: nbn.rms_norm_backward(dy, x, *s),
        (0, 6),
        (12,),
    ),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ZERO_BATCH))
def test_zero_size_batch(name, dtype):
    forward, backward, stats_shape, param_shape = ZERO_BATCH[name]
    x = np.zeros((0, 6, 12), dtype=dtype)
    running_mean, running_var = np.zeros(6), np.ones(6)
    y, *stats = forward(x, running_mean, running_var)
    assert y.shape == x.shape and y.dtype == dtype
    assert all(value.shape == stats_shape for value in stats)
    dx, *param_grads = backward(np.zeros_like(x), x, stats)
    assert dx.shape == x.shape and dx.dtype == dtype
    for grad in param_grads:
        assert grad.shape == param_shape
        np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", list(CASES))
def test_out_is_filled_and_returned(rng, name):
    case = CASES[name]
    x = random_array(rng, SHAPE, np.float32)
    out = np.empty_like(x)
    result = case.plain(x, out=out)
    assert result is out
    assert_close(out, case.forward(x, module=ref)[0], np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_out_can_be_the_input(rng, name):
    case = CASES[name]
    x = random_array(rng, SHAPE)
    expected = case.forward(x.copy(), module=ref)[0]
    result = case.plain(x, out=x)
    assert result is x
    assert_close(x, expected, np.float64)


def _out_view(kind):
    """A writable, non-contiguous ``out`` of shape SHAPE inside a zeroed buffer."""
    if kind == "strided":
        buffer = np.zeros(SHAPE[:2] + (2 * SHAPE[2],))
        return buffer, buffer[:, :, ::2]
    if kind == "fortran":
        buffer = np.zeros(SHAPE[::-1])
        return buffer, buffer.T
    if kind == "permuted":
        buffer = np.zeros((SHAPE[1], SHAPE[2], SHAPE[0]))
        return buffer, buffer.transpose(2, 0, 1)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["strided", "fortran", "permuted"])
@pytest.mark.parametrize("name", list(CASES))
def test_out_can_be_a_non_contiguous_view(rng, name, kind):
    case = CASES[name]
    x = random_array(rng, SHAPE)
    buffer, out = _out_view(kind)
    result = case.plain(x, out=out)
    assert result is out
    assert_close(out, case.forward(x, module=ref)[0], np.float64)
    if kind == "strided":
        np.testing.assert_array_equal(buffer[:, :, 1::2], 0.0)


@pytest.mark.parametrize("x_dtype", [np.float16, np.int32])
def test_out_has_the_result_dtype(rng, x_dtype):
    x = random_array(rng, SHAPE, x_dtype)
    out = np.empty(SHAPE, dtype=ref.result_dtype(x_dtype))
    assert nbn.layer_norm(x, out=out) is out
    assert_close(out, ref.layer_norm_forward(x)[0], x_dtype)
    assert nbn.batch_norm(x, out=out) is out
    assert_close(out, ref.batch_norm_forward(x)[0], x_dtype)


def test_out_with_running_stats_in_place(rng):
    x = random_array(rng, SHAPE)
    original = x.copy()
    running_mean, running_var = np.zeros(6), np.ones(6)
    expected_mean, expected_var = ref.batch_norm_running_stats(original, running_mean, running_var)
    assert nbn.batch_norm(x, running_mean, running_var, out=x) is x
    assert_close(x, ref.batch_norm_forward(original)[0], np.float64)
    assert_close(running_mean, expected_mean, np.float64)
    assert_close(running_var, expected_var, np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_inputs_are_never_modified(rng, name):
    case = CASES[name]
    x = random_array(rng, SHAPE, np.float32)
    dy = random_array(rng, SHAPE, np.float32)
    x_copy, dy_copy = x.copy(), dy.copy()
    y, *stats = case.forward(x)
    stats_copies = [value.copy() for value in stats]
    case.backward(dy, x, stats)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dy, dy_copy)
    for value, copy in zip(stats, stats_copies):
        np.testing.assert_array_equal(value, copy)


def test_weight_and_bias_are_never_modified(rng):
    x = random_array(rng, SHAPE)
    channel_weight, channel_bias = random_array(rng, 6), random_array(rng, 6)
    row_weight, row_bias = random_array(rng, 12), random_array(rng, 12)
    copies = [a.copy() for a in (channel_weight, channel_bias, row_weight, row_bias)]
    nbn.batch_norm(x, weight=channel_weight, bias=channel_bias)
    NORM_CASES["group_norm"].plain(x, channel_weight, channel_bias)
    nbn.instance_norm(x, weight=channel_weight, bias=channel_bias)
    nbn.layer_norm(x, row_weight, row_bias)
    nbn.rms_norm(x, row_weight)
    _, mean, rstd = nbn.layer_norm_forward(x, row_weight, row_bias)
    nbn.layer_norm_backward(x, x, mean, rstd, row_weight)
    _, mean, rstd = nbn.batch_norm_forward(x, weight=channel_weight)
    nbn.batch_norm_backward(x, x, mean, rstd, channel_weight)
    for array, copy in zip((channel_weight, channel_bias, row_weight, row_bias), copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8"])
def test_non_native_byte_order_keeps_its_precision(rng, dtype):
    x = random_array(rng, (6, 40)).astype(dtype)
    y = nbn.layer_norm(x)
    native = np.dtype(dtype).newbyteorder("=")
    assert y.dtype == native
    assert_close(y, ref.layer_norm_forward(x.astype(np.float64))[0], native)
    mean, _ = nbn.moments(x, axis=1)
    assert mean.dtype == native
