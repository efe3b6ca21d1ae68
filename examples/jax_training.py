"""``numbanorm.jax`` inside ``jax.jit`` and ``jax.grad``: training a tiny model.

The model, ``linear -> layer norm -> tanh -> linear``, is trained by a few
steps of gradient descent in a jitted step function, twice: once with
``numbanorm.jax.layer_norm`` (numbanorm's kernels, forward and backward) and
once with layer norm written in ``jax.numpy``.  The two trainings follow the
same path: the script checks their losses and final parameters agree.  Run it
with ``python examples/jax_training.py``.
"""

import jax
import jax.numpy as jnp

import numbanorm.jax as nnj


def jnp_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * weight + bias


def train(layer_norm, params, inputs, targets, steps=20):
    """The losses of ``steps`` gradient-descent steps, and the parameters they end with."""

    def loss(params):
        hidden = layer_norm(inputs @ params["w1"], params["gamma"], params["beta"])
        return jnp.mean((jnp.tanh(hidden) @ params["w2"] - targets) ** 2)

    @jax.jit
    def step(params):
        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree.map(lambda p, g: p - 0.2 * g, params, grads)

    losses = []
    for _ in range(steps):
        value, params = step(params)
        losses.append(float(value))
    return losses, params


keys = jax.random.split(jax.random.key(0), 3)
inputs = jax.random.normal(keys[0], (64, 8))
targets = jnp.sin(inputs[:, :2].sum(axis=1, keepdims=True))
params = {
    "w1": jax.random.normal(keys[1], (8, 16)) / 3,
    "gamma": jnp.ones(16),
    "beta": jnp.zeros(16),
    "w2": jax.random.normal(keys[2], (16, 1)) / 4,
}

losses, trained = train(nnj.layer_norm, params, inputs, targets)
reference_losses, reference = train(jnp_layer_norm, params, inputs, targets)
assert losses[-1] < 0.7 * losses[0], losses
loss_error = max(abs(a - b) for a, b in zip(losses, reference_losses))
param_error = max(float(jnp.abs(trained[k] - reference[k]).max()) for k in trained)
assert max(loss_error, param_error) < 1e-4, (loss_error, param_error)

print(f"loss over {len(losses)} jitted steps: {losses[0]:.4f} -> {losses[-1]:.4f}")
print(f"losses against plain jax.numpy layer norm, max error: {loss_error:.2e}")
print(f"trained parameters against plain jax.numpy layer norm, max error: {param_error:.2e}")
