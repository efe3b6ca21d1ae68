"""What the GPU kernels of both regimes share: launch sizes and device functions.

The kernels work on the same canonical ``(B, O, C, I)`` view as the CPU
kernels (statistics per ``(b, c)`` group over ``O`` and ``I``; affine
parameters ``(C, W)`` with ``I == W * R``), in one of two regimes:
``_cuda_rows.py`` (a thread block per group) and ``_cuda_columns.py`` (column
tiles merged per group); ``_cuda_elementwise.py`` holds the kernels outside
them (layout copies, fills, running statistics).

Per-thread arithmetic runs in the accumulation type (float32 for float16 and
float32 data, float64 for float64); block merges run in float64.  Every
reduction has a fixed shape of work, so results are bit-identical between
runs.  Kernels and device functions whose arithmetic depends on the
accumulation type are built by factories that take it (float32 or float64),
cached per type; the others are plain kernels.

The block merge uses warp shuffles on a GPU; the Numba CUDA simulator has no
warp intrinsics, so there the merge goes through shared memory.
"""

import functools
import math

import numpy as np
from numba import config, cuda

SIMULATED = bool(getattr(config, "ENABLE_CUDASIM", False))

# The simulator runs every thread as a Python thread: its blocks are tiny,
# and its thresholds small enough that tiny inputs take both regimes.
BLOCK_THREADS = 8 if SIMULATED else 256
TILE_COLUMNS = 4 if SIMULATED else 32
TILE_ROWS = 2 if SIMULATED else 8
TARGET_BLOCKS = 4 if SIMULATED else 1024
ROW_MIN_LENGTH = 4 if SIMULATED else 32
MANY_GROUPS = 4 if SIMULATED else 256
SMALL_GROUP = 16 if SIMULATED else 16384
WARP_SIZE = 32
FULL_MASK = 0xFFFFFFFF

# How two partial states merge (see :func:`combine`).
CHAN = 0
SUM = 1


@cuda.jit(device=True)
def combine(mode, n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Merge two states: Chan's formula for ``(count, mean, M2)``, or three sums."""
    if mode == SUM:
        return n_a + n_b, mean_a + mean_b, m2_a + m2_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / n
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


if SIMULATED:

    @cuda.jit(device=True)
    def block_reduce(mode, p, q, r, shared):
        """Reduce one float64 triple per thread over a 1-D block; every thread gets the total.

        Shared-memory tree (the simulator has no warp shuffles); the block
        size must be a power of two.  ``shared`` is a ``(3, BLOCK_THREADS)``
        float64 shared array.
        """
        tid = cuda.threadIdx.x
        cuda.syncthreads()
        shared[0, tid] = p
        shared[1, tid] = q
        shared[2, tid] = r
        cuda.syncthreads()
        stride = cuda.blockDim.x // 2
        while stride > 0:
            if tid < stride:
                shared[0, tid], shared[1, tid], shared[2, tid] = combine(
                    mode,
                    shared[0, tid],
                    shared[1, tid],
                    shared[2, tid],
                    shared[0, tid + stride],
                    shared[1, tid + stride],
                    shared[2, tid + stride],
                )
            cuda.syncthreads()
            stride //= 2
        return shared[0, 0], shared[1, 0], shared[2, 0]
else:

    @cuda.jit(device=True)
    def block_reduce(mode, p, q, r, shared):
        """Reduce one float64 triple per thread over a 1-D block; every thread gets the total.

        Warp shuffles, then the warps' results through shared memory; the
        block size must be a multiple of the warp size.  ``shared`` is a
        ``(3, BLOCK_THREADS)`` float64 shared array.
        """
        tid = cuda.threadIdx.x
        offset = WARP_SIZE // 2
        while offset > 0:
            p_o = cuda.shfl_down_sync(FULL_MASK, p, offset)
            q_o = cuda.shfl_down_sync(FULL_MASK, q, offset)
            r_o = cuda.shfl_down_sync(FULL_MASK, r, offset)
            p, q, r = combine(mode, p, q, r, p_o, q_o, r_o)
            offset //= 2
        cuda.syncthreads()
        if tid % WARP_SIZE == 0:
            warp = tid // WARP_SIZE
            shared[0, warp] = p
            shared[1, warp] = q
            shared[2, warp] = r
        cuda.syncthreads()
        p = 0.0
        q = 0.0
        r = 0.0
        for warp in range(cuda.blockDim.x // WARP_SIZE):
            p, q, r = combine(mode, p, q, r, shared[0, warp], shared[1, warp], shared[2, warp])
        return p, q, r


@cuda.jit(device=True)
def reciprocal_sqrt(v):
    """``1 / sqrt(v)`` in float64, infinite at 0."""
    # A float64 NumPy scalar numerator makes 1/0 an IEEE infinity in the
    # simulator too (a Python float would raise there).
    return np.float64(1.0) / math.sqrt(v)


@cuda.jit(device=True)
def input_gradient_coefficients(sum_g, sum_gx, rstd, count, input_stats, centered, tiny):
    """``(shift, offset)`` of ``dx = dy*w*rstd + (x - mean)*shift + offset``, in float64.

    The backward's statistics-to-coefficients step, as the CPU kernels'
    ``_input_grad_coefficients``: ``sum_g = sum(dy*w)`` and ``sum_gx =
    sum(dy*w*(x - mean))`` over the ``count`` elements of a group give
    ``shift = -rstd**3 * sum_gx / count`` and ``offset = -rstd * sum_g /
    count`` (zero for a norm that is not ``centered``); without
    ``input_stats`` the statistics are constants and both are zero.
    ``shift`` scales like ``1 / var``: below ``tiny``, the smallest normal
    number of the accumulation type, it has lost its digits and is NaN.
    """
    if not input_stats:
        return 0.0, 0.0
    r = np.float64(rstd)
    mean_g = np.float64(sum_g) / count if centered else 0.0
    shift = -r * r * r * sum_gx / count
    if shift != 0.0 and abs(shift) < tiny:
        shift = math.nan
    return shift, -r * mean_g


@functools.cache
def welford_step(acc_dtype):
    """The device function ``(n, mean, m2) = step(n, mean, m2, v, centered)`` in ``acc_dtype``.

    Welford's update of a running ``(count, mean, M2)`` by the value ``v``;
    not ``centered`` (RMS norm), the mean stays zero and ``m2`` sums ``v*v``.
    """
    acc = np.dtype(acc_dtype).type

    @cuda.jit(device=True)
    def step(n, mean, m2, v, centered):
        n += acc(1)
        if centered:
            delta = v - mean
            mean += delta / n
            m2 += delta * (v - mean)
        else:
            m2 += v * v
        return n, mean, m2

    return step
