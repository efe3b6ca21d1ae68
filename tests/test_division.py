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
from numbanorm._kernels import SERIAL_MAX_ELEMENTS

import reference as ref
from helpers import assert_close, random_array

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
    return (
        random_array(rng, channels, dtype, loc=1.0, scale=0.5),
        random_array(rng, channels, dtype, loc=0.0, scale=0.5),
    )


# norm: (shape with the last axis sized by SIZES, the constant group's index,
# its value, arguments after x, index of the weights whose gradient meets it).
# Every weight of layer and RMS norm meets the constant row, whose xhat is
# NaN: their whole dweight is NaN, as PyTorch's is.
CONSTANT_GROUPS = {
    "layer_norm": ((12,), np.s_[1], 3.0, (), np.s_[:]),
    "rms_norm": ((12,), np.s_[1], 0.0, (), np.s_[:]),
    "batch_norm": ((4, 3), np.s_[:, 1], 3.0, (), np.s_[1]),
    "group_norm": ((3, 4), np.s_[1, :2], 3.0, (2,), np.s_[:2]),  # 2 groups of 2 channels
    "instance_norm": ((4, 3), np.s_[1, 2], 3.0, (), np.s_[2]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("norm", CONSTANT_GROUPS)
def test_a_constant_group_is_nan_alone(rng, norm, size, dtype):
    shape, group, value, extra, poisoned_weights = CONSTANT_GROUPS[norm]
    x = _input(rng, (*shape, SIZES[size]), dtype, size)
    x[group] = value
    weight, bias = _parameters(rng, x.shape[-1] if len(shape) == 1 else shape[1], dtype)
    affine = dict(weight=weight) if norm == "rms_norm" else dict(weight=weight, bias=bias)
    dy = random_array(rng, x.shape, dtype, loc=0.0, scale=1.0)
    healthy = np.ones(x.shape, dtype=bool)
    healthy[group] = False

    y, *stats = getattr(nbn, f"{norm}_forward")(x, *extra, eps=0.0, **affine)
    expected_y, *expected_stats = _reference(
        getattr(ref, f"{norm}_forward"), x, *extra, eps=0.0, **affine
    )
    assert np.isnan(y[group]).all() and np.isinf(stats[-1]).any()
    assert np.isfinite(y[healthy]).all()
    _assert_like_reference(y, expected_y, dtype)
    for stat, expected in zip(stats, expected_stats):
        _assert_like_reference(stat, expected, dtype)
    np.testing.assert_array_equal(getattr(nbn, norm)(x, *extra, eps=0.0, **affine), y)

    dx, dweight, *dbias = getattr(nbn, f"{norm}_backward")(dy, x, *extra, *stats, weight=weight)
    expected_dx, expected_dweight, *expected_dbias = _reference(
        getattr(ref, f"{norm}_backward"), dy, x, *extra, *stats, weight=weight
    )
    assert np.isnan(dx[group]).all() and np.isfinite(dx[healthy]).all()
    _assert_like_reference(dx, expected_dx, dtype)
    assert np.isnan(dweight[poisoned_weights]).all()
    _assert_like_reference(dweight, expected_dweight, dtype, scale=REDUCED_SCALE)
    for grad, expected in zip(dbias, expected_dbias):
        _assert_like_reference(grad, expected, dtype, scale=REDUCED_SCALE)


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
