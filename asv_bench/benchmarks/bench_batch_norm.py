"""Batch norm: channels-first images, 2-D features and channels-last images."""

from .common import NormBenchmark, SmallCallBenchmark
from .peers import Case


class BatchNorm(NormBenchmark):
    norm = "batch_norm"


class SmallCall(SmallCallBenchmark):
    """Batch norm of a (32, 64) float32 array."""

    case = Case("batch_norm", (32, 64), "2-D")
