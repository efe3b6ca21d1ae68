"""Batch norm: channels-first images, 2-D features and channels-last images."""

from .common import NormBenchmark


class BatchNorm(NormBenchmark):
    norm = "batch_norm"
