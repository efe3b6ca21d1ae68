"""Time against input size, from 4 KiB to 1 GiB: no cliff where the plan changes regime.

Layer norm over rows of 1024 and batch norm of NCHW input with 16 samples and
64 channels, float32, ``out=`` forward and backward.  The input sizes grow by
factors of 8; dividing the bytes a call must move by its time gives the
bandwidth curve of the performance page.
"""

from .peers import Case, build

SIZES = [4096 * 8**k for k in range(7)]  # 4 KiB to 1 GiB


def scaling_case(norm, size):
    """The input of ``norm`` that holds ``size`` bytes of float32."""
    elements = size // 4
    if norm == "layer_norm":
        return Case(norm, (elements // 1024, 1024), "rows")
    return Case(norm, (16, 64, elements // (16 * 64), 1), "NCHW")


class Scaling:
    params = (["layer_norm", "batch_norm"], SIZES, ["forward_out", "backward_out"])
    param_names = ["norm", "bytes", "direction"]
    timeout = 600

    def setup(self, norm, size, direction):
        self.call = build("numbanorm", direction, scaling_case(norm, size), "float32")
        self.call()

    def time_call(self, norm, size, direction):
        self.call()
