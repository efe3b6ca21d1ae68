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
    layer_stats_shape,
    normalized_shape,
    random_array,
    sample_count,
)

DTYPE_AFFINE = [(np.float64, False), (np.float32, True)]


def _affine(rng, shape, dtype, affine, *, with_bias=True):
    if not affine:
        return None, None
    weight = random_array(rng, shape, dtype, loc=1.0, scale=0.5)
    bias = random_array(rng, shape, dtype, loc=0.0, scale=1.0) if with_bias else None
    return weight, bias


def _check_stats(stats, expected, x_dtype, shape):
    for value, truth in zip(stats, expected):
        assert value.shape == shape
        assert value.dtype == ref.stats_dtype(x_dtype)
        assert_close(value, truth, x_dtype)


def _running_stats(rng, channels):
    return random_array(rng, channels, loc=0.3, scale=1.0), rng.uniform(0.5, 2.0, channels)


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", BN_CASES)
def test_batch_norm_training(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    weight, bias = _affine(rng, channel_count(shape, axis), dtype, affine)
    y, mean, rstd = nbn.batch_norm_forward(x, None, None, weight, bias, axis=axis)
    expected_y, expected_mean, expected_rstd = ref.batch_norm_forward(
        x, None, None, weight, bias, axis=axis
    )
    assert y.dtype == dtype
    assert_close(y, expected_y, dtype)
    _check_stats((mean, rstd), (expected_mean, expected_rstd), dtype, (channel_count(shape, axis),))
    assert_close(nbn.batch_norm(x, None, None, weight, bias, axis=axis), expected_y, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((4, 3, 5), 1), ((2, 4, 5, 3), -1), ((3, 4), 0)])
def test_batch_norm_eval_uses_running_stats(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    channels = channel_count(shape, axis)
    running_mean, running_var = _running_stats(rng, channels)
    weight, bias = _affine(rng, channels, dtype, True)
    y, mean, rstd = nbn.batch_norm_forward(
        x, running_mean, running_var, weight, bias, training=False, eps=1e-3, axis=axis
    )
    expected_y, expected_mean, expected_rstd = ref.batch_norm_forward(
        x, running_mean, running_var, weight, bias, training=False, eps=1e-3, axis=axis
    )
    assert_close(y, expected_y, dtype)
    _check_stats((mean, rstd), (expected_mean, expected_rstd), dtype, (channels,))
    assert_close(
        nbn.batch_norm(
            x, running_mean, running_var, weight, bias, training=False, eps=1e-3, axis=axis
        ),
        expected_y,
        dtype,
    )


def test_single_values_are_fine_outside_training(rng):
    channels = 3
    running_mean, running_var = _running_stats(rng, channels)
    x = random_array(rng, (1, channels))
    expected_y, _, _ = ref.batch_norm_forward(x, running_mean, running_var, training=False)
    assert_close(nbn.batch_norm(x, running_mean, running_var, training=False), expected_y, x.dtype)
    x = random_array(rng, (2, channels, 1))
    expected_y, _, _ = ref.instance_norm_forward(
        x, running_mean, running_var, use_input_stats=False
    )
    assert_close(
        nbn.instance_norm(x, running_mean, running_var, use_input_stats=False), expected_y, x.dtype
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", LN_CASES)
def test_layer_norm(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    weight, bias = _affine(rng, normalized_shape(shape, axis), dtype, affine)
    y, mean, rstd = nbn.layer_norm_forward(x, weight, bias, axis=axis)
    expected_y, expected_mean, expected_rstd = ref.layer_norm_forward(x, weight, bias, axis=axis)
    assert y.dtype == dtype
    assert_close(y, expected_y, dtype)
    _check_stats(
        (mean, rstd), (expected_mean, expected_rstd), dtype, layer_stats_shape(shape, axis)
    )
    assert_close(nbn.layer_norm(x, weight, bias, axis=axis), expected_y, dtype)


def test_layer_norm_default_axis_is_last(rng):
    x = random_array(rng, (3, 4, 5))
    expected_y, _, _ = ref.layer_norm_forward(x, axis=-1)
    assert_close(nbn.layer_norm(x), expected_y, x.dtype)


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis, num_groups", GN_CASES)
def test_group_norm(rng, shape, axis, num_groups, dtype, affine):
    x = random_array(rng, shape, dtype)
    weight, bias = _affine(rng, channel_count(shape, axis), dtype, affine)
    y, mean, rstd = nbn.group_norm_forward(x, num_groups, weight, bias, axis=axis)
    expected_y, expected_mean, expected_rstd = ref.group_norm_forward(
        x, num_groups, weight, bias, axis=axis
    )
    assert y.dtype == dtype
    assert_close(y, expected_y, dtype)
    _check_stats(
        (mean, rstd), (expected_mean, expected_rstd), dtype, (sample_count(shape, axis), num_groups)
    )
    assert_close(nbn.group_norm(x, num_groups, weight, bias, axis=axis), expected_y, dtype)


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", IN_CASES)
def test_instance_norm(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    weight, bias = _affine(rng, channel_count(shape, axis), dtype, affine)
    y, mean, rstd = nbn.instance_norm_forward(x, None, None, weight, bias, axis=axis)
    expected_y, expected_mean, expected_rstd = ref.instance_norm_forward(
        x, None, None, weight, bias, axis=axis
    )
    assert y.dtype == dtype
    assert_close(y, expected_y, dtype)
    _check_stats(
        (mean, rstd),
        (expected_mean, expected_rstd),
        dtype,
        (sample_count(shape, axis), channel_count(shape, axis)),
    )
    assert_close(nbn.instance_norm(x, None, None, weight, bias, axis=axis), expected_y, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((2, 3, 5), 1), ((2, 4, 5, 3), -1)])
def test_instance_norm_without_input_stats_uses_running_stats(rng, shape, axis, dtype):
    x = random_array(rng, shape, dtype)
    channels = channel_count(shape, axis)
    running_mean, running_var = _running_stats(rng, channels)
    weight, bias = _affine(rng, channels, dtype, True)
    y, mean, rstd = nbn.instance_norm_forward(
        x, running_mean, running_var, weight, bias, use_input_stats=False, eps=1e-3, axis=axis
    )
    expected_y, expected_mean, expected_rstd = ref.instance_norm_forward(
        x, running_mean, running_var, weight, bias, use_input_stats=False, eps=1e-3, axis=axis
    )
    assert_close(y, expected_y, dtype)
    _check_stats((mean, rstd), (expected_mean, expected_rstd), dtype, (shape[0], channels))
    assert_close(
        nbn.instance_norm(
            x, running_mean, running_var, weight, bias, use_input_stats=False, eps=1e-3, axis=axis
        ),
        expected_y,
        dtype,
    )


@pytest.mark.parametrize("dtype, affine", DTYPE_AFFINE)
@pytest.mark.parametrize("shape, axis", RMS_CASES)
def test_rms_norm(rng, shape, axis, dtype, affine):
    x = random_array(rng, shape, dtype)
    weight, _ = _affine(rng, normalized_shape(shape, axis), dtype, affine, with_bias=False)
    y, rrms = nbn.rms_norm_forward(x, weight, axis=axis, eps=1e-4)
    expected_y, expected_rrms = ref.rms_norm_forward(x, weight, axis=axis, eps=1e-4)
    assert y.dtype == dtype
    assert_close(y, expected_y, dtype)
    _check_stats((rrms,), (expected_rrms,), dtype, layer_stats_shape(shape, axis))
    assert_close(nbn.rms_norm(x, weight, axis=axis, eps=1e-4), expected_y, dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_rms_norm_default_eps_is_machine_epsilon_of_result_dtype(dtype):
    scale = 1 if np.issubdtype(dtype, np.integer) else 1e-4
    x = (np.array([[1.0, -2.0, 3.0, 0.0]]) * scale).astype(dtype)
    expected_y, expected_rrms = ref.rms_norm_forward(
        x, axis=-1, eps=ref.rms_norm_default_eps(dtype)
    )
    y, rrms = nbn.rms_norm_forward(x)
    assert_close(rrms, expected_rrms, dtype)
    assert_close(y, expected_y, dtype)
    assert_close(nbn.rms_norm(x), expected_y, dtype)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_eps_is_used_by_every_norm(rng, eps):
    x = random_array(rng, (3, 4, 5))
    assert_close(nbn.batch_norm(x, eps=eps), ref.batch_norm_forward(x, eps=eps)[0], x.dtype)
    assert_close(nbn.layer_norm(x, eps=eps), ref.layer_norm_forward(x, eps=eps)[0], x.dtype)
    assert_close(nbn.group_norm(x, 2, eps=eps), ref.group_norm_forward(x, 2, eps=eps)[0], x.dtype)
    assert_close(nbn.instance_norm(x, eps=eps), ref.instance_norm_forward(x, eps=eps)[0], x.dtype)
    assert_close(nbn.rms_norm(x, eps=eps), ref.rms_norm_forward(x, eps=eps)[0], x.dtype)


def test_weight_without_bias_and_bias_without_weight(rng):
    x = random_array(rng, (4, 3, 5))
    weight = random_array(rng, 3)
    bias = random_array(rng, 3)
    assert_close(
        nbn.batch_norm(x, weight=weight), ref.batch_norm_forward(x, weight=weight)[0], x.dtype
    )
    assert_close(nbn.batch_norm(x, bias=bias), ref.batch_norm_forward(x, bias=bias)[0], x.dtype)
    ln_weight = random_array(rng, 5)
    ln_bias = random_array(rng, 5)
    assert_close(nbn.layer_norm(x, ln_weight), ref.layer_norm_forward(x, ln_weight)[0], x.dtype)
    assert_close(
        nbn.layer_norm(x, None, ln_bias), ref.layer_norm_forward(x, None, ln_bias)[0], x.dtype
    )
    assert_close(
        nbn.group_norm(x, 3, None, bias), ref.group_norm_forward(x, 3, None, bias)[0], x.dtype
    )
    assert_close(
        nbn.instance_norm(x, weight=weight), ref.instance_norm_forward(x, weight=weight)[0], x.dtype
    )


@pytest.mark.parametrize(
    "x_dtype, weight_dtype",
    [(np.float32, np.float64), (np.float64, np.float32), (np.float16, np.float64)],
)
def test_output_dtype_follows_x_not_weight(rng, x_dtype, weight_dtype):
    x = random_array(rng, (4, 3, 6), x_dtype)
    channel_weight = random_array(rng, 3, weight_dtype)
    row_weight = random_array(rng, 6, weight_dtype)
    outputs = {
        "batch_norm": (
            nbn.batch_norm(x, weight=channel_weight, bias=channel_weight),
            ref.batch_norm_forward(x, weight=channel_weight, bias=channel_weight)[0],
        ),
        "layer_norm": (
            nbn.layer_norm(x, row_weight, row_weight),
            ref.layer_norm_forward(x, row_weight, row_weight)[0],
        ),
        "group_norm": (
            nbn.group_norm(x, 3, channel_weight, channel_weight),
            ref.group_norm_forward(x, 3, channel_weight, channel_weight)[0],
        ),
        "instance_norm": (
            nbn.instance_norm(x, weight=channel_weight, bias=channel_weight),
            ref.instance_norm_forward(x, weight=channel_weight, bias=channel_weight)[0],
        ),
        "rms_norm": (
            nbn.rms_norm(x, row_weight, eps=1e-5),
            ref.rms_norm_forward(x, row_weight, eps=1e-5)[0],
        ),
    }
    for name, (y, expected) in outputs.items():
        assert y.dtype == x_dtype, name
        assert_close(y, expected, x_dtype, err_msg=name)
