"""numbanorm.jax against plain jax.numpy formulas and their jax.grad, where JAX is installed."""

import functools
import logging
import subprocess
import sys

import numpy as np
import pytest

from helpers import tolerance

jax = pytest.importorskip("jax")
jnp = jax.numpy
nnj = pytest.importorskip("numbanorm.jax")
import numbanorm as nbn  # noqa: E402


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """The float dtype of a test; float64 turns on ``jax_enable_x64`` for the test only."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == np.float64)
    yield np.dtype(request.param)
    jax.config.update("jax_enable_x64", previous)


# ----------------------------------------------------------------------------
# Reference formulas in plain jax.numpy, compiled: eagerly, every jax.numpy
# operation would compile on its own, which takes longer than the tests.


def _normalize(x, reduced, eps):
    mean = x.mean(reduced, keepdims=True)
    var = ((x - mean) ** 2).mean(reduced, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps)


def _affine(y, weight, bias, axis):
    """``y * weight + bias`` with ``(C,)`` parameters along ``axis``."""
    shape = [1] * y.ndim
    shape[axis] = -1
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


@functools.partial(jax.jit, static_argnames=("axis", "eps"))
def ref_layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    axes = tuple(sorted(a % x.ndim for a in np.atleast_1d(axis)))
    y = _normalize(x, axes, eps)
    # The parameters' axes are the normalized ones in increasing order.
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    if weight is not None:
        y = y * jnp.expand_dims(weight, kept)
    return y if bias is None else y + jnp.expand_dims(bias, kept)


@functools.partial(jax.jit, static_argnames=("axis", "eps"))
def ref_rms_norm(x, weight=None, *, axis=-1, eps=None):
    eps = jnp.finfo(x.dtype).eps if eps is None else eps
    y = x / jnp.sqrt((x * x).mean(axis, keepdims=True) + eps)
    return y if weight is None else y * weight


@functools.partial(jax.jit, static_argnames=("num_groups", "eps", "axis"))
def ref_group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1):
    moved = jnp.moveaxis(x, axis, 1)
    grouped = moved.reshape(moved.shape[0], num_groups, -1)
    y = jnp.moveaxis(_normalize(grouped, 2, eps).reshape(moved.shape), 1, axis)
    return _affine(y, weight, bias, axis % x.ndim)


def _ref_channel_norm(
    x, running_mean, running_var, weight, bias, from_input, momentum, eps, axis, reduced
):
    shape = [1] * x.ndim
    shape[axis] = -1
    if from_input:
        y = _normalize(x, reduced, eps)
        mean = x.mean(reduced)
        count = x.size // np.prod([x.shape[a] for a in range(x.ndim) if a not in reduced])
        var = x.var(reduced) * count / (count - 1)
        if mean.ndim == 2:  # instance norm: per-instance statistics averaged over the batch
            mean, var = mean.mean(0), var.mean(0)
        if running_mean is not None:
            running_mean = (1 - momentum) * running_mean + momentum * mean
            running_var = (1 - momentum) * running_var + momentum * var
    else:
        y = (x - running_mean.reshape(shape)) / jnp.sqrt(running_var.reshape(shape) + eps)
    return _affine(y, weight, bias, axis), running_mean, running_var


@functools.partial(jax.jit, static_argnames=("training", "momentum", "eps", "axis"))
def ref_batch_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    *,
    training=True,
    momentum=0.1,
    eps=1e-5,
    axis=1,
):
    axis %= x.ndim
    reduced = tuple(a for a in range(x.ndim) if a != axis)
    return _ref_channel_norm(
        x, running_mean, running_var, weight, bias, training, momentum, eps, axis, reduced
    )


@functools.partial(jax.jit, static_argnames=("use_input_stats", "momentum", "eps", "axis"))
def ref_instance_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    *,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
    axis=1,
):
    axis %= x.ndim
    reduced = tuple(a for a in range(x.ndim) if a not in (0, axis))
    return _ref_channel_norm(
        x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, axis, reduced
    )


# ----------------------------------------------------------------------------
# Values and gradients


def _data(rng, shape, param_shape, dtype):
    return (
        jnp.asarray(0.5 + 2.0 * rng.standard_normal(shape), dtype),
        jnp.asarray(1.0 + 0.5 * rng.standard_normal(param_shape), dtype),
        jnp.asarray(rng.standard_normal(param_shape), dtype),
        jnp.asarray(rng.standard_normal(shape), dtype),
    )


def _assert_close(actual, expected, dtype, scale=1.0):
    tol = tolerance(dtype)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(expected, np.float64),
        rtol=tol["rtol"] * scale,
        atol=tol["atol"] * scale,
    )


def _check_against_reference(function, reference, args, upstream, dtype):
    """``function(*args)`` and ``jax.grad`` of ``sum(y * upstream)`` under ``jit``.

    ``args`` is ``x`` and the parameters; the parameters' gradients, sums over
    many elements, get a 10 times wider tolerance.  (Eager calls are tested
    once, in :func:`test_eager_calls`: each compiles its small operations
    anew, which would dominate the time of these tests.)
    """

    def loss(f):
        return lambda *args: jnp.sum(f(*args) * upstream)

    def value_and_grads(f):
        return jax.jit(
            lambda *args: (f(*args), jax.grad(loss(f), argnums=tuple(range(len(args))))(*args))
        )

    (y, grads), (expected, expected_grads) = (
        value_and_grads(f)(*args) for f in (function, reference)
    )
    _assert_close(y, expected, dtype)
    for index, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        _assert_close(grad, expected_grad, dtype, scale=10.0 if index else 1.0)


@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((2, 3, 5), (0, 2))])
def test_layer_norm(rng, dtype, shape, axis):
    normalized = tuple(shape[a] for a in sorted(a % len(shape) for a in np.atleast_1d(axis)))
    x, weight, bias, upstream = _data(rng, shape, normalized, dtype)
    _check_against_reference(
        lambda x, w, b: nnj.layer_norm(x, w, b, axis=axis, eps=1e-4),
        lambda x, w, b: ref_layer_norm(x, w, b, axis=axis, eps=1e-4),
        (x, weight, bias),
        upstream,
        dtype,
    )


@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((2, 3, 5), (1, 2))])
def test_rms_norm(rng, dtype, shape, axis):
    x, weight, _, upstream = _data(rng, shape, shape[-(len(np.atleast_1d(axis))) :], dtype)
    _check_against_reference(
        lambda x, w: nnj.rms_norm(x, w, axis=axis),
        lambda x, w: ref_rms_norm(x, w, axis=axis),
        (x, weight),
        upstream,
        dtype,
    )


@pytest.mark.parametrize("shape, num_groups, axis", [((2, 6, 5), 3, 1), ((2, 4, 6), 2, -1)])
def test_group_norm(rng, dtype, shape, num_groups, axis):
    x, weight, bias, upstream = _data(rng, shape, shape[axis], dtype)
    _check_against_reference(
        lambda x, w, b: nnj.group_norm(x, num_groups, w, b, axis=axis),
        lambda x, w, b: ref_group_norm(x, num_groups, w, b, axis=axis),
        (x, weight, bias),
        upstream,
        dtype,
    )


def _running(rng, channels, dtype):
    return (
        jnp.asarray(rng.standard_normal(channels), dtype),
        jnp.asarray(rng.uniform(0.5, 2.0, channels), dtype),
    )


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("shape, axis", [((4, 3, 5), 1), ((4, 5, 3), -1)])
def test_batch_norm(rng, dtype, shape, axis, training):
    x, weight, bias, upstream = _data(rng, shape, shape[axis], dtype)
    running = _running(rng, shape[axis], dtype)
    options = dict(training=training, momentum=0.3, eps=1e-4, axis=axis)
    _check_against_reference(
        lambda x, w, b: nnj.batch_norm(x, *running, w, b, **options)[0],
        lambda x, w, b: ref_batch_norm(x, *running, w, b, **options)[0],
        (x, weight, bias),
        upstream,
        dtype,
    )
    _, *new_running = jax.jit(lambda x: nnj.batch_norm(x, *running, **options))(x)
    _, *expected = ref_batch_norm(x, *running, **options)
    for actual, expected_stat in zip(new_running, expected):
        _assert_close(actual, expected_stat, dtype)


@pytest.mark.parametrize("use_input_stats", [True, False], ids=["input_stats", "running_stats"])
def test_instance_norm(rng, dtype, use_input_stats):
    x, weight, bias, upstream = _data(rng, (2, 3, 4, 5), 3, dtype)
    running = _running(rng, 3, dtype)
    options = dict(use_input_stats=use_input_stats, momentum=0.2)
    _check_against_reference(
        lambda x, w, b: nnj.instance_norm(x, *running, w, b, **options)[0],
        lambda x, w, b: ref_instance_norm(x, *running, w, b, **options)[0],
        (x, weight, bias),
        upstream,
        dtype,
    )
    _, *new_running = nnj.instance_norm(x, *running, **options)
    _, *expected = ref_instance_norm(x, *running, **options)
    for actual, expected_stat in zip(new_running, expected):
        _assert_close(actual, expected_stat, dtype)


def test_eager_calls(rng, dtype):
    x, weight, bias, upstream = _data(rng, (4, 3, 5), 3, dtype)
    running = _running(rng, 3, dtype)
    for function, reference in (
        (nnj.batch_norm, ref_batch_norm),
        (nnj.instance_norm, ref_instance_norm),
    ):
        for actual, expected in zip(
            function(x, *running, weight, bias), reference(x, *running, weight, bias)
        ):
            _assert_close(actual, expected, dtype)
    _assert_close(nnj.layer_norm(x, x[0, 0], x[1, 0]), ref_layer_norm(x, x[0, 0], x[1, 0]), dtype)
    grads = jax.grad(lambda x, w: jnp.sum(nnj.group_norm(x, 3, w) * upstream), argnums=(0, 1))
    expected = jax.jit(
        jax.grad(lambda x, w: jnp.sum(ref_group_norm(x, 3, w) * upstream), argnums=(0, 1))
    )
    for index, (grad, expected_grad) in enumerate(zip(grads(x, weight), expected(x, weight))):
        _assert_close(grad, expected_grad, dtype, scale=10.0 if index else 1.0)


def test_eager_calls_reuse_their_compiled_callback(caplog):
    x, weight = jnp.ones((4, 6)), jnp.ones(6)
    nnj.layer_norm(x, weight)
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG, logger="jax"):
        nnj.layer_norm(x, weight)
    assert not [r for r in caplog.records if "pure_callback" in r.getMessage()]


def test_without_affine_parameters_or_running_statistics(rng):
    x = jnp.asarray(rng.standard_normal((4, 3, 5)), jnp.float32)
    y, new_mean, new_var = nnj.batch_norm(x)
    assert new_mean is None and new_var is None
    _assert_close(y, ref_batch_norm(x)[0], np.float32)
    _assert_close(nnj.instance_norm(x)[0], ref_instance_norm(x)[0], np.float32)
    _assert_close(nnj.layer_norm(x), ref_layer_norm(x), np.float32)
    _assert_close(nnj.group_norm(x, 1), ref_group_norm(x, 1), np.float32)
    grad = jax.grad(lambda x: jnp.sum(nnj.layer_norm(x) * jnp.arange(5.0)))(x)
    _assert_close(
        grad, jax.grad(lambda x: jnp.sum(ref_layer_norm(x) * jnp.arange(5.0)))(x), np.float32
    )


def test_running_statistics_are_constants(rng):
    x = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)

    def loss(running_mean, running_var, training):
        y, new_mean, new_var = nnj.batch_norm(x, running_mean, running_var, training=training)
        return jnp.sum(y) + jnp.sum(new_mean) + jnp.sum(new_var)

    for training in (True, False):
        grads = jax.grad(loss, argnums=(0, 1))(running_mean, running_var, training)
        assert all(np.all(np.asarray(g) == 0) for g in grads)
    # NumPy running statistics are read, never updated in place.
    assert np.all(running_mean == 0) and np.all(running_var == 1)


# ----------------------------------------------------------------------------
# vmap


def test_vmap_layer_norm(rng):
    x, weight, bias, _ = _data(rng, (3, 4, 6), 6, np.float32)
    expected = ref_layer_norm(x, weight, bias)
    _assert_close(jax.vmap(nnj.layer_norm, (0, None, None))(x, weight, bias), expected, np.float32)
    _assert_close(
        jax.jit(jax.vmap(nnj.layer_norm, (1, None, None), 1))(x, weight, bias), expected, np.float32
    )
    # Nested, with the inner vmap's axes counted from the front: positive axes move.
    nested = jax.vmap(jax.vmap(lambda row, w: nnj.layer_norm(row, w, axis=0), (0, None)), (0, None))
    _assert_close(nested(x, weight), ref_layer_norm(x, weight), np.float32)
    # Batched parameters (an ensemble): one set of parameters per batch element.
    weights = jnp.asarray(rng.standard_normal((3, 6)), jnp.float32)
    _assert_close(
        jax.vmap(nnj.layer_norm, (0, 0, None))(x, weights, bias),
        jax.vmap(ref_layer_norm, (0, 0, None))(x, weights, bias),
        np.float32,
    )
    _assert_close(
        jax.vmap(nnj.layer_norm, (None, 0, None))(x[0], weights, bias),
        jax.vmap(ref_layer_norm, (None, 0, None))(x[0], weights, bias),
        np.float32,
    )


def test_vmap_of_layer_norm_gradient(rng):
    x, weight, bias, upstream = _data(rng, (3, 4, 6), 6, np.float32)

    def loss(f):
        return lambda x, weight, bias: jnp.sum(f(x, weight, bias) * upstream[0])

    # Per-example gradients, and the gradient of a vmapped function.
    for transform in (
        lambda f: jax.vmap(jax.grad(loss(f), argnums=(0, 1, 2)), (0, None, None)),
        lambda f: jax.grad(
            lambda x, w, b: jnp.sum(jax.vmap(loss(f), (0, None, None))(x, w, b)), argnums=(0, 1, 2)
        ),
    ):
        expected = jax.jit(transform(ref_layer_norm))(x, weight, bias)
        for index, (grad, expected_grad) in enumerate(
            zip(jax.jit(transform(nnj.layer_norm))(x, weight, bias), expected)
        ):
            _assert_close(grad, expected_grad, np.float32, scale=10.0 if index else 1.0)
    # jax.jacrev vmaps the backward over the cotangents, not over x.
    _assert_close(
        jax.jacrev(nnj.layer_norm)(x[0], weight, bias),
        jax.jit(jax.jacrev(ref_layer_norm))(x[0], weight, bias),
        np.float32,
    )


def test_vmap_of_the_other_norms(rng):
    x, weight, bias, _ = _data(rng, (3, 4, 6, 5), 6, np.float32)
    running = _running(rng, 6, np.float32)
    # batch norm: each vmapped element has its own statistics and running statistics.
    y, new_mean, new_var = jax.vmap(nnj.batch_norm, (0, None, None, None, None))(
        x, *running, weight, bias
    )
    expected = jax.vmap(ref_batch_norm, (0, None, None, None, None))(x, *running, weight, bias)
    for actual, expected_value in zip((y, new_mean, new_var), expected):
        _assert_close(actual, expected_value, np.float32)
    _assert_close(
        jax.vmap(nnj.group_norm, (0, None))(x, 3),
        jax.vmap(ref_group_norm, (0, None))(x, 3),
        np.float32,
    )
    _assert_close(jax.vmap(nnj.instance_norm)(x)[0], jax.vmap(ref_instance_norm)(x)[0], np.float32)
    weights = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
    _assert_close(
        jax.vmap(nnj.rms_norm)(x, weights), jax.vmap(ref_rms_norm)(x, weights), np.float32
    )
    grad = jax.vmap(
        jax.grad(lambda x, w: jnp.sum(nnj.batch_norm(x, weight=w)[0] ** 3), argnums=(0, 1)),
        (0, None),
    )
    ref_grad = jax.vmap(
        jax.grad(lambda x, w: jnp.sum(ref_batch_norm(x, weight=w)[0] ** 3), argnums=(0, 1)),
        (0, None),
    )
    for actual, expected_grad in zip(grad(x, weight), ref_grad(x, weight)):
        _assert_close(actual, expected_grad, np.float32, scale=10.0)
    # An empty vmapped axis runs nothing.
    assert jax.vmap(nnj.batch_norm)(x[:0])[0].shape == x[:0].shape


@pytest.fixture
def copying_callbacks(monkeypatch):
    """Take the ``pure_callback`` path of the platforms other than the CPU."""
    monkeypatch.setattr(nnj, "_buffer_callback", None)


def test_copying_callback_path(rng, copying_callbacks):
    x, weight, bias, upstream = _data(rng, (3, 4, 6), 6, np.float32)
    _check_against_reference(
        nnj.layer_norm, ref_layer_norm, (x, weight, bias), upstream, np.float32
    )
    running = _running(rng, 4, np.float32)
    actual = jax.jit(lambda x: nnj.batch_norm(x, *running, weight[:4], axis=1))(x)
    expected = ref_batch_norm(x, *running, weight[:4], axis=1)
    for actual_value, expected_value in zip(actual, expected):
        _assert_close(actual_value, expected_value, np.float32)
    # vmap: one call over the whole batch, and once per element (the gradient).
    _assert_close(
        jax.vmap(nnj.layer_norm, (0, None, None))(x, weight, bias),
        ref_layer_norm(x, weight, bias),
        np.float32,
    )
    per_example = jax.vmap(
        jax.grad(lambda x, w: jnp.sum(nnj.layer_norm(x, w) ** 3), argnums=(0, 1)), (0, None)
    )
    expected = jax.vmap(
        jax.grad(lambda x, w: jnp.sum(ref_layer_norm(x, w) ** 3), argnums=(0, 1)), (0, None)
    )
    for index, (grad, expected_grad) in enumerate(zip(per_example(x, weight), expected(x, weight))):
        _assert_close(grad, expected_grad, np.float32, scale=10.0 if index else 1.0)


# ----------------------------------------------------------------------------
# dtypes


def test_dtypes(rng):
    x = rng.standard_normal((4, 8))
    for jax_dtype in (jnp.float16, jnp.bfloat16):
        xl = jnp.asarray(x, jax_dtype)
        y = nnj.layer_norm(xl, jnp.ones(8, jax_dtype))
        assert y.dtype == jax_dtype
        np.testing.assert_allclose(
            np.asarray(y, np.float64), ref_layer_norm(jnp.asarray(x)), rtol=3e-2, atol=3e-2
        )
        dx, dw = jax.grad(
            lambda x, w: jnp.sum(nnj.layer_norm(x, w) ** 3).astype(jnp.float32), argnums=(0, 1)
        )(xl, jnp.ones(8, jax_dtype))
        assert dx.dtype == dw.dtype == jax_dtype
        # RMS norm's default eps is the machine epsilon of the input's own dtype.
        eps = float(jnp.finfo(jax_dtype).eps)
        big = jnp.full((2, 3), 1e-2, jax_dtype)
        np.testing.assert_allclose(
            np.asarray(nnj.rms_norm(big), np.float64), 1e-2 / np.sqrt(1e-4 + eps), rtol=1e-2
        )
    assert nnj.layer_norm(jnp.arange(6).reshape(2, 3)).dtype == jnp.float32
    # Mixed parameter dtypes: y has x's dtype, each gradient its argument's dtype.
    grads = jax.grad(lambda x, w, b: jnp.sum(nnj.layer_norm(x, w, b)), argnums=(0, 1, 2))(
        jnp.asarray(x, jnp.float16), jnp.ones(8, jnp.float32), jnp.zeros(8, jnp.bfloat16)
    )
    assert [g.dtype for g in grads] == [jnp.float16, jnp.float32, jnp.bfloat16]


def test_float64_needs_x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        x = jnp.arange(12.0).reshape(3, 4)
        assert x.dtype == jnp.float64
        y, new_mean, _ = jax.jit(nnj.batch_norm)(x, jnp.zeros(4), jnp.ones(4))
        assert y.dtype == new_mean.dtype == jnp.float64
        assert nnj.layer_norm(jnp.arange(6).reshape(2, 3)).dtype == jnp.float64
    finally:
        jax.config.update("jax_enable_x64", previous)


# ----------------------------------------------------------------------------
# Errors and what is not supported


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: nnj.layer_norm(x, axis=3), np.exceptions.AxisError, "out of bounds"),
        (lambda x: nnj.layer_norm(x, jnp.ones(5)), ValueError, r"weight must have shape \(6,\)"),
        (lambda x: nnj.rms_norm(x, eps=-1.0), ValueError, "eps must be non-negative"),
        (lambda x: nnj.layer_norm(x.astype(jnp.complex64)), TypeError, "real floating"),
        (lambda x: nnj.group_norm(x, 3), ValueError, "num_groups must be a positive integer"),
        (lambda x: nnj.batch_norm(x, training=False), ValueError, "needs running_mean"),
        (lambda x: nnj.batch_norm(x, jnp.zeros(4)), ValueError, "given together"),
        (
            lambda x: nnj.batch_norm(x, jnp.zeros(3), jnp.ones(3)),
            ValueError,
            r"running_mean must have shape \(4,\)",
        ),
        (lambda x: nnj.batch_norm(x, momentum=1.5), ValueError, "momentum"),
        (lambda x: nnj.batch_norm(x[:1, :, :1]), ValueError, "more than 1 value per channel"),
        (lambda x: nnj.instance_norm(x[:, :, :1]), ValueError, "more than 1 spatial element"),
        (lambda x: nnj.instance_norm(x[0]), ValueError, "at least 3 dimensions"),
    ],
)
def test_errors(call, error, match):
    x = jnp.ones((2, 4, 6))
    with pytest.raises(error, match=match):
        call(x)
    with pytest.raises(error, match=match):  # at trace time, not in the callback
        jax.jit(call)(x)


def test_forward_mode_and_second_derivatives_raise():
    x = jnp.arange(6.0).reshape(2, 3)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(nnj.layer_norm, (x,), (x,))
    with pytest.raises(ValueError, match="JVP"):
        jax.grad(lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(nnj.layer_norm(x) ** 3))(x)))(x)


def _run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_import_numbanorm_does_not_import_jax():
    result = _run_python("import sys, numbanorm; assert 'jax' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_import_error_names_the_extra():
    result = _run_python("import sys; sys.modules['jax'] = None; import numbanorm.jax")
    assert 'the "jax" extra (pip install ".[jax]" in a numbanorm clone)' in result.stderr
    assert "or pip install jax" in result.stderr


# ----------------------------------------------------------------------------
# where: jax.numpy references that average over the selected elements only, so
# that their jax.grad feeds the statistics' gradient back to those alone.


def _masked_normalize(x, where, reduced, eps, centered=True):
    """``x`` normalized with the statistics of its selected elements; none: 0 and 0."""
    where = jnp.broadcast_to(where, x.shape)
    count = where.sum(reduced, keepdims=True)
    some = jnp.maximum(count, 1)
    mean = jnp.where(where, x, 0).sum(reduced, keepdims=True) / some if centered else 0.0
    var = jnp.where(where, (x - mean) ** 2, 0).sum(reduced, keepdims=True) / some
    return (x - mean) * jnp.where(count > 0, 1 / jnp.sqrt(var + eps), 0.0)


def _masked_reference(kind, where, eps=1e-5):
    """The jax.numpy reference of ``kind`` with ``where``, a function of ``(x, weight, bias)``."""

    def layer(x, weight, bias):  # over the last two axes
        y = _masked_normalize(x, where, (1, 2), eps)
        return y * weight + bias

    def rms(x, weight, bias):
        return _masked_normalize(x, where, (2,), eps, centered=False) * weight

    def group(x, weight, bias):  # (N, 6, T) in 3 groups
        grouped = x.reshape(x.shape[0], 3, -1)
        mask = jnp.broadcast_to(where, x.shape).reshape(grouped.shape)
        y = _masked_normalize(grouped, mask, (2,), eps).reshape(x.shape)
        return _affine(y, weight, bias, 1)

    def batch(x, weight, bias):
        return _affine(_masked_normalize(x, where, (0, 2), eps), weight, bias, 1)

    def instance(x, weight, bias):
        return _affine(_masked_normalize(x, where, (2,), eps), weight, bias, 1)

    return jax.jit(dict(layer=layer, rms=rms, group=group, batch=batch, instance=instance)[kind])


def _masked_function(kind, where):
    return {
        "layer": lambda x, w, b: nnj.layer_norm(x, w, b, axis=(1, 2), where=where),
        "rms": lambda x, w, b: nnj.rms_norm(x, w, eps=1e-5, where=where),
        "group": lambda x, w, b: nnj.group_norm(x, 3, w, b, where=where),
        "batch": lambda x, w, b: nnj.batch_norm(x, weight=w, bias=b, where=where)[0],
        "instance": lambda x, w, b: nnj.instance_norm(x, weight=w, bias=b, where=where)[0],
    }[kind]


# (N, C, T) inputs with (N, 1, T) padding masks; row 1 (sample 1) is all padding.
MASKED_KINDS = {
    "layer": ((4, 6, 5), (6, 5)),
    "rms": ((4, 6, 5), (5,)),
    "group": ((4, 6, 5), (6,)),
    "batch": ((4, 6, 5), (6,)),
    "instance": ((4, 6, 5), (6,)),
}


def _padding_mask(rng, shape):
    where = rng.random((shape[0], 1, shape[2])) < 0.7
    where[1] = False
    return where


@pytest.mark.parametrize("kind", list(MASKED_KINDS))
def test_where_under_jit_and_grad(rng, dtype, kind):
    shape, param_shape = MASKED_KINDS[kind]
    x, weight, bias, upstream = _data(rng, shape, param_shape, dtype)
    where = _padding_mask(rng, shape)
    _check_against_reference(
        _masked_function(kind, where),
        _masked_reference(kind, where),
        (x, weight, bias),
        upstream,
        dtype,
    )


@pytest.mark.parametrize("kind", list(MASKED_KINDS))
def test_where_gradient_is_numbanorms_backward(rng, kind):
    """jax.grad with a traced ``where`` against numbanorm's own backward of the forward."""
    shape, param_shape = MASKED_KINDS[kind]
    x, weight, bias, upstream = (np.asarray(a) for a in _data(rng, shape, param_shape, np.float32))
    where = _padding_mask(rng, shape)
    grads = jax.jit(
        jax.grad(
            lambda x, w, b, m: jnp.sum(_masked_function(kind, m)(x, w, b) * upstream),
            argnums=(0, 1, 2),
        )
    )(x, weight, bias, where)
    options = {"axis": (1, 2)} if kind == "layer" else {}
    forward = getattr(nbn, f"{kind}_norm_forward")
    backward = getattr(nbn, f"{kind}_norm_backward")
    params = (weight,) if kind == "rms" else (weight, bias)
    groups = (3,) if kind == "group" else ()
    running = (None, None) if kind in ("batch", "instance") else ()
    eps = {"eps": 1e-5} if kind == "rms" else {}
    _, *stats = forward(x, *groups, *running, *params, where=where, **options, **eps)
    expected = backward(upstream, x, *groups, *stats, weight, where=where, **options)
    for index, (grad, truth) in enumerate(zip(grads, expected)):
        _assert_close(grad, jnp.asarray(truth), np.float32, scale=10.0 if index else 1.0)
    if kind == "rms":
        assert float(jnp.abs(grads[2]).max()) == 0.0  # rms_norm has no bias


def test_a_traced_where_changes_without_recompiling(rng):
    x, weight, bias, _ = _data(rng, (4, 6, 5), 6, np.float32)
    compiled = jax.jit(lambda x, m: nnj.batch_norm(x, weight=weight, bias=bias, where=m)[0])
    for _ in range(2):
        where = _padding_mask(rng, x.shape)
        _assert_close(
            compiled(x, where), _masked_reference("batch", where)(x, weight, bias), np.float32
        )
    assert compiled._cache_size() == 1


def test_where_under_vmap(rng):
    x, weight, bias, upstream = _data(rng, (3, 4, 6, 5), 6, np.float32)
    masks = rng.random((3, 4, 1, 5)) < 0.6
    masks[0, 2] = False
    shared = masks[1]
    row_weight, row_bias = weight[:5], bias[:5]
    # Layer norm over the last axis: a batched mask (per element) and a shared one,
    # which normalizes every batch element in one call.
    for where, axes in ((masks, 0), (shared, None)):
        actual = jax.jit(
            jax.vmap(lambda x, m: nnj.layer_norm(x, row_weight, row_bias, where=m), (0, axes))
        )(x, where)
        expected = jax.vmap(
            lambda x, m: _masked_normalize(x, m, (2,), 1e-5) * row_weight + row_bias, (0, axes)
        )(x, where)
        _assert_close(actual, expected, np.float32)
    # Batch norm: each element with its own statistics; per-example gradients.
    rows = x[..., 0]  # (3, 4, 6): vmapped (N, C) batches, masks (N, 1)
    row_masks = masks[:, :, :, 0]

    def loss(f):
        return lambda x, m, w: jnp.sum(f(x, m, w) * upstream[..., 0][0])

    def ours(x, m, w):
        return nnj.batch_norm(x, weight=w, where=m)[0]

    def reference(x, m, w):
        return _affine(_masked_normalize(x, m, (0,), 1e-5), w, None, 1)

    actual, expected = (
        jax.jit(jax.vmap(jax.grad(loss(f), argnums=(0, 2)), (0, 0, None)))(rows, row_masks, weight)
        for f in (ours, reference)
    )
    for index, (grad, truth) in enumerate(zip(actual, expected)):
        _assert_close(grad, truth, np.float32, scale=10.0 if index else 1.0)


def test_batch_norm_running_statistics_with_where(rng, dtype):
    x, weight, bias, _ = _data(rng, (4, 3, 5), 3, dtype)
    where = _padding_mask(rng, x.shape)
    running = _running(rng, 3, dtype)
    y, new_mean, new_var = jax.jit(
        lambda x, m: nnj.batch_norm(x, *running, weight, bias, momentum=0.3, where=m)
    )(x, where)
    host_running = [np.array(r) for r in running]
    expected = nbn.batch_norm_forward(
        np.asarray(x),
        *host_running,
        np.asarray(weight),
        np.asarray(bias),
        momentum=0.3,
        where=where,
    )
    _assert_close(y, jnp.asarray(expected[0]), dtype)
    _assert_close(new_mean, jnp.asarray(host_running[0]), dtype)
    _assert_close(new_var, jnp.asarray(host_running[1]), dtype)
    selected = np.asarray(x, np.float64).transpose(1, 0, 2)[
        :, np.broadcast_to(where, x.shape)[:, 0]
    ]
    _assert_close(
        new_var,
        jnp.asarray((0.7 * np.asarray(running[1]) + 0.3 * selected.var(axis=1, ddof=1)), dtype),
        dtype,
    )


@pytest.mark.parametrize(
    "where, error, match",
    [
        (jnp.ones((2, 1, 6)), TypeError, "where must be a boolean array"),
        (jnp.ones((2, 3, 6), bool), ValueError, r"where of shape \(2, 3, 6\).*\(2, 4, 6\)"),
    ],
)
def test_where_errors(where, error, match):
    x = jnp.ones((2, 4, 6))
    for call in (nnj.batch_norm, nnj.layer_norm, nnj.instance_norm):
        with pytest.raises(error, match=match):
            call(x, where=where)
        with pytest.raises(error, match=match):  # at trace time, not in the callback
            jax.jit(lambda x, m, call=call: call(x, where=m))(x, where)
