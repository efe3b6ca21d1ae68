"""``where=`` on device arrays: every norm's masked forward and backward, and
``moments``, checked against the CPU backend in both kernel regimes.

Masks of each case: a random one, one with an empty group, one padding a
whole sample out, and broadcast ones (``(N, 1, T)`` of a batch norm over
``(N, C, T)``).  Unselected elements hold NaN, which must not reach anything.
"""

import warnings

import numpy as np
import pytest
from numba import cuda

import numbanorm

from helpers import norm_functions

# (norm, shape, axis, groups, whether the rows regime runs under the simulator),
# with groups of enough rows for the unrolled loops of both regimes.
CASES = [
    ("layer_norm", (3, 8), -1, None, True),
    ("layer_norm", (40, 3), -1, None, True),
    ("rms_norm", (3, 8), -1, None, True),
    ("group_norm", (2, 4, 6), 1, 2, True),
    ("group_norm", (1, 10, 4), -1, 2, False),
    ("instance_norm", (2, 3, 8), 1, None, True),
    ("instance_norm", (1, 20, 3), -1, None, False),
    ("batch_norm", (1, 2, 12), 1, None, True),
    ("batch_norm", (4, 3, 8), 1, None, False),
    ("batch_norm", (64, 3), 1, None, False),
]


def device(a):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    assert not isinstance(a, np.ndarray), "a device call returned a host array"
    return a.copy_to_host()


def _reduced_axes(norm, shape, axis):
    """The axes a group spans (group norm also spans channels)."""
    axis = axis % len(shape)
    if norm in ("layer_norm", "rms_norm"):
        return (axis,)
    if norm == "batch_norm":
        return tuple(a for a in range(len(shape)) if a != axis)
    return tuple(a for a in range(len(shape)) if a not in (0, axis))


def _masks(rng, norm, shape, axis):
    """``(name, mask)``: the masks each case runs with."""
    yield "random", rng.random(shape) < 0.7
    empty = rng.random(shape) < 0.7
    # The first group of the first sample (all of sample 0 for batch norm).
    index = [slice(None)] * len(shape)
    for a in range(len(shape)):
        if a not in _reduced_axes(norm, shape, axis):
            index[a] = 0
    if norm == "group_norm":
        index[axis % len(shape)] = slice(0, shape[axis] // 2)
    empty[tuple(index)] = False
    yield "empty group", empty
    padded = rng.random(shape) < 0.7
    padded[0] = False
    yield "padded sample", padded
    broadcast = tuple(1 if a == axis % len(shape) else n for a, n in enumerate(shape))
    yield "broadcast over channels", rng.random(broadcast) < 0.7
    if len(shape) == 3:
        yield "broadcast over the last axis", (rng.random(shape[:-1] + (1,)) < 0.7)


def _assert_matches(got, expected, name, rtol=1e-5, atol=1e-5):
    got = host(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, name
    assert not np.isnan(got).any(), name
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("norm, shape, axis, groups, rows", CASES)
def test_masked_norms_match_the_cpu(rng, regimes, norm, shape, axis, groups, rows):
    channels = shape[axis]
    weight = (1 + rng.random(channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    forward, backward, extra, params = norm_functions(norm, groups, weight, bias)
    for name, mask in _masks(rng, norm, shape, axis):
        x = rng.standard_normal(shape).astype(np.float32)
        x[~np.broadcast_to(mask, shape)] = np.nan
        dy = rng.standard_normal(shape).astype(np.float32)
        expected = forward(x, *extra, *params, axis=axis, where=mask)
        got = forward(device(x), *extra, *map(device, params), axis=axis, where=device(mask))
        for g, e in zip(got[1:], expected[1:]):
            _assert_matches(g, e, f"{name}: statistics")
        # y of every element with its group's statistics: NaN where x is.
        np.testing.assert_allclose(host(got[0]), expected[0], rtol=1e-5, atol=1e-5, err_msg=name)
        stats = expected[1:]
        expected_grads = backward(dy, x, *extra, *stats, weight, axis=axis, where=mask)
        got_grads = backward(
            device(dy),
            device(x),
            *extra,
            *map(device, stats),
            device(weight),
            axis=axis,
            where=device(mask),
        )
        # The group sums of dy*w*x_hat span every element, NaN ones too, as on the CPU.
        for g, e in zip(got_grads, expected_grads):
            np.testing.assert_allclose(host(g), e, rtol=1e-4, atol=1e-4, err_msg=name)
    assert regimes and set(regimes) == {rows}


@pytest.mark.parametrize("norm, shape, axis, groups, rows", CASES)
def test_masked_gradients_of_finite_data_match_the_cpu(
    rng, regimes, norm, shape, axis, groups, rows
):
    """With finite unselected elements every ``dx`` and parameter gradient compares."""
    channels = shape[axis]
    weight = (1 + rng.random(channels)).astype(np.float64)
    forward, backward, extra, params = norm_functions(norm, groups, weight, weight.copy())
    for name, mask in _masks(rng, norm, shape, axis):
        x = (5 + rng.standard_normal(shape)).astype(np.float64)
        dy = rng.standard_normal(shape)
        stats = forward(x, *extra, *params, axis=axis, where=mask)[1:]
        expected = backward(dy, x, *extra, *stats, weight, axis=axis, where=mask)
        got = backward(
            device(dy),
            device(x),
            *extra,
            *map(device, stats),
            device(weight),
            axis=axis,
            where=device(mask),
        )
        for g, e in zip(got, expected):
            _assert_matches(g, e, name, rtol=1e-10, atol=1e-10)
    assert regimes and set(regimes) == {rows}


@pytest.mark.parametrize("shape, axis", [((4, 3, 8), 1), ((64, 3), 1), ((1, 2, 12), 1)])
def test_masked_batch_norm_updates_the_running_statistics_as_the_cpu(rng, shape, axis):
    x = rng.standard_normal(shape)
    mask = rng.random((shape[0], 1, *shape[2:])) < 0.7
    mask[: shape[0] // 2] = False  # padded samples
    running = [np.zeros(shape[axis]), np.ones(shape[axis])]
    on_device = [device(r) for r in running]
    expected = numbanorm.batch_norm_forward(x, *running, where=mask)
    got = numbanorm.batch_norm_forward(device(x), *on_device, where=device(mask))
    for g, e in zip([*got, *on_device], [*expected, *running]):
        _assert_matches(g, np.asarray(e), "batch norm", rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("axis", [None, 0, (0, 2)])
def test_masked_moments_match_the_cpu(rng, axis):
    x = rng.standard_normal((5, 4, 3)) + 100
    where = rng.random((5, 4, 1)) < 0.6
    where[:, 0] = False  # slices without any element (but the full reduction): NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = numbanorm.moments(x, axis=axis, where=where)
        got = numbanorm.moments(device(x), axis=axis, where=device(where))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(host(g), e, rtol=1e-12, atol=1e-12)


def test_mixing_host_and_device_masks_is_a_type_error(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    mask = rng.random((3, 4)) < 0.5
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.layer_norm(device(x), where=mask)
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.layer_norm(x, where=device(mask))
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.batch_norm_backward(device(x), device(x), device(x[0]), device(x[0]), where=mask)
    with pytest.raises(TypeError, match="cannot mix host and device arrays"):
        numbanorm.moments(device(x), axis=0, where=mask)
