"""Training with numbanorm's layers in plain NumPy, then exact population statistics.

A ``BatchNorm`` layer over signals ``(N, C, T)``, average pooling over time and
a linear readout learn a target by stochastic gradient descent, the layer
keeping its parameters' gradients and its running statistics.  After
training, ``recompute_stats`` replaces the running averages with the exact
mean and unbiased variance of the whole data set; the layer in evaluation
mode then normalizes with them, and survives a ``state_dict`` round trip
through ``np.savez``.  Run it with ``python examples/training_layers.py``.
"""

import io

import numpy as np

import numbanorm as nn

rng = np.random.default_rng(0)
N, C, T, BATCH = 512, 4, 16, 64
levels = rng.standard_normal((N, C, 1))  # what the target depends on, under noise and offsets
signals = (rng.uniform(-5, 5, (C, 1)) + levels + rng.standard_normal((N, C, T))).astype(np.float32)
targets = np.tanh(levels[:, :, 0] @ rng.standard_normal((C, 1))).astype(np.float32)

bn = nn.BatchNorm(C)
readout = np.zeros((C, 1), np.float32)
losses = []
for _ in range(5):
    for x, target in zip(np.split(signals, N // BATCH), np.split(targets, N // BATCH)):
        pooled = bn(x).mean(axis=2)
        error = pooled @ readout - target
        losses.append(np.mean(error**2))
        d_error = 2 * error / error.size
        d_pooled = d_error @ readout.T
        readout -= 0.5 * pooled.T @ d_error
        bn.backward(np.repeat(d_pooled[:, :, None] / T, T, axis=2))
        for name, param in bn.parameters().items():
            param -= 0.5 * bn.grads[name]
        bn.zero_grad()
last_epoch_loss = np.mean(losses[-N // BATCH :])
assert last_epoch_loss < 0.5 * losses[0], losses

exact_mean = signals.mean(axis=(0, 2), dtype=np.float64)
exact_var = signals.var(axis=(0, 2), dtype=np.float64, ddof=1)
running_average_error = np.abs(bn.running_var - exact_var).max()
nn.recompute_stats(bn, np.split(signals, N // BATCH))
stats_error = max(
    np.abs(bn.running_mean - exact_mean).max(), np.abs(bn.running_var - exact_var).max()
)

sample = signals[:BATCH]
y = bn.eval()(sample)
formula = (sample - exact_mean[:, None]) / np.sqrt(exact_var[:, None] + bn.eps)
eval_error = np.abs(y - (bn.weight[:, None] * formula + bn.bias[:, None])).max()
assert max(stats_error, eval_error) < 1e-5, (stats_error, eval_error)

saved = io.BytesIO()
np.savez(saved, **bn.state_dict())
saved.seek(0)
restored = nn.BatchNorm(C)
restored.load_state_dict(np.load(saved))
assert np.array_equal(restored.eval()(sample), y)

print(f"loss: {losses[0]:.4f} on the first batch, {last_epoch_loss:.4f} over the last epoch")
print(f"running variance from training, off by: {running_average_error:.2e}")
print(f"recomputed statistics against NumPy, max error: {stats_error:.2e}")
print(f"evaluation mode against NumPy, max error: {eval_error:.2e}")
print(f"state dict round trip: {len(bn.state_dict())} arrays, identical output")
