"""Batch normalization of padded variable-length sequences, with and without a mask.

A batch of sequences of different lengths is padded to the longest one,
``x`` of shape ``(N, C, T)``.  Batch normalization of ``x`` as it is takes
its statistics over the padding too; with ``where=`` set to the valid frames
(a mask ``(N, 1, T)``, broadcast over the channels), the output on the valid
frames, the running statistics and the gradients are those of batch
normalization of the valid frames alone, packed into one array.  The script
prints how far each result is from that packed reference: the ``max error``
lines are rounding error, the ``off by`` line is what the padding does.
"""

import numpy as np

import numbanorm

rng = np.random.default_rng(0)
N, C, T = 8, 16, 100
lengths = rng.integers(20, T + 1, size=N)
valid = np.arange(T) < lengths[:, None, None]  # (N, 1, T)

# Padded with zeros, as a collate function does; the gradient of a loss over
# the valid frames is zero on the padding.
x = np.where(valid, 1.5 + 2.0 * rng.standard_normal((N, C, T)), 0).astype(np.float32)
dy = np.where(valid, rng.standard_normal((N, C, T)), 0).astype(np.float32)
weight = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
bias = (0.1 * rng.standard_normal(C)).astype(np.float32)


def packed(a):
    """The valid frames of ``a`` ``(N, C, T)``, one after the other: ``(1, C, sum(lengths))``."""
    return np.concatenate([a[n, :, : lengths[n]] for n in range(N)], axis=1)[None]


def training_step(x, dy, where=None):
    """The output, running statistics (from 0 and 1) and gradients of one training step."""
    running_mean, running_var = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, rstd = numbanorm.batch_norm_forward(
        x, running_mean, running_var, weight, bias, where=where
    )
    dx, dweight, dbias = numbanorm.batch_norm_backward(dy, x, mean, rstd, weight, where=where)
    return {
        "y": y,
        "running_mean": running_mean,
        "running_var": running_var,
        "dx": dx,
        "dweight": dweight,
        "dbias": dbias,
    }


def largest_difference(padded_results, packed_results):
    """The largest difference between results, compared on the valid frames."""
    return max(
        np.abs((packed(a) if a.ndim == 3 else a) - packed_results[name]).max()
        for name, a in padded_results.items()
    )


reference = training_step(packed(x), packed(dy))
padded = training_step(x, dy)
masked = training_step(x, dy, where=valid)

print(f"{N} sequences of {C} channels, {lengths.min()} to {lengths.max()} frames, padded to {T}")
print(f"reference: batch norm of the {lengths.sum()} valid frames, packed")
print(f"padded batch norm, off by: {largest_difference(padded, reference):.2e}")
print(f"masked batch norm, max error: {largest_difference(masked, reference):.2e}")

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch is not importable: no comparison with torch.nn.functional.batch_norm")
else:
    frames, w, b = (torch.from_numpy(a).requires_grad_() for a in (packed(x), weight, bias))
    running_mean, running_var = torch.zeros(C), torch.ones(C)
    y = F.batch_norm(frames, running_mean, running_var, w, b, training=True)
    y.backward(torch.from_numpy(packed(dy)))
    from_torch = {
        "y": y,
        "running_mean": running_mean,
        "running_var": running_var,
        "dx": frames.grad,
        "dweight": w.grad,
        "dbias": b.grad,
    }
    from_torch = {name: t.detach().numpy() for name, t in from_torch.items()}
    error = largest_difference(masked, from_torch)
    print(f"masked batch norm against torch on the packed frames, max error: {error:.2e}")
