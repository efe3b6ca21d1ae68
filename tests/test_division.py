"""Division by zero follows NumPy's rules: inf or NaN in its own group, never an exception.

With ``eps=0`` a group of zero variance (an all-zero row for RMS norm) has
``rstd = 1 / 0 = inf`` and its outputs are ``0 * inf = NaN``, as the NumPy
formula gives and as PyTorch's ``layer_norm``, ``group_norm`` and ``rms_norm``
give.  Small inputs run the serial compilation of the kernels and large ones
the parallel kernels; both must behave alike, whereas Python's error model
raised ``ZeroDivisionError`` in the serial one.
"""

import warnings

import numpy as np
import pytest

import numbanorm as nbn
import reference as ref
from helpers import assert_close, random_array
from numbanorm._kernels import SERIAL_MAX_ELEMENTS

DTYPES = [np.float32, np.float64]

# Sizes of the last axis for the inputs below: small ones stay within the
# serial kernels' limit, large ones are just above it.
SIZES = {"small": 16, "large": 1536}

# Parameter gradients sum over many elements, with their rounding errors.
REDUCED_SCALE = 10.0


def _reference(function, *args, **kwargs):
    """``function`` in float64, where 1 / 0 and 0 * inf are not worth a warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return function(*args, **kwargs)


def _assert_like_reference(actual, expected, dtype, *, scale=1.0):
    """``actual`` is NaN or inf exactly where ``expected`` is, and close to it elsewhere."""
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    assert_close(actual[finite], expected[finite], dtype, scale=scale)


def _input(rng, shape, dtype, size):
    x = random_array(rng, shape, dtype)
    assert (x.size <= SERIAL_MAX_ELEMENTS) == (size == "small")
    return x


def _parameters(rng, channels, dtype):
    return (random_array(rng, channels, dtype, loc=1.0, scale=0.5),
            random_array(rng, channels, dtype, loc=0.0, scale=0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_layer_norm_constant_row(rng, size, dtype):
    x = _input(rng, (12, SIZES[size]), dtype, size)
    x[1] = 3.0
    weight, bias = _parameters(rng, x.shape[1], dtype)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)

    y, mean, rstd = nbn.layer_norm_forward(x, weight, bias, eps=0.0)
    expected_y, expected_mean, expected_rstd = _reference(ref.layer_norm_forward, x, weight,
                                                          bias, eps=0.0)
    assert np.isnan(y[1]).all() and np.isinf(rstd[1])
    _assert_like_reference(y, expected_y, dtype)
    assert np.isfinite(np.delete(y, 1, axis=0)).all()
    _assert_like_reference(mean, expected_mean, dtype)
    _assert_like_reference(rstd, expected_rstd, dtype)
    np.testing.assert_array_equal(nbn.layer_norm(x, weight, bias, eps=0.0), y)

    dx, dweight, dbias = nbn.layer_norm_backward(dy, x, mean, rstd, weight)
    expected = _reference(ref.layer_norm_backward, dy, x, mean, rstd, weight)
    assert np.isnan(dx[1]).all()
    _assert_like_reference(dx, expected[0], dtype)
    assert np.isfinite(np.delete(dx, 1, axis=0)).all()
    # Every weight meets the constant row, whose xhat is NaN: PyTorch's too.
    assert np.isnan(dweight).all()
    _assert_like_reference(dbias, expected[2], dtype, scale=REDUCED_SCALE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_rms_norm_zero_row(rng, size, dtype):
    x = _input(rng, (12, SIZES[size]), dtype, size)
    x[1] = 0.0
    weight, _ = _parameters(rng, x.shape[1], dtype)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)

    y, rrms = nbn.rms_norm_forward(x, weight, eps=0.0)
    expected_y, expected_rrms = _reference(ref.rms_norm_forward, x, weight, eps=0.0)
    assert np.isnan(y[1]).all() and np.isinf(rrms[1])
    _assert_like_reference(y, expected_y, dtype)
    assert np.isfinite(np.delete(y, 1, axis=0)).all()
    _assert_like_reference(rrms, expected_rrms, dtype)
    np.testing.assert_array_equal(nbn.rms_norm(x, weight, eps=0.0), y)

    dx, dweight = nbn.rms_norm_backward(dy, x, rrms, weight)
    expected_dx, _ = _reference(ref.rms_norm_backward, dy, x, rrms, weight)
    assert np.isnan(dx[1]).all()
    _assert_like_reference(dx, expected_dx, dtype)
    assert np.isfinite(np.delete(dx, 1, axis=0)).all()
    assert np.isnan(dweight).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_batch_norm_constant_channel(rng, size, dtype):
    x = _input(rng, (4, 3, SIZES[size]), dtype, size)
    x[:, 1] = 3.0
    weight, bias = _parameters(rng, 3, dtype)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)

    y, mean, rstd = nbn.batch_norm_forward(x, weight=weight, bias=bias, eps=0.0)
    expected_y, expected_mean, expected_rstd = _reference(ref.batch_norm_forward, x,
                                                          weight=weight, bias=bias, eps=0.0)
    assert np.isnan(y[:, 1]).all() and np.isinf(rstd[1])
    _assert_like_reference(y, expected_y, dtype)
    assert np.isfinite(np.delete(y, 1, axis=1)).all()
    _assert_like_reference(mean, expected_mean, dtype)
    _assert_like_reference(rstd, expected_rstd, dtype)
    np.testing.assert_array_equal(nbn.batch_norm(x, weight=weight, bias=bias, eps=0.0), y)

    dx, dweight, dbias = nbn.batch_norm_backward(dy, x, mean, rstd, weight)
    expected = _reference(ref.batch_norm_backward, dy, x, mean, rstd, weight)
    assert np.isnan(dx[:, 1]).all() and np.isnan(dweight[1])
    _assert_like_reference(dx, expected[0], dtype)
    assert np.isfinite(np.delete(dx, 1, axis=1)).all()
    _assert_like_reference(dweight, expected[1], dtype, scale=REDUCED_SCALE)
    _assert_like_reference(dbias, expected[2], dtype, scale=REDUCED_SCALE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_group_norm_constant_group(rng, size, dtype):
    # Two groups of two channels; group 0 of sample 1 is constant.
    x = _input(rng, (3, 4, SIZES[size]), dtype, size)
    x[1, :2] = 3.0
    weight, bias = _parameters(rng, 4, dtype)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)

    y, mean, rstd = nbn.group_norm_forward(x, 2, weight, bias, eps=0.0)
    expected_y, expected_mean, expected_rstd = _reference(ref.group_norm_forward, x, 2, weight,
                                                          bias, eps=0.0)
    healthy = np.ones(x.shape, dtype=bool)
    healthy[1, :2] = False
    assert np.isnan(y[1, :2]).all() and np.isinf(rstd[1, 0])
    _assert_like_reference(y, expected_y, dtype)
    assert np.isfinite(y[healthy]).all()
    _assert_like_reference(mean, expected_mean, dtype)
    _assert_like_reference(rstd, expected_rstd, dtype)
    np.testing.assert_array_equal(nbn.group_norm(x, 2, weight, bias, eps=0.0), y)

    dx, dweight, dbias = nbn.group_norm_backward(dy, x, 2, mean, rstd, weight)
    expected = _reference(ref.group_norm_backward, dy, x, 2, mean, rstd, weight)
    assert np.isnan(dx[1, :2]).all() and np.isnan(dweight[:2]).all()
    _assert_like_reference(dx, expected[0], dtype)
    assert np.isfinite(dx[healthy]).all()
    _assert_like_reference(dweight, expected[1], dtype, scale=REDUCED_SCALE)
    _assert_like_reference(dbias, expected[2], dtype, scale=REDUCED_SCALE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_instance_norm_constant_instance(rng, size, dtype):
    x = _input(rng, (4, 3, SIZES[size]), dtype, size)
    x[1, 2] = 3.0
    weight, bias = _parameters(rng, 3, dtype)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)

    y, mean, rstd = nbn.instance_norm_forward(x, weight=weight, bias=bias, eps=0.0)
    expected_y, expected_mean, expected_rstd = _reference(ref.instance_norm_forward, x,
                                                          weight=weight, bias=bias, eps=0.0)
    healthy = np.ones(x.shape, dtype=bool)
    healthy[1, 2] = False
    assert np.isnan(y[1, 2]).all() and np.isinf(rstd[1, 2])
    _assert_like_reference(y, expected_y, dtype)
    assert np.isfinite(y[healthy]).all()
    _assert_like_reference(mean, expected_mean, dtype)
    _assert_like_reference(rstd, expected_rstd, dtype)
    np.testing.assert_array_equal(nbn.instance_norm(x, weight=weight, bias=bias, eps=0.0), y)

    dx, dweight, dbias = nbn.instance_norm_backward(dy, x, mean, rstd, weight)
    expected = _reference(ref.instance_norm_backward, dy, x, mean, rstd, weight)
    assert np.isnan(dx[1, 2]).all() and np.isnan(dweight[2])
    _assert_like_reference(dx, expected[0], dtype)
    assert np.isfinite(dx[healthy]).all()
    _assert_like_reference(dweight, expected[1], dtype, scale=REDUCED_SCALE)
    _assert_like_reference(dbias, expected[2], dtype, scale=REDUCED_SCALE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_moments_ddof_equal_to_count(rng, size, dtype):
    # NumPy divides by n - ddof = 0: inf for a positive sum of squares, NaN
    # for the constant row's zero, with a RuntimeWarning.
    x = _input(rng, (12, SIZES[size]), dtype, size)
    x[1] = 3.0
    count = x.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected_var = np.var(x.astype(np.float64), axis=1, ddof=count)

    with pytest.warns(RuntimeWarning):
        mean, var = nbn.moments(x, axis=1, ddof=count)

    assert np.isnan(var[1]) and np.isinf(np.delete(var, 1)).all()
    _assert_like_reference(var, expected_var, dtype)
    _assert_like_reference(mean, x.astype(np.float64).mean(axis=1), dtype)
