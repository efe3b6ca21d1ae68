"""Batch norm: channels-first images, 2-D features and channels-last images."""

from .common import NormBenchmark, SmallCallBenchmark
from .peers import DIRECTIONS, EVAL_DIRECTIONS, Case


class BatchNorm(NormBenchmark):
    """Training forwards and backwards, and the evaluation forward (a pure elementwise pass)."""

    norm = "batch_norm"
    directions = (*DIRECTIONS, *EVAL_DIRECTIONS)


class SmallCall(SmallCallBenchmark):
    """Batch norm of a (32, 64) float32 array."""

    case = Case("batch_norm", (32, 64), "2-D")
