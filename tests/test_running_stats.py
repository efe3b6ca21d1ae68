import numpy as np
import pytest

import numbanorm as nbn

import reference as ref
from helpers import assert_close, channel_count, random_array


def _running(rng, channels, dtype=np.float64):
    return (
        random_array(rng, channels, dtype, loc=0.2, scale=1.0),
        rng.uniform(0.5, 2.0, channels).astype(dtype),
    )


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.7, 1.0])
@pytest.mark.parametrize(
    "shape, axis", [((6, 3), 1), ((4, 3, 5), 1), ((2, 4, 5, 3), -1), ((3, 4, 5), 0)]
)
def test_batch_norm_updates_in_place(rng, shape, axis, momentum):
    x = random_array(rng, shape)
    running_mean, running_var = _running(rng, channel_count(shape, axis))
    expected_mean, expected_var = ref.batch_norm_running_stats(
        x, running_mean, running_var, momentum=momentum, axis=axis
    )
    nbn.batch_norm_forward(x, running_mean, running_var, momentum=momentum, axis=axis)
    assert_close(running_mean, expected_mean, np.float64)
    assert_close(running_var, expected_var, np.float64)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("shape, axis", [((2, 3, 5), 1), ((3, 4, 5, 2), -1), ((3, 2, 5), 0)])
def test_instance_norm_averages_instance_stats_over_batch(rng, shape, axis, momentum):
    x = random_array(rng, shape)
    running_mean, running_var = _running(rng, channel_count(shape, axis))
    expected_mean, expected_var = ref.instance_norm_running_stats(
        x, running_mean, running_var, momentum=momentum, axis=axis
    )
    nbn.instance_norm_forward(x, running_mean, running_var, momentum=momentum, axis=axis)
    assert_close(running_mean, expected_mean, np.float64)
    assert_close(running_var, expected_var, np.float64)


def test_plain_functions_update_too(rng):
    x = random_array(rng, (4, 3, 5))
    bn_mean, bn_var = _running(rng, 3)
    in_mean, in_var = bn_mean.copy(), bn_var.copy()
    expected_bn = ref.batch_norm_running_stats(x, bn_mean, bn_var, momentum=0.3)
    expected_in = ref.instance_norm_running_stats(x, in_mean, in_var, momentum=0.3)
    nbn.batch_norm(x, bn_mean, bn_var, momentum=0.3)
    nbn.instance_norm(x, in_mean, in_var, momentum=0.3)
    assert_close(bn_mean, expected_bn[0], np.float64)
    assert_close(bn_var, expected_bn[1], np.float64)
    assert_close(in_mean, expected_in[0], np.float64)
    assert_close(in_var, expected_in[1], np.float64)


def test_default_momentum_is_one_tenth(rng):
    x = random_array(rng, (4, 3, 5))
    running_mean, running_var = _running(rng, 3)
    expected = ref.batch_norm_running_stats(x, running_mean, running_var, momentum=0.1)
    nbn.batch_norm(x, running_mean, running_var)
    assert_close(running_mean, expected[0], np.float64)
    assert_close(running_var, expected[1], np.float64)


def test_successive_updates_accumulate(rng):
    running_mean, running_var = _running(rng, 3)
    expected_mean, expected_var = running_mean.copy(), running_var.copy()
    for _ in range(3):
        x = random_array(rng, (5, 3, 2))
        expected_mean, expected_var = ref.batch_norm_running_stats(x, expected_mean, expected_var)
        nbn.batch_norm(x, running_mean, running_var)
    assert_close(running_mean, expected_mean, np.float64)
    assert_close(running_var, expected_var, np.float64)


@pytest.mark.parametrize(
    "x_dtype, stats_dtype",
    [
        (np.float64, np.float32),
        (np.float32, np.float64),
        (np.float32, np.float16),
        (np.int64, np.float32),
    ],
)
def test_running_stats_keep_their_own_dtype(rng, x_dtype, stats_dtype):
    x = random_array(rng, (6, 3, 4), x_dtype)
    for update, forward in [
        (ref.batch_norm_running_stats, nbn.batch_norm_forward),
        (ref.instance_norm_running_stats, nbn.instance_norm_forward),
    ]:
        running_mean, running_var = _running(rng, 3, stats_dtype)
        expected_mean, expected_var = update(x, running_mean, running_var, momentum=0.5)
        forward(x, running_mean, running_var, momentum=0.5)
        assert running_mean.dtype == running_var.dtype == stats_dtype
        tolerance_dtype = np.float16 if stats_dtype == np.float16 else np.float32
        assert_close(running_mean, expected_mean, tolerance_dtype)
        assert_close(running_var, expected_var, tolerance_dtype)


def test_strided_running_stats_are_updated_through_the_view(rng):
    x = random_array(rng, (4, 3, 5))
    mean_buffer = random_array(rng, 6)
    var_buffer = rng.uniform(0.5, 2.0, 6)
    untouched_mean, untouched_var = mean_buffer[1::2].copy(), var_buffer[1::2].copy()
    expected_mean, expected_var = ref.batch_norm_running_stats(x, mean_buffer[::2], var_buffer[::2])
    nbn.batch_norm(x, mean_buffer[::2], var_buffer[::2])
    assert_close(mean_buffer[::2], expected_mean, np.float64)
    assert_close(var_buffer[::2], expected_var, np.float64)
    np.testing.assert_array_equal(mean_buffer[1::2], untouched_mean)
    np.testing.assert_array_equal(var_buffer[1::2], untouched_var)


def test_eval_modes_leave_running_stats_alone(rng):
    x = random_array(rng, (4, 3, 5))
    running_mean, running_var = _running(rng, 3)
    original_mean, original_var = running_mean.copy(), running_var.copy()
    nbn.batch_norm_forward(x, running_mean, running_var, training=False)
    nbn.batch_norm(x, running_mean, running_var, training=False)
    nbn.instance_norm_forward(x, running_mean, running_var, use_input_stats=False)
    nbn.instance_norm(x, running_mean, running_var, use_input_stats=False)
    np.testing.assert_array_equal(running_mean, original_mean)
    np.testing.assert_array_equal(running_var, original_var)


def test_eval_mode_accepts_read_only_running_stats(rng):
    x = random_array(rng, (4, 3, 5))
    running_mean, running_var = _running(rng, 3)
    running_mean.setflags(write=False)
    running_var.setflags(write=False)
    expected, _, _ = ref.batch_norm_forward(x, running_mean, running_var, training=False)
    assert_close(nbn.batch_norm(x, running_mean, running_var, training=False), expected, np.float64)
    expected, _, _ = ref.instance_norm_forward(x, running_mean, running_var, use_input_stats=False)
    assert_close(
        nbn.instance_norm(x, running_mean, running_var, use_input_stats=False), expected, np.float64
    )


def test_training_output_does_not_depend_on_running_stats(rng):
    x = random_array(rng, (4, 3, 5))
    running_mean, running_var = _running(rng, 3)
    expected, _, _ = ref.batch_norm_forward(x)
    assert_close(nbn.batch_norm(x, running_mean, running_var), expected, np.float64)
    expected, _, _ = ref.instance_norm_forward(x)
    assert_close(nbn.instance_norm(x, running_mean, running_var), expected, np.float64)
