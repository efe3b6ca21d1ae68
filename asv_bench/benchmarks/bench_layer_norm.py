"""Layer norm and RMS norm over the last axis."""

from .common import NormBenchmark, SmallCallBenchmark
from .peers import Case


class LayerNorm(NormBenchmark):
    norm = "layer_norm"


class RMSNorm(NormBenchmark):
    norm = "rms_norm"


class SmallCall(SmallCallBenchmark):
    """Layer norm of a (32, 64) float32 array."""

    case = Case("layer_norm", (32, 64), "rows")


class SmallRMSCall(SmallCallBenchmark):
    """RMS norm of a (32, 64) float32 array."""

    case = Case("rms_norm", (32, 64), "rows")
