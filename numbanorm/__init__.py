"""Normalization layers of deep learning as fast, stable NumPy-compatible kernels."""

from ._backends import cuda_available
from ._moments import moments
from ._norms import (
    batch_norm,
    batch_norm_backward,
    batch_norm_forward,
    group_norm,
    group_norm_backward,
    group_norm_forward,
    instance_norm,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm,
    rms_norm_backward,
    rms_norm_forward,
)
from ._layers import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from ._accumulator import Moments, recompute_stats

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Moments",
    "RMSNorm",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "cuda_available",
    "group_norm",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "moments",
    "recompute_stats",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
]
