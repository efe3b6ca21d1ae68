"""Normalization layers of deep learning as fast, stable NumPy-compatible kernels."""

from . import _layers, _norms
from ._accumulator import Moments, recompute_stats
from ._backends import cuda_available
from ._layers import *  # noqa: F403
from ._moments import moments
from ._norms import *  # noqa: F403

__version__ = "0.1.0"

__all__ = ["Moments", "cuda_available", "moments", "recompute_stats"]
__all__ += _layers.__all__
__all__ += _norms.__all__
