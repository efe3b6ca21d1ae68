import warnings

import numpy as np
import pytest

import numbanorm as nbn

from helpers import assert_close, random_array

SHAPE = (4, 5, 6)
AXES = [None, 0, 1, 2, -1, -3, (0, 2), (2, 0), (-1, -2), (0, 1, 2)]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]


def _expected(x, axis, ddof, keepdims):
    x64 = x.astype(np.float64)
    return (
        np.mean(x64, axis=axis, keepdims=keepdims),
        np.var(x64, axis=axis, ddof=ddof, keepdims=keepdims),
    )


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_values_match_numpy(rng, axis, keepdims):
    x = random_array(rng, SHAPE)
    mean, var = nbn.moments(x, axis, keepdims=keepdims)
    expected_mean, expected_var = _expected(x, axis, 0, keepdims)
    assert_close(mean, expected_mean, x.dtype)
    assert_close(var, expected_var, x.dtype)


@pytest.mark.parametrize("ddof", [0, 1, 3])
@pytest.mark.parametrize("axis", [None, 1, (0, 2)])
def test_ddof(rng, ddof, axis):
    x = random_array(rng, SHAPE)
    mean, var = nbn.moments(x, axis=axis, ddof=ddof)
    expected_mean, expected_var = _expected(x, axis, ddof, False)
    assert_close(mean, expected_mean, x.dtype)
    assert_close(var, expected_var, x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [None, -1])
def test_result_dtype_and_type_follow_numpy(rng, dtype, axis):
    x = random_array(rng, SHAPE, dtype)
    mean, var = nbn.moments(x, axis=axis)
    np_mean, np_var = np.mean(x, axis=axis), np.var(x, axis=axis)
    assert type(mean) is type(np_mean)
    assert type(var) is type(np_var)
    assert mean.dtype == np_mean.dtype
    assert var.dtype == np_var.dtype
    expected_mean, expected_var = _expected(x, axis, 0, False)
    assert_close(mean, expected_mean, dtype)
    assert_close(var, expected_var, dtype)


def test_axis_none_without_keepdims_returns_numpy_scalars(rng):
    mean, var = nbn.moments(random_array(rng, SHAPE, np.float32))
    assert isinstance(mean, np.float32) and isinstance(var, np.float32)


def test_axis_none_with_keepdims_returns_arrays(rng):
    mean, var = nbn.moments(random_array(rng, SHAPE), keepdims=True)
    assert isinstance(mean, np.ndarray) and isinstance(var, np.ndarray)
    assert mean.shape == var.shape == (1, 1, 1)


def test_accepts_nested_lists():
    data = [[1, 2, 3], [4, 5, 7]]
    mean, var = nbn.moments(data, axis=1)
    np.testing.assert_allclose(mean, np.mean(data, axis=1), rtol=1e-12)
    np.testing.assert_allclose(var, np.var(data, axis=1), rtol=1e-12)
    assert mean.dtype == var.dtype == np.float64


@pytest.mark.parametrize("view", ["transposed", "strided", "reversed", "fortran", "broadcast"])
@pytest.mark.parametrize("axis", [0, -1, (0, 1)])
def test_non_contiguous_inputs(rng, view, axis):
    base = random_array(rng, (12, 10), np.float32)
    x = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "reversed": base[::-1, ::-2],
        "fortran": np.asfortranarray(base),
        "broadcast": np.broadcast_to(base[:1], (7, 10)),
    }[view]
    mean, var = nbn.moments(x, axis=axis)
    expected_mean, expected_var = _expected(x, axis, 0, False)
    assert_close(mean, expected_mean, x.dtype)
    assert_close(var, expected_var, x.dtype)


def test_large_reduction_exercises_block_merging(rng):
    x = random_array(rng, (3, 50_001), np.float32)
    mean, var = nbn.moments(x, axis=1)
    expected_mean, expected_var = _expected(x, 1, 0, False)
    assert_close(mean, expected_mean, np.float32)
    assert_close(var, expected_var, np.float32)


def test_empty_reduction_gives_nan_like_numpy():
    x = np.zeros((0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = nbn.moments(x, axis=0)
        np_mean, np_var = np.mean(x, axis=0), np.var(x, axis=0)
    assert mean.shape == var.shape == (3,)
    np.testing.assert_array_equal(mean, np_mean)
    np.testing.assert_array_equal(var, np_var)


def test_ddof_equal_to_count_matches_numpy(rng):
    x = random_array(rng, (3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, var = nbn.moments(x, axis=1, ddof=4)
        np_var = np.var(x, axis=1, ddof=4)
    np.testing.assert_array_equal(var, np_var)


def test_zero_size_non_reduced_axis():
    x = np.zeros((0, 5))
    mean, var = nbn.moments(x, axis=1)
    assert mean.shape == var.shape == (0,)
    assert mean.dtype == var.dtype == np.float64


def test_input_not_modified(rng):
    x = random_array(rng, SHAPE, np.float32)
    original = x.copy()
    nbn.moments(x, axis=(0, 2), ddof=1)
    np.testing.assert_array_equal(x, original)


def test_variance_is_never_negative_for_constant_data():
    x = np.full((5, 1000), 3.3, dtype=np.float32)
    _, var = nbn.moments(x, axis=1)
    assert np.all(var >= 0)
    np.testing.assert_allclose(var, 0.0, atol=1e-6)
