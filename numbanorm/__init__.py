"""Normalization layers of deep learning as fast, stable NumPy-compatible kernels."""

from . import _layers, _norms
from ._accumulator import Moments, recompute_stats
from ._backends import cuda_available
from ._layers import *  # noqa: F403
from ._moments import moments
from ._norms import *  # noqa: F403
from ._pool import OutputPool, set_output_pool

__version__ = "0.2.0"

__all__ = [
    "Moments",
    "OutputPool",
    "cuda_available",
    "moments",
    "recompute_stats",
    "set_output_pool",
]
__all__ += _layers.__all__
__all__ += _norms.__all__
