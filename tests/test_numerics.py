"""float32 statistics of data with a large offset keep their variance (Welford, not E[x²] − E[x]²).

The bar: a relative error of the variance of at most 1e-6 on data with mean
1e4 and standard deviation 1, for every norm and layout (PyTorch's float32
layer norm gives about 3e-4 there).  A float32 result is itself rounded to
about 6e-8.
"""

import numpy as np
import pytest

import numbanorm as nbn

import reference

OFFSET = 1e4
RELATIVE_TOLERANCE = 1e-6


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


@pytest.mark.parametrize("drift", [0.0, 10.0, 1e3])
def test_moments_columns_of_drifting_data(rng, drift):
    """Columns summed along a drift keep the variance: the pivots follow the data."""
    rows = 200_000
    ramp = np.linspace(0.0, drift, rows)[:, None]
    x = (OFFSET + ramp + rng.standard_normal((rows, 8))).astype(np.float32)
    _, var = nbn.moments(x, axis=0)
    assert _relative_error(var, x.astype(np.float64).var(axis=0)) < RELATIVE_TOLERANCE


def test_moments_whole_array(rng):
    x = _offset_rows(rng, (64, 512))
    mean, var = nbn.moments(x)
    assert _relative_error(var, x.astype(np.float64).var()) < RELATIVE_TOLERANCE
    assert _relative_error(mean, x.astype(np.float64).mean()) < 1e-6


def test_layer_norm_output_has_unit_variance(rng):
    x = _offset_rows(rng, (4, 4096))
    y = nbn.layer_norm(x, eps=0.0)
    np.testing.assert_allclose(y.astype(np.float64).var(axis=1), 1.0, rtol=2 * RELATIVE_TOLERANCE)
    np.testing.assert_allclose(y.astype(np.float64).mean(axis=1), 0.0, atol=2e-3)


def test_float16_statistics_are_accumulated_in_float32(rng):
    x = (100 + rng.standard_normal((4, 4096))).astype(np.float16)
    _, _, rstd = nbn.layer_norm_forward(x, eps=1e-5)
    truth = 1.0 / np.sqrt(x.astype(np.float64).var(axis=1) + 1e-5)
    assert _relative_error(rstd, truth) < 1e-3


def _variance_from_rstd(rstd):
    """The variance a forward used, from its float32 ``rstd`` computed with ``eps=0``."""
    return 1.0 / np.asarray(rstd, dtype=np.float64) ** 2


NORM_LAYOUTS = {
    "layer_norm": (lambda x: nbn.layer_norm_forward(x, eps=0.0)[2], (4, 4096), (1,), None),
    "batch_norm NCHW": (
        lambda x: nbn.batch_norm_forward(x, eps=0.0)[2],
        (16, 8, 24, 24),
        (0, 2, 3),
        None,
    ),
    "batch_norm 2-D": (lambda x: nbn.batch_norm_forward(x, eps=0.0)[2], (8192, 16), (0,), None),
    "batch_norm NHWC": (
        lambda x: nbn.batch_norm_forward(x, eps=0.0, axis=-1)[2],
        (16, 24, 24, 8),
        (0, 1, 2),
        None,
    ),
    "group_norm NCHW": (
        lambda x: nbn.group_norm_forward(x, 4, eps=0.0)[2],
        (4, 8, 24, 24),
        (2, 3, 4),
        (4, 4, 2, 24, 24),
    ),
    "group_norm NHWC": (
        lambda x: nbn.group_norm_forward(x, 4, eps=0.0, axis=-1)[2],
        (4, 24, 24, 8),
        (1, 2, 4),
        (4, 24, 24, 4, 2),
    ),
    "instance_norm NCHW": (
        lambda x: nbn.instance_norm_forward(x, eps=0.0)[2],
        (4, 8, 24, 24),
        (2, 3),
        None,
    ),
    "instance_norm NHWC": (
        lambda x: nbn.instance_norm_forward(x, eps=0.0, axis=-1)[2],
        (4, 24, 24, 8),
        (1, 2),
        None,
    ),
}


@pytest.mark.parametrize("name", NORM_LAYOUTS)
def test_every_norm_and_layout_keeps_the_variance(rng, name):
    forward, shape, reduced, grouped_shape = NORM_LAYOUTS[name]
    x = _offset_rows(rng, shape)
    exact = x.astype(np.float64).reshape(grouped_shape or shape).var(axis=reduced)
    variance = _variance_from_rstd(forward(x)).reshape(exact.shape)
    assert _relative_error(variance, exact) < RELATIVE_TOLERANCE


def test_rms_norm_keeps_the_mean_square(rng):
    x = _offset_rows(rng, (4, 4096))
    _, rrms = nbn.rms_norm_forward(x, eps=0.0)
    exact = (x.astype(np.float64) ** 2).mean(axis=1)
    assert _relative_error(_variance_from_rstd(rrms), exact) < RELATIVE_TOLERANCE


def _forward(module, norm, x, axis, **kwargs):
    """``norm``'s forward in ``module`` (numbanorm or the reference; group norm: 4 groups)."""
    groups = (4,) if norm == "group_norm" else ()
    return getattr(module, f"{norm}_forward")(x, *groups, axis=axis, **kwargs)


def _backward(module, norm, dy, x, stats, axis, weight=None):
    groups = (4,) if norm == "group_norm" else ()
    return getattr(module, f"{norm}_backward")(dy, x, *groups, *stats, weight, axis=axis)


# One case per kernel path: per-element weights, per-segment weights, slabs,
# groups split between tasks or whole in one, and the serial variant.
GRADIENT_CASES = {
    "layer_norm": ("layer_norm", (64, 1024), (1024,), -1),
    "layer_norm small": ("layer_norm", (8, 256), (256,), -1),
    "batch_norm NCHW": ("batch_norm", (64, 16, 64), (16,), 1),
    "batch_norm NCHW split": ("batch_norm", (64, 4, 256), (4,), 1),
    "batch_norm 2-D": ("batch_norm", (4096, 8), (8,), 1),
    "batch_norm NHWC": ("batch_norm", (16, 24, 24, 8), (8,), -1),
    "batch_norm small": ("batch_norm", (64, 3), (3,), 1),
    "group_norm NCHW": ("group_norm", (16, 8, 24, 24), (8,), 1),
    "group_norm NHWC": ("group_norm", (16, 24, 24, 8), (8,), -1),
    "instance_norm NCHW": ("instance_norm", (4, 8, 24, 24), (8,), 1),
    "instance_norm NHWC": ("instance_norm", (16, 24, 24, 8), (8,), -1),
    "instance_norm split": ("instance_norm", (2, 3, 8192), (3,), 1),
}


@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_outputs_and_gradients_of_offset_data_keep_float32_accuracy(rng, name):
    """Float32 statistics round a mean of 1e4 by up to 5e-4; the gradients do not show it.

    ``y`` is formed around the float64 mean, and the backward, given the
    forward's float32 statistics, refines the mean from ``x``: ``dx`` and
    the parameter gradients match the float64 truth to float32 accuracy
    (with the rounded mean taken as exact they were off by up to 3e-4).
    """
    norm, shape, param_shape, axis = GRADIENT_CASES[name]
    x = _offset_rows(rng, shape)
    dy = rng.standard_normal(shape).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(param_shape)).astype(np.float32)
    bias = rng.standard_normal(param_shape).astype(np.float32)
    y, *stats = _forward(nbn, norm, x, axis, weight=weight, bias=bias)
    dx, dweight, dbias = _backward(nbn, norm, dy, x, stats, axis, weight)
    y_ref, *exact_stats = _forward(reference, norm, x, axis, weight=weight, bias=bias)
    dx_ref, dweight_ref, dbias_ref = _backward(reference, norm, dy, x, exact_stats, axis, weight)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-6 * np.abs(y_ref).max())
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=2e-6 * np.abs(dx_ref).max())
    np.testing.assert_allclose(dweight, dweight_ref, rtol=0, atol=2e-6 * np.abs(dweight_ref).max())
    np.testing.assert_allclose(dbias, dbias_ref, rtol=0, atol=2e-6 * np.abs(dbias_ref).max())


# ----------------------------------------------------------------------------
# Data of large magnitude: right where the result fits, loud where it cannot be


OVERFLOW_CASES = {
    "layer_norm": ("layer_norm", (4, 4096), -1),
    "layer_norm small": ("layer_norm", (4, 100), -1),
    "batch_norm NCHW": ("batch_norm", (8, 16, 32, 32), 1),
    "batch_norm 2-D": ("batch_norm", (4096, 8), 1),
    "batch_norm NHWC": ("batch_norm", (64, 8, 8, 8), -1),
    "batch_norm small": ("batch_norm", (64, 3), 1),
    "group_norm NCHW": ("group_norm", (4, 8, 32, 32), 1),
    "group_norm NHWC": ("group_norm", (32, 16, 16, 8), -1),
    "instance_norm NCHW": ("instance_norm", (4, 8, 32, 32), 1),
    "instance_norm NHWC": ("instance_norm", (32, 16, 16, 8), -1),
    "rms_norm": ("rms_norm", (4, 4096), -1),
    "rms_norm small": ("rms_norm", (4, 100), -1),
}


@pytest.mark.parametrize("scale", [1e15, 1e19, 1e30, 1e37])
@pytest.mark.parametrize("name", OVERFLOW_CASES)
def test_float32_data_of_large_magnitude_normalizes_right(rng, name, scale):
    """Squares of such data overflow float32 (they once gave ``rstd = 0`` and ``y = 0``)."""
    norm, shape, axis = OVERFLOW_CASES[name]
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps = {"eps": 0.0} if norm == "rms_norm" else {}  # the reference has no default there
    y, *stats = _forward(nbn, norm, x, axis, **eps)
    y_ref, *stats_ref = _forward(reference, norm, x, axis, **eps)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5 * np.abs(y_ref).max())
    for stat, stat_ref in zip(stats, stats_ref):
        np.testing.assert_allclose(stat, stat_ref, rtol=1e-6, atol=1e-6 * np.abs(stat_ref).max())
    dx = _backward(nbn, norm, dy, x, stats, axis)[0]
    with np.errstate(over="ignore", invalid="ignore"):  # the reference's sums of squares
        dx_ref = _backward(reference, norm, dy, x, stats_ref, axis)[0]
    if scale < 1e18:
        np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-5 * np.abs(dx_ref).max())
    else:
        # dx's coefficient of x - mean scales like 1/var, below float32's range:
        # every group that needs it is NaN, none finite and wrong.
        finite = np.isfinite(dx)
        np.testing.assert_allclose(
            dx[finite], dx_ref[finite], rtol=0, atol=1e-5 * np.abs(dx_ref).max()
        )
        assert not finite.all()


@pytest.mark.parametrize("shape, axis", [((4, 5000), 1), ((5000, 4), 0), ((20000,), None)])
def test_moments_of_large_float32_values_are_right_where_they_fit(rng, shape, axis):
    x = (4e18 * rng.standard_normal(shape)).astype(np.float32)  # variance about 1.6e37
    mean, var = nbn.moments(x, axis=axis)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(var, exact.var(axis=axis), rtol=1e-6)
    np.testing.assert_allclose(
        mean, exact.mean(axis=axis), rtol=0, atol=1e-6 * np.sqrt(exact.var(axis=axis)).max()
    )


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # the variance: inf
def test_mean_near_the_float32_maximum_is_finite_and_right():
    x = np.full((4, 4096), 3e38, np.float32)
    x[:, ::2] = 2.9e38
    mean, _ = nbn.moments(x, axis=1)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=1), rtol=1e-7)
    y = nbn.layer_norm(x)
    np.testing.assert_allclose(y, reference.layer_norm_forward(x)[0], rtol=0, atol=1e-5)


def test_a_variance_beyond_float32_is_inf_not_finite():
    x = (1e37 * np.random.default_rng(0).standard_normal((4, 5000))).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="overflow"):
        _, var = nbn.moments(x, axis=1)
    assert np.isposinf(var).all()


@pytest.mark.parametrize("shape", [(4, 100), (4, 5000)])
def test_float64_variance_overflow_is_loud(shape):
    """Beyond about 1e154 the float64 variance overflows: NaN, never a finite wrong answer."""
    x = 1e200 * np.random.default_rng(0).standard_normal(shape)
    y, mean, rstd = nbn.layer_norm_forward(x)
    assert np.isnan(y).all() and np.isnan(rstd).all()
