"""Layer norm and RMS norm over the last axis."""

from .common import NormBenchmark
from .peers import DIRECTIONS, IMPLEMENTATIONS, Case, build


class LayerNorm(NormBenchmark):
    norm = "layer_norm"


class RMSNorm(NormBenchmark):
    norm = "rms_norm"


class SmallCall:
    """Per-call overhead: layer norm of a (32, 64) float32 array, as in a framework's loop."""

    params = [list(IMPLEMENTATIONS), list(DIRECTIONS)]
    param_names = ["impl", "direction"]

    def setup(self, impl, direction):
        self.call = build(impl, direction, Case("layer_norm", (32, 64), "rows"), "float32")
        self.call()

    def time_call(self, impl, direction):
        self.call()
