"""Every GPU kernel compiles for a real GPU: PTX for compute capability 9.0.

The CUDA simulator runs the kernels' Python: it neither types nor compiles
them, and it takes the shared-memory path of the block merge instead of warp
shuffles. Numba compiles to PTX without a GPU when NVVM is installed (the
``cuda`` extra's CUDA toolkit wheels), so this checks the code a GPU runs.
"""

import os
import re
import subprocess

import numba
import numpy as np
import pytest
from numba import cuda, types
from numba.cuda import dispatcher

from numbanorm import _cuda_columns, _cuda_elementwise, _cuda_rows
from numbanorm._cuda_shared import SIMULATED, UNROLL

CAPABILITY = (9, 0)


def _array(dtype, ndim, layout="C"):
    return types.Array(numba.from_dtype(np.dtype(dtype)), ndim, layout)


class _StandInDevice:
    compute_capability = CAPABILITY


@pytest.fixture(scope="module", autouse=True)
def nvvm():
    if SIMULATED:
        pytest.skip("the CUDA simulator is on: the kernels are not compiled")
    # The CUDA target that Numba itself still ships compiles other signatures.
    pytest.importorskip("numba_cuda", reason="needs numba-cuda, the cuda extra")

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


def _norm_kernels(x, acc):
    """``(kernel, argument types)`` of every norm kernel, for data ``x`` accumulated in ``acc``:
    unmasked (``None`` for the mask arguments), then masked."""
    return _kernels(x, acc, False) + _kernels(x, acc, True)


def _kernels(x, acc, masked):
    b, i8, f8 = types.boolean, types.int64, types.float64
    x3, x4 = _array(x, 3), _array(x, 4)
    # Scratch statistics are float64, public ones in the accumulation dtype;
    # parameters are read in their own dtype, here that of the data.
    stat, public, part = _array(np.float64, 2), _array(acc, 2), _array(np.float64, 3)
    param, counter = _array(x, 2), _array(np.int32, 1)
    # Running statistics folded in by a statistics kernel's last block.
    running = _array(acc, 1)
    fold = types.Tuple((b, running, running, f8, f8))
    # A mask broadcast along some axes has zero strides there.
    none, mask = types.none, _array(np.bool_, 4, "A")
    return [
        (
            _cuda_rows.rows_forward(acc),
            (x4, i8, b, b, b, f8, public, stat, public, param, param, x4, counter, fold)
            + (types.Tuple((mask, stat)) if masked else none,),
        ),
        (
            _cuda_rows.rows_backward(acc),
            (x4, x4, i8, public, public, param, b, b, b, x4, stat, mask if masked else none),
        ),
        (
            _cuda_columns.columns_moments,
            (
                x3,
                i8,
                b,
                i8,
                part,
                part,
                counter,
                f8,
                types.Tuple((stat, stat, public, public)),
                fold,
                types.Tuple((mask, part, stat)) if masked else none,
            ),  # fmt: skip
        ),
        (
            _cuda_columns.columns_gradient_sums(acc),
            (
                x3,
                x3,
                public,
                public,
                i8,
                i8,
                i8,
                types.UniTuple(part, 3),
                counter,
                types.UniTuple(param, 2),
                types.Tuple((b, param, b, b, b, i8, stat, stat, stat)),
                types.Tuple((mask, part)) if masked else none,
            ),  # fmt: skip
        ),
        (
            _cuda_columns.group_coefficients(acc),
            (types.UniTuple(part, 3), param, public, public, i8, stat, stat, stat)
            + (part if masked else none,),
        ),
        (
            _cuda_columns.columns_affine(acc),
            (x3, x3, b, i8, stat, public, param, param, stat, stat, x3, mask if masked else none),
        ),
    ]


# Kernels that merge across a block, whose PTX must use warp shuffles.
BLOCK_MERGES = (
    "rows_forward",
    "rows_backward",
    "columns_moments",
    "columns_gradient_sums",
    "group_coefficients",
)

DATA_TYPES = pytest.mark.parametrize(
    "x,acc",
    [(np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64)],
    ids=["float16", "float32", "float64"],
)


@DATA_TYPES
def test_norm_kernels_compile(x, acc):
    for kernel, signature in _norm_kernels(x, np.dtype(acc)):
        ptx = _compile(kernel, signature)
        name = kernel.py_func.__name__
        if name in BLOCK_MERGES or kernel.py_func.__qualname__.split(".")[0] in BLOCK_MERGES:
            assert "shfl.sync" in ptx, f"{kernel.py_func.__qualname__} merges without warp shuffles"


def test_elementwise_kernels_compile():
    shape = types.UniTuple(types.int64, 3)
    strided = _array(np.float32, 1, "A")
    for kernel, signature in [
        (
            _cuda_elementwise.strided_copy,
            (_array(np.float16, 1), _array(np.float64, 1), shape, shape, shape, types.float64),
        ),
        # A mask expanded where the canonical view needs it.
        (
            _cuda_elementwise.strided_copy,
            (_array(np.bool_, 1), _array(np.bool_, 1), shape, shape, shape, types.float64),
        ),
        (_cuda_elementwise.strided_fill, (_array(np.float32, 1), shape, shape, types.float64)),
        (
            _cuda_elementwise.selected_moments,
            (*(_array(np.float64, 2),) * 3, types.int64),
        ),
        (
            _cuda_elementwise.running_as_groups,
            (strided, strided, types.float64, _array(np.float32, 2), _array(np.float32, 2)),
        ),
        (
            _cuda_elementwise.update_running,
            (
                types.Tuple((types.boolean, strided, strided, types.float64, types.float64)),
                _array(np.float64, 2),
                _array(np.float64, 2),
            ),
        ),
    ]:
        _compile(kernel, signature)


# ----------------------------------------------------------------------------
# Kernel quality, read from the PTX


def _blocks(ptx):
    """The PTX's basic blocks: ``(lines, successors)`` each, successors by index."""
    blocks, labels = [[]], {}
    for line in ptx.splitlines():
        line = line.strip()
        label = re.match(r"^(\$L__BB\d+_\d+):", line)
        if label:
            labels[label.group(1)] = len(blocks)
            blocks.append([])
        elif line:
            blocks[-1].append(line)
    successors = []
    for index, lines in enumerate(blocks):
        targets = set()
        last = lines[-1] if lines else ""
        for line in lines:
            jump = re.search(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);", line)
            if jump:
                targets.add(labels[jump.group(1)])
        unconditional = re.match(r"^(bra|ret)", last) is not None
        if not unconditional and index + 1 < len(blocks):
            targets.add(index + 1)
        successors.append(targets)
    return blocks, successors


def _reachable(successors, start):
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(successors[node])
    return seen


def _loop_lines(ptx):
    """The instructions inside loops: blocks on a cycle of the control-flow graph."""
    blocks, successors = _blocks(ptx)
    lines = []
    for index in range(len(blocks)):
        if any(index in _reachable(successors, s) for s in successors[index]):
            lines.extend(blocks[index])
    return lines


def _name(kernel):
    return kernel.py_func.__qualname__.split(".")[0]


@DATA_TYPES
def test_kernels_divide_no_64_bit_integers_inside_loops(x, acc):
    """A 64-bit integer division is a long emulated sequence; loops advance by addition."""
    for kernel, signature in _norm_kernels(x, np.dtype(acc)):
        divisions = [
            line
            for line in _loop_lines(_compile(kernel, signature))
            if re.match(r"^(div|rem)\.[su]64", line)
        ]
        assert not divisions, (_name(kernel), divisions)


def test_loop_finder_sees_loops_and_only_loops():
    def counted(a, n):
        for i in range(n):
            a[i] = a[i] // n

    def straight(a, n):
        a[0] = a[1] // n

    signature = (_array(np.int64, 1), types.int64)
    assert any(
        line.startswith("div.s64") for line in _loop_lines(_compile_function(counted, signature))
    )
    assert not any(
        line.startswith("div.s64") for line in _loop_lines(_compile_function(straight, signature))
    )


def _compile_function(function, signature):
    ptx, _ = cuda.compile_ptx(function, signature, cc=CAPABILITY)
    return ptx


# The loops over the data that a kernel unrolls: both passes of the rows
# kernels, the one pass of each column-tile kernel.
UNROLLED_LOOPS = {
    "rows_forward": 2,
    "rows_backward": 2,
    "columns_moments": 1,
    "columns_gradient_sums": 1,
    "columns_affine": 1,
}


@DATA_TYPES
def test_kernels_keep_several_loads_in_flight(x, acc):
    """Each pass over the data has a loop that issues ``UNROLL`` loads before its first
    division or store."""
    for kernel, signature in _norm_kernels(x, np.dtype(acc)):
        if _name(kernel) not in UNROLLED_LOOPS:
            continue
        blocks, successors = _blocks(_compile(kernel, signature))
        unrolled = 0
        for index, lines in enumerate(blocks):
            if not any(index in _reachable(successors, s) for s in successors[index]):
                continue
            loads = 0
            for line in lines:
                if re.match(r"^(div|rcp|st)\.", line):
                    break
                loads += line.startswith("ld.global")
            unrolled += loads >= UNROLL
        assert unrolled >= UNROLLED_LOOPS[_name(kernel)], (_name(kernel), unrolled)


def _ptxas():
    """The ``ptxas`` of the CUDA compiler wheel the ``cuda`` extra brings, or skip."""
    try:
        import nvidia.cuda_nvcc
    except ImportError:
        pytest.skip("no CUDA compiler wheel: no ptxas")
    for folder in nvidia.cuda_nvcc.__path__:
        path = os.path.join(folder, "bin", "ptxas")
        if os.path.exists(path):
            return path
    pytest.skip("the CUDA compiler wheel has no ptxas")


def _resources(ptxas, ptx, tmp_path):
    """``(registers, spilled bytes)`` per thread of a kernel's PTX, as ``ptxas -v`` reports."""
    source = tmp_path / "kernel.ptx"
    source.write_text(ptx)
    report = subprocess.run(
        [ptxas, "-v", "--gpu-name", "sm_90", str(source), "-o", os.devnull],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = re.search(r"(\d+) bytes spill stores", report)
    return registers, int(spills.group(1)) if spills else 0


# Registers a thread may use: 64 leaves half of an sm_90 SM's 2,048 threads
# possible.  The rows kernels take about 96 (a quarter): their unrolled
# passes over two or three streams, with Numba's 64-bit indexing; capped at
# 64 they would spill 200 to 300 bytes a thread inside those loops.
REGISTERS = {"rows_forward": 112, "rows_backward": 112, "columns_gradient_sums": 80}
# The masked elementwise pass of the columns regime holds a mask byte and its
# address beside each of its four elements: 72 registers for float64 data.
MASKED_REGISTERS = {**REGISTERS, "columns_affine": 72}


@DATA_TYPES
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_kernels_fit_their_registers_without_spilling(x, acc, masked, tmp_path):
    ptxas = _ptxas()
    ceilings = MASKED_REGISTERS if masked else REGISTERS
    for kernel, signature in _kernels(x, np.dtype(acc), masked):
        registers, spilled = _resources(ptxas, _compile(kernel, signature), tmp_path)
        assert spilled == 0, (_name(kernel), spilled)
        assert registers <= ceilings.get(_name(kernel), 64), (_name(kernel), registers)
