"""``numbanorm.moments`` against ``np.mean``/``np.var`` and the other peers."""

from .common import NormBenchmark


class Moments(NormBenchmark):
    norm = "moments"
    directions = ("forward",)
