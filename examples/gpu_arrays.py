"""The norms on GPU device arrays, checked against the same calls on NumPy arrays.

A device array (a Numba one from ``numba.cuda.to_device``, and a CuPy one
when CuPy is importable) runs numbanorm's CUDA kernels and gives back an
array of its own library; running statistics on the device are updated in
place there.  Run it with ``python examples/gpu_arrays.py`` on a machine
with a CUDA GPU, or anywhere with ``NUMBA_ENABLE_CUDASIM=1`` in the
environment, under Numba's CUDA simulator (slow: the arrays are tiny).
"""

import numpy as np
from numba import cuda

import numbanorm as nn

if not nn.cuda_available():
    raise SystemExit("no CUDA GPU: run with NUMBA_ENABLE_CUDASIM=1 for Numba's simulator")

rng = np.random.default_rng(0)
x = (3 + rng.standard_normal((4, 3, 5))).astype(np.float32)  # (N, C, T)
dy = rng.standard_normal(x.shape).astype(np.float32)
weight = rng.standard_normal(3).astype(np.float32)
bias = rng.standard_normal(3).astype(np.float32)


def training_step(*arrays):
    """A batch norm forward (running statistics from 0 and 1) and backward, and a layer norm."""
    x, dy, weight, bias, running_mean, running_var = arrays
    y, mean, rstd = nn.batch_norm_forward(x, running_mean, running_var, weight, bias)
    dx, dweight, dbias = nn.batch_norm_backward(dy, x, mean, rstd, weight)
    layer_normed = nn.layer_norm(x, axis=(1, 2))
    return y, running_mean, running_var, dx, dweight, dbias, layer_normed


def running_start():
    return np.zeros(3, np.float32), np.ones(3, np.float32)


on_host = training_step(x, dy, weight, bias, *running_start())
devices = {"numba": (cuda.to_device, lambda a: a.copy_to_host())}
try:
    import cupy
except ImportError:
    print("cupy is not importable: Numba device arrays only")
else:
    devices["cupy"] = (cupy.asarray, cupy.asnumpy)

for library, (to_device, to_host) in devices.items():
    on_device = training_step(*map(to_device, (x, dy, weight, bias, *running_start())))
    error = max(np.abs(to_host(d) - h).max() for d, h in zip(on_device, on_host))
    assert error < 1e-5, error
    print(f"{library} device arrays against NumPy arrays, max error: {error:.2e}")
