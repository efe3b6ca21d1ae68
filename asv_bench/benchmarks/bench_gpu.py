"""Every norm on a GPU: numbanorm on device arrays beside PyTorch CUDA and CuPy.

Skipped (``NotImplementedError``) where no CUDA GPU is usable; each call
synchronizes the device, so the time is the work's.
"""

import numpy as np

from numbanorm._peers import BENCHMARK_CASES, DIRECTIONS, PeerUnavailable

DTYPES = ("float32", "float16")
CASES = {case.label: case for case in BENCHMARK_CASES}


class GpuNorm:
    params = [["numbanorm", "torch", "cupy"], list(DTYPES), list(CASES), list(DIRECTIONS)]
    param_names = ["impl", "dtype", "case", "direction"]
    timeout = 300

    def setup(self, impl, dtype, case, direction):
        import numbanorm

        if not numbanorm.cuda_available():
            raise PeerUnavailable("no CUDA GPU")
        from numbanorm import _gpu_peers

        case = CASES[case]
        self.call = _gpu_peers.build(impl, direction, case, case.data(np.dtype(dtype)))
        self.call()

    def time_call(self, impl, dtype, case, direction):
        self.call()


class GpuCopy:
    """The ceiling: a device-to-device copy of each case's input."""

    params = [list(DTYPES), list(CASES)]
    param_names = ["dtype", "case"]

    def setup(self, dtype, case):
        import numbanorm

        if not numbanorm.cuda_available():
            raise PeerUnavailable("no CUDA GPU")
        from numbanorm import _gpu_peers

        self.call = _gpu_peers.copy_call(CASES[case].data(np.dtype(dtype))["x"])
        self.call()

    def time_copy(self, dtype, case):
        self.call()
