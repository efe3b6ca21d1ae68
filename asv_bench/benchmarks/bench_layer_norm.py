"""Layer norm and RMS norm over the last axis."""

from .common import NormBenchmark


class LayerNorm(NormBenchmark):
    norm = "layer_norm"


class RMSNorm(NormBenchmark):
    norm = "rms_norm"
