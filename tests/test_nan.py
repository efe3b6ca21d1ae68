"""NaN and Inf stay inside the group (channel, row, group, instance) they belong to."""

import warnings

import numpy as np
import pytest

import numbanorm as nbn

import reference as ref
from helpers import random_array

BAD_VALUES = [np.nan, np.inf, -np.inf]


def _reference(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return function(*args, **kwargs)


def _assert_poisoned_only(actual, expected, poisoned):
    """``actual[poisoned]`` is all NaN; everything else is finite and matches ``expected``."""
    actual = np.asarray(actual, dtype=np.float64)
    assert np.isnan(actual[poisoned]).all()
    healthy = np.ones(actual.shape, dtype=bool)
    healthy[poisoned] = False
    assert np.isfinite(actual[healthy]).all()
    np.testing.assert_allclose(actual[healthy], expected[healthy], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_channel(rng, bad, axis):
    x = random_array(rng, (4, 3, 5))
    channel = (slice(None), 1) if axis == 1 else (Ellipsis, 2)
    x[channel][2, 1] = bad
    running_mean, running_var = np.zeros(x.shape[axis]), np.ones(x.shape[axis])
    expected_running = _reference(
        ref.batch_norm_running_stats, x, running_mean, running_var, axis=axis
    )
    y, mean, rstd = nbn.batch_norm_forward(x, running_mean, running_var, axis=axis)
    expected_y, expected_mean, expected_rstd = _reference(ref.batch_norm_forward, x, axis=axis)
    _assert_poisoned_only(y, expected_y, channel)
    stat_index = channel[-1]
    assert not (np.isfinite(mean[stat_index]) and np.isfinite(rstd[stat_index]))
    healthy = np.arange(x.shape[axis]) != stat_index
    np.testing.assert_allclose(mean[healthy], expected_mean[healthy], rtol=1e-10)
    np.testing.assert_allclose(rstd[healthy], expected_rstd[healthy], rtol=1e-10)
    assert not np.isfinite(running_var[stat_index])
    np.testing.assert_allclose(running_mean[healthy], expected_running[0][healthy], rtol=1e-10)
    np.testing.assert_allclose(running_var[healthy], expected_running[1][healthy], rtol=1e-10)

    dy = random_array(rng, x.shape)
    dx, dweight, dbias = nbn.batch_norm_backward(dy, x, mean, rstd, axis=axis)
    expected_dx, expected_dweight, _ = _reference(
        ref.batch_norm_backward, dy, x, mean, rstd, axis=axis
    )
    _assert_poisoned_only(dx, expected_dx, channel)
    _assert_poisoned_only(dweight, expected_dweight, stat_index)
    np.testing.assert_allclose(
        dbias, dy.sum(axis=tuple(a for a in range(3) if a != axis % 3)), rtol=1e-10
    )


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("axis", [-1, (0, 2)])
def test_layer_norm_row(rng, bad, axis):
    x = random_array(rng, (4, 3, 5))
    if axis == -1:
        x[1, 2, 3] = bad
        row = (1, 2)
        stat_index = (1, 2)
    else:
        x[0, 1, 4] = bad
        row = (slice(None), 1)
        stat_index = 1
    y, mean, rstd = nbn.layer_norm_forward(x, axis=axis)
    expected_y, _, _ = _reference(ref.layer_norm_forward, x, axis=axis)
    _assert_poisoned_only(y, expected_y, row)
    dy = random_array(rng, x.shape)
    dx, _, _ = nbn.layer_norm_backward(dy, x, mean, rstd, axis=axis)
    expected_dx, _, _ = _reference(ref.layer_norm_backward, dy, x, mean, rstd, axis=axis)
    _assert_poisoned_only(dx, expected_dx, row)
    assert not (np.isfinite(mean[stat_index]) and np.isfinite(rstd[stat_index]))


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_rms_norm_row(rng, bad):
    x = random_array(rng, (4, 6))
    x[2, 3] = bad
    if np.isinf(bad):
        # x / sqrt(mean(x**2)) is 0 for the finite entries of the row and NaN
        # for the infinite one; the other rows are unaffected.
        y = nbn.rms_norm(x, eps=1e-5)
        expected_y, _ = ref.rms_norm_forward(x[[0, 1, 3]], eps=1e-5)
        np.testing.assert_allclose(y[[0, 1, 3]], expected_y, rtol=1e-10)
        assert np.isnan(y[2, 3])
        np.testing.assert_array_equal(y[2, [0, 1, 2, 4, 5]], 0.0)
        return
    y, rrms = nbn.rms_norm_forward(x, eps=1e-5)
    expected_y, _ = _reference(ref.rms_norm_forward, x, eps=1e-5)
    _assert_poisoned_only(y, expected_y, 2)
    dy = random_array(rng, x.shape)
    dx, _ = nbn.rms_norm_backward(dy, x, rrms)
    expected_dx, _ = _reference(ref.rms_norm_backward, dy, x, rrms)
    _assert_poisoned_only(dx, expected_dx, 2)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_group_norm_group(rng, bad):
    x = random_array(rng, (2, 6, 4))
    x[1, 3, 2] = bad
    group = (1, slice(2, 4))
    y, mean, rstd = nbn.group_norm_forward(x, 3)
    expected_y, _, _ = _reference(ref.group_norm_forward, x, 3)
    _assert_poisoned_only(y, expected_y, group)
    dy = random_array(rng, x.shape)
    dx, _, _ = nbn.group_norm_backward(dy, x, 3, mean, rstd)
    expected_dx, _, _ = _reference(ref.group_norm_backward, dy, x, 3, mean, rstd)
    _assert_poisoned_only(dx, expected_dx, group)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_instance_norm_instance(rng, bad):
    x = random_array(rng, (2, 3, 5))
    x[0, 2, 1] = bad
    y, mean, rstd = nbn.instance_norm_forward(x)
    expected_y, _, _ = _reference(ref.instance_norm_forward, x)
    _assert_poisoned_only(y, expected_y, (0, 2))
    dy = random_array(rng, x.shape)
    dx, _, _ = nbn.instance_norm_backward(dy, x, mean, rstd)
    expected_dx, _, _ = _reference(ref.instance_norm_backward, dy, x, mean, rstd)
    _assert_poisoned_only(dx, expected_dx, (0, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_column(rng, dtype):
    x = random_array(rng, (6, 4), dtype)
    x[3, 1] = np.nan
    mean, var = nbn.moments(x, axis=0)
    assert np.isnan(mean[1]) and np.isnan(var[1])
    healthy = [0, 2, 3]
    np.testing.assert_allclose(
        mean[healthy], x[:, healthy].astype(np.float64).mean(axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        var[healthy], x[:, healthy].astype(np.float64).var(axis=0), rtol=1e-4
    )
