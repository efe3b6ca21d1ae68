"""numbanorm.dask.moments on a two-process Dask cluster against NumPy on the materialized array."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import numbanorm as nbn  # noqa: E402
from numbanorm.dask import moments  # noqa: E402

from helpers import assert_close  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A client of a local cluster of two worker processes, the default scheduler while open."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def _computed(darr, **kwargs):
    mean, var = moments(darr, **kwargs)
    assert isinstance(mean, da.Array) and isinstance(var, da.Array)
    return dask.compute(mean, var)


@pytest.mark.parametrize(
    "shape, chunks, axis, keepdims",
    [
        ((50, 3, 4, 5), (7, 3, 2, 5), (0, 2, 3), False),  # batch norm, NCHW
        ((20, 4, 5, 3), (6, 4, 3, 3), (0, 1, 2), False),  # batch norm, channels-last
        ((30, 6), (4, 6), None, False),  # everything: 0-d results
        ((30, 6), (4, 4), None, True),
        ((12, 5, 7), (5, 2, 3), 1, True),  # a middle axis, chunked kept axes
        ((12, 5, 7), (5, 2, 3), (2, 0), False),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_equal_numpy_on_the_materialized_array(
    client, rng, shape, chunks, axis, keepdims, dtype, ddof
):
    data = (0.5 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    mean, var = _computed(
        da.from_array(data, chunks=chunks), axis=axis, ddof=ddof, keepdims=keepdims
    )
    expected_dtype = nbn.moments(data, axis=axis)[0].dtype
    exact = data.astype(np.float64)
    for actual, truth in (
        (mean, np.mean(exact, axis=axis, keepdims=keepdims)),
        (var, np.var(exact, axis=axis, ddof=ddof, keepdims=keepdims)),
    ):
        assert actual.dtype == expected_dtype
        assert isinstance(actual, np.generic if np.ndim(truth) == 0 else np.ndarray)
        assert_close(actual, truth, dtype)


def test_reducing_no_axis_gives_the_data_and_zero_variance(client, rng):
    data = rng.standard_normal((8, 6))
    mean, var = _computed(da.from_array(data, chunks=(3, 4)), axis=())
    np.testing.assert_array_equal(mean, data)
    np.testing.assert_array_equal(var, np.zeros_like(data))


@pytest.mark.parametrize("split_every", [2, 3, {0: 2, 1: 4}])
def test_deep_trees_merge_exactly(client, rng, split_every):
    data = rng.standard_normal((64, 3, 40))
    darr = da.from_array(data, chunks=(5, 3, 7))  # 13 x 6 chunks along the reduced axes
    mean, var = _computed(darr, axis=(0, 2), ddof=1, split_every=split_every)
    assert_close(mean, data.mean(axis=(0, 2)), np.float64)
    assert_close(var, data.var(axis=(0, 2), ddof=1), np.float64)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.bool_])
def test_result_dtypes_are_those_of_numbanorm_moments(client, rng, dtype):
    data = rng.integers(0, 2, (9, 4)).astype(dtype)
    mean, var = _computed(da.from_array(data, chunks=(4, 2)), axis=0)
    expected = nbn.moments(data, axis=0)
    for actual, truth in zip((mean, var), expected):
        assert actual.dtype == truth.dtype
        assert_close(actual, truth.astype(np.float64), truth.dtype)


def test_float32_with_a_large_offset_keeps_its_variance(client, rng):
    """Mean 1e4, standard deviation 1: E[x**2] - E[x]**2 in float32 cancels to noise."""
    data = (1e4 + rng.standard_normal((4096, 3))).astype(np.float32)
    darr = da.from_array(data, chunks=(512, 3))
    truth = data.astype(np.float64).var(axis=0)
    naive = (darr**2).mean(axis=0, dtype=np.float32) - darr.mean(axis=0, dtype=np.float32) ** 2
    naive_error = np.abs(naive.compute() - truth) / truth
    assert naive.dtype == np.float32 and naive_error.min() > 0.5
    _, var = _computed(darr, axis=0)
    assert var.dtype == np.float32
    assert np.all(np.abs(var - truth) / truth < 1e-6)


@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_population_statistics_of_a_chunked_data_set(client, rng, axis):
    shape = (40, 3, 4, 5) if axis == 1 else (40, 4, 5, 3)
    data = (2.0 + rng.standard_normal(shape)).astype(np.float32)
    channel_axis = axis % data.ndim
    layer = nbn.BatchNorm(3, axis=axis)
    mean, var = moments(
        da.from_array(data, chunks=(6,) + shape[1:]),
        axis=tuple(a for a in range(data.ndim) if a != channel_axis),
        ddof=1,
    )
    layer.running_mean[...], layer.running_var[...] = dask.compute(mean, var)
    batches = nbn.recompute_stats(nbn.BatchNorm(3, axis=axis), np.split(data, 8))
    whole = np.moveaxis(data.astype(np.float64), channel_axis, 0).reshape(3, -1)
    for name, truth in (
        ("running_mean", whole.mean(axis=1)),
        ("running_var", whole.var(axis=1, ddof=1)),
    ):
        assert_close(getattr(layer, name), truth, np.float32, err_msg=name)
        assert_close(getattr(layer, name), getattr(batches, name), np.float32, err_msg=name)


def test_chunks_of_unknown_size(client, rng):
    data = rng.standard_normal((60, 4))
    darr = da.from_array(data, chunks=(7, 4))
    kept = darr[darr[:, 0] > 0]  # boolean indexing: chunk sizes unknown until computed
    assert np.isnan(kept.shape[0])
    mean, var = _computed(kept, axis=0, ddof=1)
    selected = data[data[:, 0] > 0]
    assert_close(mean, selected.mean(axis=0), np.float64)
    assert_close(var, selected.var(axis=0, ddof=1), np.float64)


def test_empty_reduction_warns_and_gives_nan_as_numbanorm_moments():
    darr = da.zeros((0, 3), chunks=(1, 3))
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        mean, var = moments(darr, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, var = dask.compute(mean, var, scheduler="sync")
    assert np.isnan(mean).all() and np.isnan(var).all() and mean.shape == (3,)
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        moments(da.ones((1, 3), chunks=1), axis=0, ddof=1)


def test_arguments_are_checked_as_in_numbanorm_moments():
    with pytest.raises(TypeError, match="real floating"):
        moments(da.ones(3, dtype=np.complex128))
    with pytest.raises(np.exceptions.AxisError):
        moments(da.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        moments(da.ones((2, 3)), axis=(0, 0))


def test_array_likes_are_wrapped(rng):
    data = rng.standard_normal((5, 3))
    mean, var = dask.compute(*moments(data, axis=0), scheduler="sync")
    assert_close(mean, data.mean(axis=0), np.float64)
    assert_close(var, data.var(axis=0), np.float64)


# ----------------------------------------------------------------------------
# where


def _numpy_moments_where(data, where, axis, ddof, keepdims):
    """np.mean and np.var of the selected elements, float64, their warnings silenced."""
    exact = data.astype(np.float64)
    where = np.broadcast_to(where, data.shape)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (
            np.mean(exact, axis=axis, where=where, keepdims=keepdims),
            np.var(exact, axis=axis, ddof=ddof, where=where, keepdims=keepdims),
        )


@pytest.mark.parametrize(
    "shape, chunks, where_shape, where_chunks, axis, keepdims",
    [
        # Padded sequences (N, C, T), the mask (N, 1, T): batch norm's statistics.
        ((30, 3, 11), (7, 3, 4), (30, 1, 11), None, (0, 2), False),
        ((30, 3, 11), (7, 2, 4), (30, 1, 11), (5, 1, 11), (0, 2), True),
        # A full mask chunked otherwise than the data, and a full reduction.
        ((24, 6), (5, 4), (24, 6), (8, 3), None, False),
        ((24, 6), (5, 4), (24, 6), (8, 3), 0, True),
        # A mask of fewer dimensions, and a middle axis with chunked kept axes.
        ((12, 5, 7), (5, 2, 3), (7,), None, 1, False),
        ((12, 5, 7), (5, 2, 3), (12, 5, 1), (4, 5, 1), (2, 0), False),
    ],
)
@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_with_where_equal_numpy_on_the_gathered_elements(
    client, rng, shape, chunks, where_shape, where_chunks, axis, keepdims, ddof
):
    data = (0.5 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    where = rng.random(where_shape) < 0.6
    expected = _numpy_moments_where(data, where, axis, ddof, keepdims)
    given = where if where_chunks is None else da.from_array(where, chunks=where_chunks)
    darr = da.from_array(data, chunks=chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # for the NumPy mask; checked below
        results = _computed(darr, axis=axis, ddof=ddof, keepdims=keepdims, where=given)
    for actual, truth in zip(results, expected):
        assert actual.dtype == np.float32
        assert np.shape(actual) == np.shape(truth)
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(truth))
        assert_close(np.nan_to_num(actual), np.nan_to_num(truth), np.float32)


def test_where_counts_exactly_with_a_large_offset(client, rng):
    data = 1e4 + rng.standard_normal((2000, 3))
    where = rng.random((2000, 1)) < 0.3
    mean, var = _computed(
        da.from_array(data, chunks=(150, 3)), axis=0, ddof=1, where=da.from_array(where, 150)
    )
    assert_close(mean, np.mean(data, axis=0, where=where), np.float64)
    assert_close(var, np.var(data, axis=0, ddof=1, where=where), np.float64)


def test_an_array_where_selecting_nothing_warns_when_called():
    data = np.arange(12.0).reshape(4, 3)
    where = np.array([True, True, False])
    with pytest.warns(RuntimeWarning) as record:
        mean, var = moments(da.from_array(data, chunks=2), axis=0, where=where[None] & (data < 4))
    messages = {str(w.message) for w in record}
    assert messages == {"Mean of empty slice", "Degrees of freedom <= 0 for slice"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, var = dask.compute(mean, var, scheduler="sync")
    np.testing.assert_array_equal(np.isnan(mean), [False, False, True])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        moments(da.from_array(data, chunks=2), axis=0, ddof=1, where=data < 3)
    assert [str(w.message) for w in record] == ["Degrees of freedom <= 0 for slice"]


def test_a_dask_where_selecting_nothing_warns_when_computed():
    data = np.arange(12.0).reshape(4, 3)
    where = da.from_array(np.array([[True, False, False]] * 4), chunks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, var = moments(da.from_array(data, chunks=2), axis=0, ddof=1, where=where)
    with pytest.warns(RuntimeWarning) as record:
        mean, var = dask.compute(mean, var, scheduler="sync")
    messages = {str(w.message) for w in record}
    assert {"Mean of empty slice", "Degrees of freedom <= 0 for slice"} <= messages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = _numpy_moments_where(data, where.compute(), 0, 1, False)
    for actual, truth in zip((mean, var), expected):
        np.testing.assert_array_equal(actual, truth)


def test_where_is_checked():
    darr = da.ones((4, 3), chunks=2)
    for where in (np.ones((4, 3)), da.ones((4, 3), chunks=2)):
        with pytest.raises(TypeError, match="where must be a boolean array"):
            moments(darr, where=where)
    for where in (np.ones((2, 3), bool), da.ones((4, 2), dtype=bool, chunks=2)):
        with pytest.raises(ValueError, match=r"where of shape .* does not broadcast.*\(4, 3\)"):
            moments(darr, where=where)


def test_import_error_names_the_extra():
    code = "import sys; sys.modules['dask'] = None; import numbanorm.dask"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert 'the "dask" extra (pip install ".[dask]" in a numbanorm clone' in result.stderr
    assert 'or pip install "dask[array]"' in result.stderr
