"""Every norm on a GPU: numbanorm on device arrays beside PyTorch CUDA and CuPy.

Skipped (``NotImplementedError``) where no CUDA GPU is usable; each call
synchronizes the device, so the time is the work's.
"""

from .peers import CASES, DIRECTIONS, GPU_IMPLEMENTATIONS, build, device_copy

DTYPES = ("float32", "float16")
LABELED = {f"{case.norm} {case.label}": case for case in CASES}


class GpuNorm:
    params = [list(GPU_IMPLEMENTATIONS), list(DTYPES), list(LABELED), list(DIRECTIONS)]
    param_names = ["impl", "dtype", "case", "direction"]
    timeout = 300

    def setup(self, impl, dtype, case, direction):
        self.call = build(impl, direction, LABELED[case], dtype, gpu=True)
        self.call()

    def time_call(self, impl, dtype, case, direction):
        self.call()


class GpuCopy:
    """The ceiling: a device-to-device copy of each case's input."""

    params = [list(DTYPES), list(LABELED)]
    param_names = ["dtype", "case"]

    def setup(self, dtype, case):
        self.call = device_copy(LABELED[case], dtype)
        self.call()

    def time_copy(self, dtype, case):
        self.call()
