"""Normalization layers of deep learning as fast, stable NumPy-compatible kernels."""

from ._accumulator import Moments, recompute_stats
from ._backends import cuda_available
from ._layers import *  # noqa: F403
from ._layers import __all__ as _layer_names
from ._moments import moments
from ._norms import *  # noqa: F403
from ._norms import __all__ as _norm_names

__version__ = "0.1.0"

__all__ = sorted(
    ["Moments", "cuda_available", "moments", "recompute_stats", *_layer_names, *_norm_names]
)
