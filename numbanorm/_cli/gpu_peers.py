"""The benchmark's implementations on a GPU: numbanorm on device arrays, PyTorch CUDA, CuPy.

The counterpart of ``peers.py`` for ``python -m numbanorm bench --gpu``, with
the same calls placed on the device: numbanorm on CuPy arrays (PyTorch CUDA
tensors, or Numba device arrays, when CuPy is missing), ``torch.nn.functional``
on CUDA tensors (cuDNN where PyTorch uses it, autograd for the backward) and
the naive formulas in CuPy.  Every callable synchronizes the device before it
returns, so that wall time measures the work.
"""

import numpy as np
from numba import cuda

from . import peers
from .peers import PeerUnavailable

IMPLEMENTATIONS = ("numbanorm", "torch", "cupy")


def _synchronized(fn):
    def call():
        fn()
        cuda.synchronize()

    return call


def to_device(a):
    """``a`` on the GPU, as a CuPy array, else a PyTorch CUDA tensor, else a Numba array."""
    try:
        import cupy

        return cupy.asarray(a)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return torch.from_numpy(np.ascontiguousarray(a)).cuda()
    except ImportError:
        pass
    return cuda.to_device(np.ascontiguousarray(a))


def copy_call(x):
    """A device-to-device copy of ``x``'s size: the memory-bound ceiling."""
    src = cuda.to_device(x.reshape(-1))
    dst = cuda.device_array_like(src)
    return _synchronized(lambda: dst.copy_to_device(src))


def build(impl, direction, case, data):
    """A zero-argument callable running ``direction`` of ``case`` on the GPU with ``impl``."""
    peers.check_operation(impl, IMPLEMENTATIONS, direction, case)
    if impl == "numbanorm":
        return _synchronized(peers._numbanorm(direction, case, data, place=to_device))
    if impl == "torch":
        return _synchronized(peers._torch(direction, case, data, device="cuda"))
    try:
        import cupy
    except ImportError as error:
        raise PeerUnavailable("cupy is not importable") from error
    return _synchronized(peers._numpy(direction, case, data, xp=cupy))
