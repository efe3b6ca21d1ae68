"""Group norm and instance norm, channels-first and channels-last."""

from .common import NormBenchmark, SmallCallBenchmark
from .peers import Case


class GroupNorm(NormBenchmark):
    norm = "group_norm"


class InstanceNorm(NormBenchmark):
    norm = "instance_norm"


class SmallCall(SmallCallBenchmark):
    """Group norm of a (4, 32, 8, 8) float32 array, 8 groups."""

    case = Case("group_norm", (4, 32, 8, 8), "NCHW", groups=8)
