"""float32 statistics of data with a large offset keep their variance (Welford, not E[x²] − E[x]²)."""

import numpy as np
import pytest

import numbanorm as nbn

OFFSET = 1e4
RELATIVE_TOLERANCE = 1e-3


def _offset_rows(rng, shape):
    return (OFFSET + rng.standard_normal(shape)).astype(np.float32)


def _relative_error(actual, truth):
    return np.max(np.abs(np.asarray(actual, dtype=np.float64) - truth) / np.abs(truth))


@pytest.mark.parametrize("row_length", [1000, 4096, 65_537])
def test_moments_rows(rng, row_length):
    x = _offset_rows(rng, (4, row_length))
    _, var = nbn.moments(x, axis=1)
    assert var.dtype == np.float32
    assert _relative_error(var, x.astype(np.float64).var(axis=1)) < RELATIVE_TOLERANCE


def test_moments_columns(rng):
    x = _offset_rows(rng, (4096, 8))
    _, var = nbn.moments(x, axis=0)
    assert _relative_error(var, x.astype(np.float64).var(axis=0)) < RELATIVE_TOLERANCE


def test_moments_whole_array(rng):
    x = _offset_rows(rng, (64, 512))
    mean, var = nbn.moments(x)
    assert _relative_error(var, x.astype(np.float64).var()) < RELATIVE_TOLERANCE
    assert _relative_error(mean, x.astype(np.float64).mean()) < 1e-6


@pytest.mark.parametrize("row_length", [1000, 4096])
def test_layer_norm_rstd(rng, row_length):
    x = _offset_rows(rng, (4, row_length))
    eps = 1e-5
    _, _, rstd = nbn.layer_norm_forward(x, eps=eps)
    truth = 1.0 / np.sqrt(x.astype(np.float64).var(axis=1) + eps)
    assert _relative_error(rstd, truth) < RELATIVE_TOLERANCE


def test_layer_norm_output_has_unit_variance(rng):
    x = _offset_rows(rng, (4, 4096))
    y = nbn.layer_norm(x, eps=0.0)
    np.testing.assert_allclose(y.astype(np.float64).var(axis=1), 1.0, rtol=2 * RELATIVE_TOLERANCE)
    np.testing.assert_allclose(y.astype(np.float64).mean(axis=1), 0.0, atol=2e-3)


@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_rstd(rng, axis):
    x = _offset_rows(rng, (64, 8, 16)) if axis == 1 else _offset_rows(rng, (64, 16, 8))
    eps = 1e-5
    _, _, rstd = nbn.batch_norm_forward(x, eps=eps, axis=axis)
    reduced = tuple(a for a in range(3) if a != axis % 3)
    truth = 1.0 / np.sqrt(x.astype(np.float64).var(axis=reduced) + eps)
    assert _relative_error(rstd, truth) < RELATIVE_TOLERANCE


def test_group_and_instance_norm_rstd(rng):
    x = _offset_rows(rng, (2, 4, 2048))
    eps = 1e-5
    _, _, rstd = nbn.group_norm_forward(x, 2, eps=eps)
    truth = 1.0 / np.sqrt(x.astype(np.float64).reshape(2, 2, -1).var(axis=2) + eps)
    assert _relative_error(rstd, truth) < RELATIVE_TOLERANCE
    _, _, rstd = nbn.instance_norm_forward(x, eps=eps)
    truth = 1.0 / np.sqrt(x.astype(np.float64).var(axis=2) + eps)
    assert _relative_error(rstd, truth) < RELATIVE_TOLERANCE


def test_float16_statistics_are_accumulated_in_float32(rng):
    x = (100 + rng.standard_normal((4, 4096))).astype(np.float16)
    _, _, rstd = nbn.layer_norm_forward(x, eps=1e-5)
    truth = 1.0 / np.sqrt(x.astype(np.float64).var(axis=1) + 1e-5)
    assert _relative_error(rstd, truth) < 1e-3
