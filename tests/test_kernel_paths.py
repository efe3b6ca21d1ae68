"""Every kernel path — row or slab regime, whole or split groups — against the reference.

The shapes are chosen so that each combination of :func:`plan_tasks` decisions
is exercised; the test first checks that the shape still selects the path it
is meant to cover.  Groups are fused up to a size of ``FUSE_MAX_ELEMENTS``,
which the tests lower so that small shapes take every path.
"""

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._kernels import ROW_BLOCK, plan_tasks

import reference as ref
from helpers import assert_close, random_array

# (norm, x shape, channel or normalized axis, canonical (B, O, C, I), row regime, whole groups)
CASES = [
    ("layer", (40, 64), -1, (40, 1, 1, 64), True, True),
    ("layer", (200, 8), -1, (200, 1, 1, 8), True, True),
    ("layer", (3, ROW_BLOCK + 904), -1, (3, 1, 1, ROW_BLOCK + 904), True, True),
    ("rms", (40, 64), -1, (40, 1, 1, 64), True, True),
    ("batch", (4, 20, 40), 1, (1, 4, 20, 40), True, True),
    ("batch", (256, 2, 64), 1, (1, 256, 2, 64), True, False),
    ("batch", (8, 48, 100), 1, (1, 8, 48, 100), True, False),
    ("batch", (5000, 5), 1, (1, 5000, 5, 1), False, False),
    ("batch", (2000, 3), -1, (1, 2000, 3, 1), False, False),
    ("instance", (20, 7, 3), -1, (20, 7, 3, 1), False, True),
    ("instance", (2, 3, 50), 1, (2, 1, 3, 50), True, True),
    ("instance", (4, 48, 200), 1, (4, 1, 48, 200), True, True),
    ("group", (3, 2000, 6), -1, (3, 2000, 2, 3), False, False),
    ("group", (1, 2000, 128), -1, (1, 2000, 2, 64), True, False),
    ("group", (17, 10, 6), -1, (17, 10, 2, 3), False, True),
    ("group", (5, 6, 40), 1, (5, 1, 2, 120), True, True),
]


def _forward_backward(module, norm, x, dy, axis, weight, bias):
    if norm == "layer":
        y, mean, rstd = module.layer_norm_forward(x, weight, bias, axis=axis)
        return (y, mean, rstd, *module.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis))
    if norm == "rms":
        eps = ref.rms_norm_default_eps(x.dtype)
        y, rrms = module.rms_norm_forward(x, weight, axis=axis, eps=eps)
        return (y, rrms, *module.rms_norm_backward(dy, x, rrms, weight, axis=axis))
    if norm == "batch":
        y, mean, rstd = module.batch_norm_forward(x, None, None, weight, bias, axis=axis)
        return (y, mean, rstd, *module.batch_norm_backward(dy, x, mean, rstd, weight, axis=axis))
    if norm == "instance":
        y, mean, rstd = module.instance_norm_forward(x, None, None, weight, bias, axis=axis)
        return (y, mean, rstd, *module.instance_norm_backward(dy, x, mean, rstd, weight, axis=axis))
    y, mean, rstd = module.group_norm_forward(x, 2, weight, bias, axis=axis)
    return (y, mean, rstd, *module.group_norm_backward(dy, x, 2, mean, rstd, weight, axis=axis))


@pytest.fixture
def small_fuse_limit(monkeypatch):
    """Fuse groups only up to 4096 elements, in the planner and in the plans it cached."""
    from numbanorm import _driver, _kernels

    def clear():
        _kernels.plan_tasks.cache_clear()
        _driver._plain_plan.cache_clear()

    clear()
    monkeypatch.setattr(_kernels, "FUSE_MAX_ELEMENTS", 4096)
    yield
    monkeypatch.undo()
    clear()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm, shape, axis, shape4, rows, whole", CASES)
def test_kernel_path_matches_reference(
    rng, small_fuse_limit, norm, shape, axis, shape4, rows, whole, dtype
):
    plan_rows, _, o_chunk, _ = plan_tasks(*shape4)
    assert (plan_rows, o_chunk == shape4[1]) == (rows, whole)
    x = random_array(rng, shape, dtype)
    dy = random_array(rng, shape, dtype)
    weight = random_array(rng, (shape[axis],))
    bias = None if norm == "rms" else random_array(rng, (shape[axis],))
    actual = _forward_backward(nbn, norm, x, dy, axis, weight, bias)
    expected = _forward_backward(
        ref, norm, x.astype(np.float64), dy.astype(np.float64), axis, weight, bias
    )
    for got, want in zip(actual, expected):
        assert_close(got, want, dtype, scale=10.0)


@pytest.mark.parametrize("tail", [0, 37])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_moments_of_one_long_row_split_between_tasks(rng, tail, dtype):
    """A full reduction of a long array is split into equal rows plus a tail."""
    x = random_array(rng, (64 * ROW_BLOCK + tail,), dtype, loc=1e3)
    mean, var = nbn.moments(x, ddof=1)
    assert_close(mean, np.mean(x.astype(np.float64)), dtype)
    assert_close(var, np.var(x.astype(np.float64), ddof=1), dtype)
    x[-1] = np.nan
    assert np.isnan(nbn.moments(x)).all()


@pytest.mark.parametrize("shape, axis", [((6, 5, 40), -1), ((8, 6, 7, 5), 1), ((8, 7, 5, 6), -1)])
def test_serial_variants_compute_what_the_parallel_kernels_do(rng, monkeypatch, shape, axis):
    """Small inputs run on the calling thread, with the same task partition.

    The two compilations may order a vectorized sum differently, so they agree
    to rounding; which one runs depends on the size alone.
    """
    from numbanorm import _kernels

    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    norm = "layer_norm" if len(shape) == 3 else "batch_norm"
    forward, backward = getattr(nbn, f"{norm}_forward"), getattr(nbn, f"{norm}_backward")
    results = []
    for serial_max in (0, x.size):
        monkeypatch.setattr(_kernels, "SERIAL_MAX_ELEMENTS", serial_max)
        y, *stats = forward(x, axis=axis)
        results.append((y, *stats, *backward(dy, x, *stats, axis=axis), *nbn.moments(x, axis=0)))
    for parallel, serial in zip(*results):
        np.testing.assert_allclose(parallel, serial, rtol=1e-5, atol=1e-6)
