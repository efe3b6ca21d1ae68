import dataclasses

import numpy as np
import pytest

import numbanorm as nbn

import reference as ref
from helpers import (
    BN_CASES,
    GN_CASES,
    IN_CASES,
    LN_CASES,
    RMS_CASES,
    assert_close,
    channel_count,
    coarser_dtype,
    normalized_shape,
    random_array,
)
from norms import NORM_CASES

DTYPE_AFFINE = [(np.float64, False), (np.float32, True)]
REDUCED_SCALE = 10.0


def _weight(rng, shape, dtype, affine):
    return random_array(rng, shape, dtype, loc=1.0, scale=0.5) if affine else None


def _check_param_grads(grads, expected, weight, x_dtype, shape):
    grad_dtype = weight.dtype if weight is not None else ref.stats_dtype(x_dtype)
    for grad, truth in zip(grads, expected):
        assert grad.shape == shape
        assert grad.dtype == grad_dtype
        assert_close(grad, truth, x_dtype, scale=REDUCED_SCALE)


def _input_stats(forward, x, *args, axis):
    """The float64 statistics of ``x``, which a backward with statistics from ``x`` refines
    the given float32 ones to."""
    return forward(x, *args, axis=axis)[1:]


def _check_dx(dx, expected, x_dtype):
    assert dx.dtype == ref.result_dtype(x_dtype)
    assert_close(dx, expected, x_dtype)


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape, axis", BN_CASES)
def test_batch_norm(rng, shape, axis, training, dtype, affine):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype, loc=0.0, scale=1.0)
    channels = channel_count(shape, axis)
    weight = _weight(rng, channels, dtype, affine)
    running_mean, running_var = random_array(rng, channels), rng.uniform(0.5, 2.0, channels)
    _, mean, rstd = nbn.batch_norm_forward(
        x, running_mean, running_var, weight, training=training, axis=axis
    )
    dx, dweight, dbias = nbn.batch_norm_backward(
        dy, x, mean, rstd, weight, training=training, axis=axis
    )
    if training:
        mean, rstd = _input_stats(ref.batch_norm_forward, x, axis=axis)
    expected_dx, expected_dweight, expected_dbias = ref.batch_norm_backward(
        dy, x, mean, rstd, weight, training=training, axis=axis
    )
    _check_dx(dx, expected_dx, dtype)
    _check_param_grads(
        (dweight, dbias), (expected_dweight, expected_dbias), weight, dtype, (channels,)
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", LN_CASES)
def test_layer_norm(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype, loc=0.0, scale=1.0)
    weight = _weight(rng, normalized_shape(shape, axis), dtype, affine)
    _, mean, rstd = nbn.layer_norm_forward(x, weight, axis=axis)
    dx, dweight, dbias = nbn.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis)
    mean, rstd = _input_stats(ref.layer_norm_forward, x, axis=axis)
    expected_dx, expected_dweight, expected_dbias = ref.layer_norm_backward(
        dy, x, mean, rstd, weight, axis=axis
    )
    _check_dx(dx, expected_dx, dtype)
    _check_param_grads(
        (dweight, dbias),
        (expected_dweight, expected_dbias),
        weight,
        dtype,
        normalized_shape(shape, axis),
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis, num_groups", GN_CASES)
def test_group_norm(rng, shape, axis, num_groups, dtype, affine):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype, loc=0.0, scale=1.0)
    channels = channel_count(shape, axis)
    weight = _weight(rng, channels, dtype, affine)
    _, mean, rstd = nbn.group_norm_forward(x, num_groups, weight, axis=axis)
    dx, dweight, dbias = nbn.group_norm_backward(dy, x, num_groups, mean, rstd, weight, axis=axis)
    mean, rstd = _input_stats(ref.group_norm_forward, x, num_groups, axis=axis)
    expected_dx, expected_dweight, expected_dbias = ref.group_norm_backward(
        dy, x, num_groups, mean, rstd, weight, axis=axis
    )
    _check_dx(dx, expected_dx, dtype)
    _check_param_grads(
        (dweight, dbias), (expected_dweight, expected_dbias), weight, dtype, (channels,)
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("shape, axis", IN_CASES)
def test_instance_norm(rng, shape, axis, use_input_stats, dtype, affine):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype, loc=0.0, scale=1.0)
    channels = channel_count(shape, axis)
    weight = _weight(rng, channels, dtype, affine)
    running_mean, running_var = random_array(rng, channels), rng.uniform(0.5, 2.0, channels)
    _, mean, rstd = nbn.instance_norm_forward(
        x, running_mean, running_var, weight, use_input_stats=use_input_stats, axis=axis
    )
    dx, dweight, dbias = nbn.instance_norm_backward(
        dy, x, mean, rstd, weight, use_input_stats=use_input_stats, axis=axis
    )
    if use_input_stats:
        mean, rstd = _input_stats(ref.instance_norm_forward, x, axis=axis)
    expected_dx, expected_dweight, expected_dbias = ref.instance_norm_backward(
        dy, x, mean, rstd, weight, use_input_stats=use_input_stats, axis=axis
    )
    _check_dx(dx, expected_dx, dtype)
    _check_param_grads(
        (dweight, dbias), (expected_dweight, expected_dbias), weight, dtype, (channels,)
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", RMS_CASES)
def test_rms_norm(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype, loc=0.0, scale=1.0)
    weight = _weight(rng, normalized_shape(shape, axis), dtype, affine)
    _, rrms = nbn.rms_norm_forward(x, weight, axis=axis)
    dx, dweight = nbn.rms_norm_backward(dy, x, rrms, weight, axis=axis)
    expected_dx, expected_dweight = ref.rms_norm_backward(dy, x, rrms, weight, axis=axis)
    _check_dx(dx, expected_dx, dtype)
    _check_param_grads(
        (dweight,), (expected_dweight,), weight, dtype, normalized_shape(shape, axis)
    )


@pytest.mark.parametrize(
    "x_dtype, weight_dtype",
    [(np.float32, np.float64), (np.float64, np.float32), (np.float16, None), (np.int32, None)],
)
def test_gradient_dtypes(rng, x_dtype, weight_dtype):
    shape = (4, 3, 6)
    x = random_array(rng, shape, x_dtype)
    dy = random_array(rng, shape, ref.result_dtype(x_dtype), loc=0.0, scale=1.0)
    channel_weight = None if weight_dtype is None else random_array(rng, 3, weight_dtype)
    row_weight = None if weight_dtype is None else random_array(rng, 6, weight_dtype)
    grad_dtype = np.dtype(weight_dtype) if weight_dtype is not None else ref.stats_dtype(x_dtype)

    _, mean, rstd = nbn.batch_norm_forward(x, weight=channel_weight)
    bn = nbn.batch_norm_backward(dy, x, mean, rstd, channel_weight)
    bn_expected = ref.batch_norm_backward(dy, x, mean, rstd, channel_weight)
    _, mean, rstd = nbn.layer_norm_forward(x, row_weight)
    ln = nbn.layer_norm_backward(dy, x, mean, rstd, row_weight)
    ln_expected = ref.layer_norm_backward(dy, x, mean, rstd, row_weight)
    _, mean, rstd = nbn.group_norm_forward(x, 3, channel_weight)
    gn = nbn.group_norm_backward(dy, x, 3, mean, rstd, channel_weight)
    gn_expected = ref.group_norm_backward(dy, x, 3, mean, rstd, channel_weight)
    _, mean, rstd = nbn.instance_norm_forward(x, weight=channel_weight)
    inn = nbn.instance_norm_backward(dy, x, mean, rstd, channel_weight)
    inn_expected = ref.instance_norm_backward(dy, x, mean, rstd, channel_weight)
    _, rrms = nbn.rms_norm_forward(x, row_weight)
    rms = nbn.rms_norm_backward(dy, x, rrms, row_weight)
    rms_expected = ref.rms_norm_backward(dy, x, rrms, row_weight)

    for name, grads, expected in [
        ("batch_norm", bn, bn_expected),
        ("layer_norm", ln, ln_expected),
        ("group_norm", gn, gn_expected),
        ("instance_norm", inn, inn_expected),
        ("rms_norm", rms, rms_expected),
    ]:
        dx, *param_grads = grads
        assert dx.dtype == ref.result_dtype(x_dtype), name
        assert_close(dx, expected[0], x_dtype, err_msg=name)
        for grad, truth in zip(param_grads, expected[1:]):
            assert grad.dtype == grad_dtype, name
            assert_close(
                grad, truth, coarser_dtype(x_dtype, grad_dtype), scale=REDUCED_SCALE, err_msg=name
            )


# (case, shape): a dense and a strided layout each
BACKWARD_OUT_CASES = {
    "batch_norm": (NORM_CASES["batch_norm"], (6, 4, 5, 3)),
    "batch_norm channels-last": (NORM_CASES["batch_norm"].with_axis(-1), (6, 5, 3, 4)),
    "layer_norm": (NORM_CASES["layer_norm"], (6, 40)),
    "layer_norm leading axis": (NORM_CASES["layer_norm"].with_axis(0), (40, 6)),
    "group_norm": (dataclasses.replace(NORM_CASES["group_norm"], num_groups=2), (3, 4, 5, 6)),
    "instance_norm": (NORM_CASES["instance_norm"].with_axis(-1), (3, 4, 5, 6)),
    "rms_norm": (NORM_CASES["rms_norm"], (6, 40)),
}


@pytest.mark.parametrize("name", BACKWARD_OUT_CASES)
@pytest.mark.parametrize("into", ["new array", "dy", "x", "fortran-ordered array"])
def test_backward_out_receives_dx(rng, name, into):
    case, shape = BACKWARD_OUT_CASES[name]
    x = random_array(rng, shape, np.float32)
    dy = random_array(rng, shape, np.float32, loc=0.0, scale=1.0)
    _, *stats = case.forward(x)
    expected = case.backward(dy, x, stats, out=None)
    out = {
        "new array": np.empty_like(x),
        "dy": dy,
        "x": x,
        "fortran-ordered array": np.asfortranarray(np.empty_like(x)),
    }[into]
    result = (
        case.backward(dy.copy(), x.copy(), stats, out=out)
        if into not in ("dy", "x")
        else case.backward(dy, x, stats, out=out)
    )
    assert result[0] is out
    for actual, truth in zip(result, expected):
        np.testing.assert_array_equal(actual, truth)
