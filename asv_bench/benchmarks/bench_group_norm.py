"""Group norm and instance norm, channels-first and channels-last."""

from .common import NormBenchmark


class GroupNorm(NormBenchmark):
    norm = "group_norm"


class InstanceNorm(NormBenchmark):
    norm = "instance_norm"
