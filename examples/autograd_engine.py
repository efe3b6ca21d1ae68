"""Training a small MLP with explicit forward and backward passes around layer norm.

The model, ``linear -> layer norm -> ReLU -> linear``, learns a smooth
function of its input by gradient descent.  ``layer_norm_forward`` returns
the statistics that ``layer_norm_backward`` takes, so the backward pass is
written by hand like the rest of the model's.  The script checks that the
loss falls, and a gradient against finite differences of the loss.  Run it
with ``python examples/autograd_engine.py``.
"""

import numpy as np

import numbanorm as nn

rng = np.random.default_rng(0)
inputs = rng.uniform(-2, 2, (128, 4))
targets = np.sin(inputs.sum(axis=1, keepdims=True))
model = {
    "w1": rng.standard_normal((4, 32)) / 2,
    "b1": np.zeros(32),
    "gamma": np.ones(32),
    "beta": np.zeros(32),
    "w2": rng.standard_normal((32, 1)) / 6,
    "b2": np.zeros(1),
}


def loss_and_gradients(params):
    """The mean squared error of the model and its gradient for every parameter."""
    hidden = inputs @ params["w1"] + params["b1"]
    normed, mean, rstd = nn.layer_norm_forward(hidden, params["gamma"], params["beta"])
    active = np.maximum(normed, 0)
    error = active @ params["w2"] + params["b2"] - targets

    d_output = 2 * error / error.size
    d_normed = (d_output @ params["w2"].T) * (normed > 0)
    d_hidden, d_gamma, d_beta = nn.layer_norm_backward(
        d_normed, hidden, mean, rstd, params["gamma"]
    )
    return np.mean(error**2), {
        "w1": inputs.T @ d_hidden,
        "b1": d_hidden.sum(axis=0),
        "gamma": d_gamma,
        "beta": d_beta,
        "w2": active.T @ d_output,
        "b2": d_output.sum(axis=0),
    }


def loss_with_w1_entry(value):
    """The loss with ``w1[2, 5]`` set to ``value``."""
    w1 = model["w1"].copy()
    w1[2, 5] = value
    return loss_and_gradients(dict(model, w1=w1))[0]


# w1's gradient is the one that goes through layer norm's backward to reach it.
analytic = loss_and_gradients(model)[1]["w1"][2, 5]
step, entry = 1e-6, model["w1"][2, 5]
numeric = (loss_with_w1_entry(entry + step) - loss_with_w1_entry(entry - step)) / (2 * step)
relative_error = abs(analytic - numeric) / abs(numeric)
assert relative_error < 1e-6, (analytic, numeric)

losses = []
for _ in range(200):
    loss, gradients = loss_and_gradients(model)
    losses.append(loss)
    for name, gradient in gradients.items():
        model[name] -= 0.1 * gradient
assert losses[-1] < 0.5 * losses[0], losses

print(f"loss over {len(losses)} steps: {losses[0]:.4f} -> {losses[-1]:.4f}")
print(f"gradient of w1[2, 5] against finite differences, relative max error: {relative_error:.2e}")
