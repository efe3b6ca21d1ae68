"""Property tests: random shapes, axes, dtypes and affine parameters against the reference."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import numbanorm as nbn

import reference as ref
from helpers import assert_close

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

shapes = st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple)
float_dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def layer_axes(draw, ndim):
    """An int axis or a tuple of distinct axes, possibly negative, in any order."""
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    signed = [a - ndim if draw(st.booleans()) else a for a in chosen]
    if len(signed) == 1 and draw(st.booleans()):
        return signed[0]
    return tuple(signed)


@st.composite
def channel_cases(draw, min_ndim=2):
    """``(shape, axis)`` with a channel axis in any position, possibly negative."""
    shape = draw(shapes.filter(lambda s: len(s) >= min_ndim))
    axis = draw(st.integers(0, len(shape) - 1))
    if draw(st.booleans()):
        axis -= len(shape)
    return shape, axis


def _data(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    return (
        (0.5 + 2.0 * rng.standard_normal(shape)).astype(dtype),
        rng.standard_normal(shape).astype(dtype),
        rng,
    )


def _maybe(rng, present, shape, dtype):
    return (1.0 + 0.5 * rng.standard_normal(shape)).astype(dtype) if present else None


@SETTINGS
@given(
    shape=shapes,
    data=st.data(),
    ddof=st.integers(0, 1),
    keepdims=st.booleans(),
    dtype=float_dtypes,
    seed=seeds,
)
def test_moments(shape, data, ddof, keepdims, dtype, seed):
    axis = data.draw(st.one_of(st.none(), layer_axes(len(shape))))
    x, _, _ = _data(seed, shape, dtype)
    count = x.size if axis is None else int(np.prod([shape[a] for a in np.atleast_1d(axis)]))
    if count <= ddof:
        ddof = 0
    mean, var = nbn.moments(x, axis, ddof=ddof, keepdims=keepdims)
    x64 = x.astype(np.float64)
    assert_close(mean, np.mean(x64, axis=axis, keepdims=keepdims), dtype)
    assert_close(var, np.var(x64, axis=axis, ddof=ddof, keepdims=keepdims), dtype)
    assert np.asarray(mean).dtype == dtype


@SETTINGS
@given(shape=shapes, data=st.data(), affine=st.booleans(), dtype=float_dtypes, seed=seeds)
def test_layer_norm(shape, data, affine, dtype, seed):
    axis = data.draw(layer_axes(len(shape)))
    x, dy, rng = _data(seed, shape, dtype)
    param_shape = tuple(shape[a] for a in ref.normalize_axes(axis, len(shape)))
    weight, bias = _maybe(rng, affine, param_shape, dtype), _maybe(rng, affine, param_shape, dtype)
    y, mean, rstd = nbn.layer_norm_forward(x, weight, bias, axis=axis)
    for value, truth in zip((y, mean, rstd), ref.layer_norm_forward(x, weight, bias, axis=axis)):
        assert_close(value, truth, dtype)
    grads = nbn.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis)
    for value, truth in zip(grads, ref.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis)):
        assert_close(value, truth, dtype, scale=10.0)


@SETTINGS
@given(shape=shapes, data=st.data(), affine=st.booleans(), dtype=float_dtypes, seed=seeds)
def test_rms_norm(shape, data, affine, dtype, seed):
    axis = data.draw(layer_axes(len(shape)))
    x, dy, rng = _data(seed, shape, dtype)
    param_shape = tuple(shape[a] for a in ref.normalize_axes(axis, len(shape)))
    weight = _maybe(rng, affine, param_shape, dtype)
    y, rrms = nbn.rms_norm_forward(x, weight, axis=axis, eps=1e-5)
    for value, truth in zip((y, rrms), ref.rms_norm_forward(x, weight, axis=axis, eps=1e-5)):
        assert_close(value, truth, dtype)
    grads = nbn.rms_norm_backward(dy, x, rrms, weight, axis=axis)
    for value, truth in zip(grads, ref.rms_norm_backward(dy, x, rrms, weight, axis=axis)):
        assert_close(value, truth, dtype, scale=10.0)


@SETTINGS
@given(
    case=channel_cases(),
    affine=st.booleans(),
    training=st.booleans(),
    dtype=float_dtypes,
    seed=seeds,
)
def test_batch_norm(case, affine, training, dtype, seed):
    shape, axis = case
    x, dy, rng = _data(seed, shape, dtype)
    channels = shape[axis]
    if training and x.size // channels < 2:
        training = False
    weight, bias = _maybe(rng, affine, channels, dtype), _maybe(rng, affine, channels, dtype)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    if training:
        expected_running = ref.batch_norm_running_stats(
            x, running_mean, running_var, momentum=0.2, axis=axis
        )
    expected = ref.batch_norm_forward(
        x, running_mean, running_var, weight, bias, training=training, axis=axis
    )
    y, mean, rstd = nbn.batch_norm_forward(
        x, running_mean, running_var, weight, bias, training=training, momentum=0.2, axis=axis
    )
    for value, truth in zip((y, mean, rstd), expected):
        assert_close(value, truth, dtype)
    if training:
        assert_close(running_mean, expected_running[0], dtype)
        assert_close(running_var, expected_running[1], dtype)
    grads = nbn.batch_norm_backward(dy, x, mean, rstd, weight, training=training, axis=axis)
    expected_grads = ref.batch_norm_backward(
        dy, x, mean, rstd, weight, training=training, axis=axis
    )
    for value, truth in zip(grads, expected_grads):
        assert_close(value, truth, dtype, scale=10.0)


@SETTINGS
@given(case=channel_cases(), data=st.data(), affine=st.booleans(), dtype=float_dtypes, seed=seeds)
def test_group_norm(case, data, affine, dtype, seed):
    shape, axis = case
    channels = shape[axis]
    num_groups = data.draw(
        st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0])
    )
    x, dy, rng = _data(seed, shape, dtype)
    weight, bias = _maybe(rng, affine, channels, dtype), _maybe(rng, affine, channels, dtype)
    y, mean, rstd = nbn.group_norm_forward(x, num_groups, weight, bias, axis=axis)
    for value, truth in zip(
        (y, mean, rstd), ref.group_norm_forward(x, num_groups, weight, bias, axis=axis)
    ):
        assert_close(value, truth, dtype)
    grads = nbn.group_norm_backward(dy, x, num_groups, mean, rstd, weight, axis=axis)
    expected_grads = ref.group_norm_backward(dy, x, num_groups, mean, rstd, weight, axis=axis)
    for value, truth in zip(grads, expected_grads):
        assert_close(value, truth, dtype, scale=10.0)


@SETTINGS
@given(
    case=channel_cases(min_ndim=3),
    affine=st.booleans(),
    use_input_stats=st.booleans(),
    dtype=float_dtypes,
    seed=seeds,
)
def test_instance_norm(case, affine, use_input_stats, dtype, seed):
    shape, axis = case
    x, dy, rng = _data(seed, shape, dtype)
    channels = shape[axis]
    samples = shape[1] if axis % len(shape) == 0 else shape[0]
    if use_input_stats and x.size // (channels * samples) < 2:
        use_input_stats = False
    weight, bias = _maybe(rng, affine, channels, dtype), _maybe(rng, affine, channels, dtype)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    expected = ref.instance_norm_forward(
        x, running_mean, running_var, weight, bias, use_input_stats=use_input_stats, axis=axis
    )
    y, mean, rstd = nbn.instance_norm_forward(
        x,
        running_mean.copy(),
        running_var.copy(),
        weight,
        bias,
        use_input_stats=use_input_stats,
        axis=axis,
    )
    for value, truth in zip((y, mean, rstd), expected):
        assert_close(value, truth, dtype)
    grads = nbn.instance_norm_backward(
        dy, x, mean, rstd, weight, use_input_stats=use_input_stats, axis=axis
    )
    expected_grads = ref.instance_norm_backward(
        dy, x, mean, rstd, weight, use_input_stats=use_input_stats, axis=axis
    )
    for value, truth in zip(grads, expected_grads):
        assert_close(value, truth, dtype, scale=10.0)
