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

from numbanorm import _cuda_columns, _cuda_elementwise, _cuda_rows
from numbanorm._cuda_shared import SIMULATED

CAPABILITY = (9, 0)


def _array(dtype, ndim, layout="C"):
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, layout)


class _StandInDevice:
    compute_capability = CAPABILITY


@pytest.fixture(scope="module", autouse=True)
def nvvm():
    if SIMULATED:
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


def _compile(kernel, signature):
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=CAPABILITY)
    assert ".entry" in ptx, kernel.py_func.__qualname__
    return ptx


def _factory_signatures(x, acc):
    """Each kernel factory's argument types for data ``x`` accumulated in ``acc``."""
    b, i8, f8 = types.boolean, types.int64, types.float64
    x3, x4 = _array(x, 3), _array(x, 4)
    stat, part = _array(acc, 2), _array(np.float64, 3)
    return [
        (_cuda_rows.rows_forward, (x4, b, b, b, f8, stat, stat, stat, stat, stat, x4)),
        (_cuda_rows.rows_backward, (x4, x4, stat, stat, stat, b, b, x4)),
        (_cuda_columns.columns_moments, (x3, b, i8, part, part)),
        (_cuda_columns.columns_gradient_sums, (x3, x3, stat, stat, i8, i8, i8, part, part)),
        (
            _cuda_columns.column_coefficients,
            (stat, stat, stat, stat, stat, stat, i8, b, b, b, i8, _array(acc, 3)),
        ),
        (_cuda_columns.columns_affine, (x3, x3, b, i8, _array(acc, 3), x3)),
    ]


# Kernels that merge across a block, whose PTX must use warp shuffles.
BLOCK_MERGES = (_cuda_rows.rows_forward, _cuda_rows.rows_backward)


@pytest.mark.parametrize(
    "x,acc",
    [(np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64)],
    ids=["float16", "float32", "float64"],
)
def test_norm_kernels_compile(x, acc):
    for factory, signature in _factory_signatures(x, acc):
        ptx = _compile(factory(np.dtype(acc)), signature)
        if factory in BLOCK_MERGES:
            assert "shfl.sync" in ptx, f"{factory.__name__} merges without warp shuffles"


@pytest.mark.parametrize("acc", [np.float32, np.float64])
def test_merge_kernels_compile(acc):
    i8, f8 = types.int64, types.float64
    stat, part, grad = _array(acc, 2), _array(np.float64, 3), _array(np.float64, 2)
    for kernel, signature in [
        (_cuda_columns.merge_column_moments, (part, part, i8, i8, i8, f8, stat, stat, stat)),
        (_cuda_columns.merge_group_sums, (part, part, stat, i8, stat, stat)),
        (_cuda_columns.merge_parameter_sums, (part, part, i8, grad, grad)),
    ]:
        assert "shfl.sync" in _compile(kernel, signature), kernel.py_func.__name__


def test_elementwise_kernels_compile():
    shape = types.UniTuple(types.int64, 3)
    strided = _array(np.float32, 1, "A")
    for kernel, signature in [
        (
            _cuda_elementwise.strided_copy,
            (_array(np.float16, 1), _array(np.float64, 1), shape, shape, shape, types.float64),
        ),
        (_cuda_elementwise.strided_fill, (_array(np.float32, 1), shape, shape, types.float64)),
        (
            _cuda_elementwise.running_as_groups,
            (strided, strided, types.float64, _array(np.float32, 2), _array(np.float32, 2)),
        ),
        (
            _cuda_elementwise.update_running,
            (
                strided,
                strided,
                _array(np.float64, 2),
                _array(np.float64, 2),
                types.float64,
                types.float64,
            ),
        ),
    ]:
        _compile(kernel, signature)
