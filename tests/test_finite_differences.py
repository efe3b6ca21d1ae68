"""float64 backward checked by central finite differences of ``loss = sum(y * g)``."""

import numpy as np
import pytest

import numbanorm as nbn

STEP = 1e-6
RTOL = 1e-6
ATOL = 1e-8


def _numerical_gradient(loss, value):
    """Central differences of the scalar ``loss()`` with respect to each entry of ``value``."""
    gradient = np.empty_like(value)
    for index in np.ndindex(value.shape):
        original = value[index]
        value[index] = original + STEP
        loss_plus = loss()
        value[index] = original - STEP
        loss_minus = loss()
        value[index] = original
        gradient[index] = (loss_plus - loss_minus) / (2 * STEP)
    return gradient


def _check(forward, backward, x, params, rng):
    """Compare ``backward`` with finite differences of ``sum(forward(x, *params) * g)``.

    ``forward(x, *params)`` returns ``(y, *stats)``; ``backward(g, x, stats, *params)``
    returns ``(dx, *param_grads)`` where ``param_grads`` line up with ``params``.
    """
    y, *stats = forward(x, *params)
    g = rng.standard_normal(y.shape)
    dx, *param_grads = backward(g, x, stats, *params)

    def loss():
        return float(np.sum(forward(x, *params)[0] * g))

    np.testing.assert_allclose(dx, _numerical_gradient(loss, x), rtol=RTOL, atol=ATOL, err_msg="dx")
    for name, param, grad in zip(("weight", "bias"), params, param_grads):
        np.testing.assert_allclose(
            grad, _numerical_gradient(loss, param), rtol=RTOL, atol=ATOL, err_msg=name
        )


def _params(rng, shape, count=2):
    return [1.0 + 0.5 * rng.standard_normal(shape) for _ in range(count)]


@pytest.mark.parametrize("shape, axis", [((3, 4, 2), 1), ((4, 2, 3), -1), ((3, 5), 0)])
def test_batch_norm_training(rng, shape, axis):
    x = rng.standard_normal(shape)
    _check(
        lambda x, w, b: nbn.batch_norm_forward(x, None, None, w, b, axis=axis),
        lambda g, x, s, w, b: nbn.batch_norm_backward(g, x, *s, w, axis=axis),
        x,
        _params(rng, shape[axis]),
        rng,
    )


def test_batch_norm_eval(rng):
    x = rng.standard_normal((3, 4, 2))
    running_mean, running_var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    _check(
        lambda x, w, b: nbn.batch_norm_forward(x, running_mean, running_var, w, b, training=False),
        lambda g, x, s, w, b: nbn.batch_norm_backward(g, x, *s, w, training=False),
        x,
        _params(rng, 4),
        rng,
    )


@pytest.mark.parametrize(
    "shape, axis, weight_shape",
    [((3, 5), -1, (5,)), ((2, 3, 4), (0, 2), (2, 4)), ((3, 2, 4), 1, (2,))],
)
def test_layer_norm(rng, shape, axis, weight_shape):
    x = rng.standard_normal(shape)
    _check(
        lambda x, w, b: nbn.layer_norm_forward(x, w, b, axis=axis),
        lambda g, x, s, w, b: nbn.layer_norm_backward(g, x, *s, w, axis=axis),
        x,
        _params(rng, weight_shape),
        rng,
    )


@pytest.mark.parametrize("shape, axis, num_groups", [((2, 4, 3), 1, 2), ((2, 3, 6), -1, 3)])
def test_group_norm(rng, shape, axis, num_groups):
    x = rng.standard_normal(shape)
    _check(
        lambda x, w, b: nbn.group_norm_forward(x, num_groups, w, b, axis=axis),
        lambda g, x, s, w, b: nbn.group_norm_backward(g, x, num_groups, *s, w, axis=axis),
        x,
        _params(rng, shape[axis]),
        rng,
    )


@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm(rng, use_input_stats):
    x = rng.standard_normal((2, 3, 4))
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    _check(
        lambda x, w, b: nbn.instance_norm_forward(
            x, running_mean.copy(), running_var.copy(), w, b, use_input_stats=use_input_stats
        ),
        lambda g, x, s, w, b: nbn.instance_norm_backward(
            g, x, *s, w, use_input_stats=use_input_stats
        ),
        x,
        _params(rng, 3),
        rng,
    )


def test_instance_norm_channels_last(rng):
    x = rng.standard_normal((2, 4, 3))
    _check(
        lambda x, w, b: nbn.instance_norm_forward(x, None, None, w, b, axis=-1),
        lambda g, x, s, w, b: nbn.instance_norm_backward(g, x, *s, w, axis=-1),
        x,
        _params(rng, 3),
        rng,
    )


@pytest.mark.parametrize(
    "shape, axis, weight_shape", [((3, 5), -1, (5,)), ((2, 3, 4), (0, 2), (2, 4))]
)
def test_rms_norm(rng, shape, axis, weight_shape):
    x = rng.standard_normal(shape)
    _check(
        lambda x, w: nbn.rms_norm_forward(x, w, axis=axis, eps=1e-6),
        lambda g, x, s, w: nbn.rms_norm_backward(g, x, *s, w, axis=axis),
        x,
        _params(rng, weight_shape, count=1),
        rng,
    )


def test_gradients_without_weight_are_those_of_unit_weight(rng):
    x = rng.standard_normal((3, 4, 2))
    ones = np.ones(4)
    _, mean, rstd = nbn.batch_norm_forward(x)
    g = rng.standard_normal(x.shape)
    without = nbn.batch_norm_backward(g, x, mean, rstd)
    with_ones = nbn.batch_norm_backward(g, x, mean, rstd, ones)
    for a, b in zip(without, with_ones):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    _, rrms = nbn.rms_norm_forward(x, axis=(1, 2))
    without = nbn.rms_norm_backward(g, x, rrms, axis=(1, 2))
    with_ones = nbn.rms_norm_backward(g, x, rrms, np.ones((4, 2)), axis=(1, 2))
    for a, b in zip(without, with_ones):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
