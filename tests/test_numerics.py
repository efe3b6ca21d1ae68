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
    "batch_norm NCHW": (lambda x: nbn.batch_norm_forward(x, eps=0.0)[2], (16, 8, 24, 24),
                        (0, 2, 3), None),
    "batch_norm 2-D": (lambda x: nbn.batch_norm_forward(x, eps=0.0)[2], (8192, 16), (0,), None),
    "batch_norm NHWC": (lambda x: nbn.batch_norm_forward(x, eps=0.0, axis=-1)[2],
                        (16, 24, 24, 8), (0, 1, 2), None),
    "group_norm NCHW": (lambda x: nbn.group_norm_forward(x, 4, eps=0.0)[2], (4, 8, 24, 24),
                        (2, 3, 4), (4, 4, 2, 24, 24)),
    "group_norm NHWC": (lambda x: nbn.group_norm_forward(x, 4, eps=0.0, axis=-1)[2],
                        (4, 24, 24, 8), (1, 2, 4), (4, 24, 24, 4, 2)),
    "instance_norm NCHW": (lambda x: nbn.instance_norm_forward(x, eps=0.0)[2], (4, 8, 24, 24),
                           (2, 3), None),
    "instance_norm NHWC": (lambda x: nbn.instance_norm_forward(x, eps=0.0, axis=-1)[2],
                           (4, 24, 24, 8), (1, 2), None),
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


OFFSET_CASES = {  # one per elementwise path: per-element weights, per-segment, slab
    "layer_norm": ("layer_norm", (64, 1024), (1024,), -1),
    "instance_norm NCHW": ("instance_norm", (4, 8, 24, 24), (8,), 1),
    "batch_norm NHWC": ("batch_norm", (16, 24, 24, 8), (8,), -1),
}


@pytest.mark.parametrize("name", OFFSET_CASES)
def test_outputs_and_gradients_of_offset_data_keep_float32_accuracy(rng, name):
    """``x - mean`` is formed exactly around a rounded mean: no 1e4-sized rounding error."""
    norm, shape, param_shape, axis = OFFSET_CASES[name]
    x = _offset_rows(rng, shape)
    dy = rng.standard_normal(shape).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(param_shape)).astype(np.float32)
    bias = rng.standard_normal(param_shape).astype(np.float32)
    y, mean, rstd = getattr(nbn, f"{norm}_forward")(x, weight=weight, bias=bias, axis=axis)
    dx, dweight, dbias = getattr(nbn, f"{norm}_backward")(dy, x, mean, rstd, weight, axis=axis)
    y_ref = getattr(reference, f"{norm}_forward")(x, weight=weight, bias=bias, axis=axis)[0]
    # The saved float32 mean is itself rounded by up to 5e-4 at 1e4: the exact
    # gradient to compare with is the one for the statistics the forward saved.
    dx_ref, dweight_ref, _ = getattr(reference, f"{norm}_backward")(
        dy, x, mean, rstd, weight, axis=axis)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-6 * np.abs(y_ref).max())
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=2e-6 * np.abs(dx_ref).max())
    np.testing.assert_allclose(dweight, dweight_ref, rtol=0, atol=1e-6 * np.abs(dweight_ref).max())
