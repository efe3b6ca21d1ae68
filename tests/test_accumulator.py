"""Moments (the mergeable accumulator) and recompute_stats against whole-data-set statistics."""

import numpy as np
import pytest

import numbanorm as nbn

from helpers import assert_close


def _split(rng, x, n_pieces, axis=0):
    """``x`` cut along ``axis`` into ``n_pieces`` pieces of random sizes (some empty)."""
    cuts = np.sort(rng.integers(0, x.shape[axis] + 1, n_pieces - 1))
    return np.split(x, cuts, axis=axis)


# ----------------------------------------------------------------------------
# Moments


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((60,), None),
        ((60, 3), 0),
        ((60, 3, 4, 5), (0, 2, 3)),
        ((60, 4, 3), (0, 1)),
        ((60, 2, 3), None),
    ],
)
def test_moments_of_batches_equal_moments_of_their_concatenation(rng, shape, axis):
    x = 0.5 + 2.0 * rng.standard_normal(shape)
    acc = nbn.Moments()
    for batch in _split(rng, x, 7):
        assert acc.update(batch, axis=axis) is acc
    assert acc.count == x.size // np.mean(x, axis=axis).size
    assert_close(acc.mean, np.mean(x, axis=axis), np.float64)
    for ddof in (0, 1):
        assert_close(acc.var(ddof=ddof), np.var(x, axis=axis, ddof=ddof), np.float64)


def test_full_reduction_gives_scalars(rng):
    acc = nbn.Moments().update(rng.standard_normal((4, 5)))
    assert np.ndim(acc.mean) == 0 and np.ndim(acc.var()) == 0
    assert isinstance(acc.mean, np.float64)


def test_float32_data_with_a_large_offset_keeps_its_variance(rng):
    x = (1e4 + rng.standard_normal((400, 3))).astype(np.float32)
    exact = x.astype(np.float64)
    acc = nbn.Moments()
    for batch in np.array_split(x, 13):
        acc.update(batch, axis=0)
    np.testing.assert_allclose(acc.mean, exact.mean(axis=0), rtol=1e-14)
    # float32 input is summed in float32 blocks around a pivot: numbanorm's
    # 1e-6 bound for float32 statistics, far from the naive formula's error.
    np.testing.assert_allclose(acc.var(ddof=1), exact.var(axis=0, ddof=1), rtol=1e-6)
    # E[x^2] - E[x]^2 in float32 loses the variance to cancellation.
    naive = (x * x).mean(axis=0) - x.mean(axis=0) ** 2
    assert np.abs(naive - exact.var(axis=0)).max() > 0.1


def test_many_tiny_batches(rng):
    x = 3e3 + rng.standard_normal((5000, 2))
    acc = nbn.Moments()
    for batch in _split(rng, x, 3000):
        acc.update(batch, axis=0)
    assert acc.count == 5000
    np.testing.assert_allclose(acc.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(acc.var(), x.var(axis=0), rtol=1e-9)


def test_merge_equals_one_accumulator_over_all_data(rng):
    x = rng.standard_normal((50, 4)) * 3 + 7
    pieces = _split(rng, x, 6)
    workers = [nbn.Moments().update(piece, axis=0) for piece in pieces]
    total = nbn.Moments()
    for worker in workers:
        assert total.merge(worker) is total
    assert total.count == 50
    assert_close(total.mean, x.mean(axis=0), np.float64)
    assert_close(total.var(ddof=1), x.var(axis=0, ddof=1), np.float64)
    merged_count = workers[1].count
    workers[0].merge(workers[1])
    assert workers[1].count == merged_count


def test_empty_batches_and_fresh_accumulators_change_nothing(rng):
    x = rng.standard_normal((10, 3))
    acc = nbn.Moments().update(x, axis=0)
    mean, var = acc.mean, acc.var()
    acc.update(np.empty((0, 3)), axis=0)
    acc.merge(nbn.Moments())
    acc.merge(nbn.Moments().update(np.empty((0, 3)), axis=0))
    assert acc.count == 10
    np.testing.assert_array_equal(acc.mean, mean)
    np.testing.assert_array_equal(acc.var(), var)
    fresh = nbn.Moments().merge(acc)
    assert fresh.count == 10
    np.testing.assert_array_equal(fresh.mean, mean)
    np.testing.assert_array_equal(fresh.var(), var)


def test_integer_data(rng):
    x = rng.integers(-50, 50, (30, 4))
    acc = nbn.Moments().update(x[:11], axis=0).update(x[11:], axis=0)
    assert_close(acc.mean, x.mean(axis=0), np.float64)
    assert_close(acc.var(), x.var(axis=0), np.float64)


def test_mean_is_a_copy(rng):
    acc = nbn.Moments().update(rng.standard_normal((5, 2)), axis=0)
    acc.mean[...] = 0
    assert acc.mean.any()


def test_states_travel_between_accumulators(rng):
    """``state`` out of one accumulator and ``from_state`` into another, as between processes."""
    x = 1e3 + rng.standard_normal((40, 3))
    here = nbn.Moments().update(x[:25], axis=0)
    count, mean, m2 = nbn.Moments().update(x[25:], axis=0).state
    assert count == 15
    assert_close(m2, 15 * x[25:].var(axis=0), np.float64)
    here.merge(nbn.Moments.from_state(count, mean, m2))
    assert_close(here.var(ddof=1), x.var(axis=0, ddof=1), np.float64)
    empty = nbn.Moments.from_state(0, np.full(3, np.nan), np.full(3, np.nan))
    assert empty.count == 0 and here.merge(empty).count == 40
    with pytest.raises(ValueError, match="one shape"):
        nbn.Moments.from_state(2, np.zeros(3), np.zeros(2))


def test_moments_errors(rng):
    acc = nbn.Moments()
    with pytest.raises(ValueError, match="no data yet"):
        _ = acc.mean
    with pytest.raises(ValueError, match="no data yet"):
        acc.var()
    acc.update(rng.standard_normal((4, 3)), axis=0)
    with pytest.raises(
        ValueError, match=r"shape \(5,\) cannot be merged into statistics of shape \(3,\)"
    ):
        acc.update(rng.standard_normal((4, 5)), axis=0)
    with pytest.raises(ValueError, match=r"cannot be merged"):
        acc.merge(nbn.Moments().update(np.ones(4)))
    with pytest.raises(TypeError, match="can only merge another Moments"):
        acc.merge(np.ones(3))
    with pytest.raises(ValueError, match="ddof=4 needs more than 4 elements, got 4"):
        acc.var(ddof=4)
    assert acc.count == 4


# ----------------------------------------------------------------------------
# recompute_stats


def test_recompute_stats_gives_the_exact_statistics_of_the_data_set(rng):
    data = 100.0 + 5.0 * rng.standard_normal((203, 3, 4, 4))
    layer = nbn.BatchNorm(3, dtype=np.float64)
    layer(data[:16])
    batches = (data[start : start + 32] for start in range(0, len(data), 32))
    assert nbn.recompute_stats(layer, batches) is layer
    assert_close(layer.running_mean, data.mean(axis=(0, 2, 3)), np.float64)
    assert_close(layer.running_var, data.var(axis=(0, 2, 3), ddof=1), np.float64)
    assert layer.num_batches_tracked == 7
    assert layer.training


def test_recompute_stats_is_not_the_average_of_batch_variances(rng):
    # Batches drawn from shifted distributions: the variance of the whole
    # data set includes the spread of the batch means.
    batches = [rng.standard_normal((20, 2)) + shift for shift in (-3.0, 0.0, 3.0)]
    data = np.concatenate(batches)
    layer = nbn.recompute_stats(nbn.BatchNorm(2, dtype=np.float64), iter(batches))
    average_of_batch_vars = np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0)
    assert_close(layer.running_var, data.var(axis=0, ddof=1), np.float64)
    assert (layer.running_var > 2 * average_of_batch_vars).all()


def test_recompute_stats_with_forward_and_channels_last_float32(rng):
    images = rng.standard_normal((50, 6, 5, 1)).astype(np.float32)
    weights = rng.standard_normal((1, 3)).astype(np.float32)

    def features(batch):
        return 1e4 + batch @ weights

    layer = nbn.BatchNorm(3, axis=-1)
    nbn.recompute_stats(layer, np.array_split(images, 6), forward=features)
    exact = features(images).astype(np.float64)
    np.testing.assert_allclose(layer.running_mean, exact.mean(axis=(0, 1, 2)), rtol=1e-7)
    np.testing.assert_allclose(layer.running_var, exact.var(axis=(0, 1, 2), ddof=1), rtol=1e-6)
    assert layer.running_mean.dtype == np.float32


@pytest.mark.parametrize("axis", [1, 0])
def test_recompute_stats_of_instance_norm_averages_instance_stats(rng, axis):
    data = 2.0 + rng.standard_normal((17, 3, 6))
    layer = nbn.InstanceNorm(3, track_running_stats=True, axis=axis, dtype=np.float64)
    batches = (
        _split(rng, data, 4) if axis == 1 else [b.swapaxes(0, 1) for b in _split(rng, data, 4)]
    )
    nbn.recompute_stats(layer, batches)
    assert_close(layer.running_mean, data.mean(axis=2).mean(axis=0), np.float64)
    assert_close(layer.running_var, data.var(axis=2, ddof=1).mean(axis=0), np.float64)
    assert layer.num_batches_tracked == 4


def test_evaluation_with_recomputed_stats_normalizes_the_data_set(rng):
    data = 3.0 + 2.0 * rng.standard_normal((400, 2))
    layer = nbn.recompute_stats(nbn.BatchNorm(2, dtype=np.float64), np.split(data, 8))
    y = layer.eval()(data)
    assert_close(y.mean(axis=0), np.zeros(2), np.float64)
    assert_close(y.var(axis=0, ddof=1), np.full(2, 1.0), np.float64, scale=1e5)


def test_recompute_stats_errors(rng):
    with pytest.raises(TypeError, match="track_running_stats=True"):
        nbn.recompute_stats(nbn.BatchNorm(3, track_running_stats=False), [np.ones((4, 3))])
    with pytest.raises(TypeError, match="track_running_stats=True"):
        nbn.recompute_stats(nbn.LayerNorm(3), [np.ones((4, 3))])
    layer = nbn.BatchNorm(3)
    with pytest.raises(ValueError, match="got no batches"):
        nbn.recompute_stats(layer, iter([]))
    with pytest.raises(ValueError, match="expects 3 channels on axis 1"):
        nbn.recompute_stats(layer, [np.ones((4, 3)), np.ones((4, 2))])
    with pytest.raises(ValueError, match="ddof=1 needs more than 1 elements"):
        nbn.recompute_stats(layer, [np.ones((1, 3))])
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nbn.recompute_stats(nbn.InstanceNorm(3, track_running_stats=True), [np.ones((4, 3, 1))])
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0
