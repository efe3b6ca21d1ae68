"""Layer norm and RMS norm over the last axis."""

import numpy as np

from numbanorm._peers import DIRECTIONS, IMPLEMENTATIONS, Case, build

from .common import NormBenchmark


class LayerNorm(NormBenchmark):
    norm = "layer_norm"


class RMSNorm(NormBenchmark):
    norm = "rms_norm"


class SmallCall:
    """Per-call overhead: layer norm of a (32, 64) float32 array, as in a framework's loop."""

    params = [list(IMPLEMENTATIONS), list(DIRECTIONS)]
    param_names = ["impl", "direction"]

    def setup(self, impl, direction):
        case = Case("layer_norm", (32, 64), "rows")
        self.call = build(impl, direction, case, case.data(np.float32))
        self.call()

    def time_call(self, impl, direction):
        self.call()
