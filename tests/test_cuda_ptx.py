"""Every GPU kernel compiles for a real GPU: PTX for compute capability 9.0.

The CUDA simulator runs the kernels' Python: it neither types nor compiles
them, and it takes the shared-memory path of the block merge instead of warp
shuffles. Numba compiles to PTX without a GPU when NVVM is installed (the
``cuda`` extra's CUDA toolkit wheels), so this checks the code a GPU runs.
"""

import numba
import numpy as np
import pytest
from numba import cuda, types
from numba.cuda import dispatcher

from numbanorm import _cuda_kernels as ck

CAPABILITY = (9, 0)


def _array(dtype, ndim, layout="C"):
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, layout)


class _StandInDevice:
    compute_capability = CAPABILITY


@pytest.fixture(scope="module", autouse=True)
def nvvm():
    if ck.SIMULATED:
        pytest.skip("the CUDA simulator is on: the kernels are not compiled")

    def probe(a):
        a[0] = 0

    try:
        cuda.compile_ptx(probe, (_array(np.float32, 1),), cc=CAPABILITY)
    except Exception as error:  # no NVVM or NVRTC library in this environment
        pytest.skip(f"cannot compile PTX here: {error}")
    # Numba compiles the device functions a kernel calls for the current
    # device; without a GPU, a stand-in of the kernel's capability.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatcher, "get_current_device", _StandInDevice)
        yield


def _signatures(x, acc):
    """Each kernel of :func:`_cuda_kernels.kernels` with argument types for data ``x``."""
    b, i8, f8 = types.boolean, types.int64, types.float64
    x3, x4 = _array(x, 3), _array(x, 4)
    stat, part = _array(acc, 2), _array(np.float64, 3)
    return {
        "rows_forward": (x4, b, b, b, f8, stat, stat, stat, stat, stat, x4),
        "rows_backward": (x4, x4, stat, stat, stat, b, b, x4),
        "columns_moments": (x3, b, i8, part, part),
        "columns_gradient_sums": (x3, x3, stat, stat, i8, i8, i8, part, part),
        "merge_column_moments": (part, part, i8, i8, i8, f8, stat, stat, stat),
        "merge_group_sums": (part, part, stat, i8, stat, stat),
        "merge_parameter_sums": (part, part, i8, _array(np.float64, 2), _array(np.float64, 2)),
        "column_coefficients": (stat, stat, stat, stat, stat, stat, i8, b, b, b, i8,
                                _array(acc, 3)),
        "columns_affine": (x3, x3, b, i8, _array(acc, 3), x3),
    }


@pytest.mark.parametrize("x,acc", [(np.float16, np.float32), (np.float32, np.float32),
                                   (np.float64, np.float64)], ids=["float16", "float32",
                                                                    "float64"])
def test_norm_kernels_compile(x, acc):
    kernels = ck.kernels(np.dtype(acc))
    for name, signature in _signatures(x, acc).items():
        ptx, _ = cuda.compile_ptx(getattr(kernels, name).py_func, signature, cc=CAPABILITY)
        assert ".entry" in ptx, name
        if name in ("rows_forward", "rows_backward"):
            assert "shfl.sync" in ptx, f"{name} merges without warp shuffles"


def test_array_plumbing_kernels_compile():
    shape = types.UniTuple(types.int64, 3)
    strided = _array(np.float32, 1, "A")
    for kernel, signature in [
        (ck.strided_copy, (_array(np.float16, 1), _array(np.float64, 1), shape, shape, shape,
                           types.float64)),
        (ck.fill, (_array(np.float32, 1), shape, shape, types.float64)),
        (ck.running_as_groups, (strided, strided, types.float64, _array(np.float32, 2),
                                _array(np.float32, 2))),
        (ck.update_running, (strided, strided, _array(np.float64, 2), _array(np.float64, 2),
                             types.float64, types.float64)),
    ]:
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=CAPABILITY)
        assert ".entry" in ptx
