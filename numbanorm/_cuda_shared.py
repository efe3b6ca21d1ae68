"""What the GPU kernels of both regimes share: launch sizes and device functions.

The kernels work on the same canonical ``(B, O, C, I)`` view as the CPU
kernels (statistics per ``(b, c)`` group over ``O`` and ``I``; affine
parameters ``(C, W)`` with ``I == W * R``), in one of two regimes:
``_cuda_rows.py`` (a thread block per group) and ``_cuda_columns.py`` (column
tiles merged per group); ``_cuda_elementwise.py`` holds the kernels outside
them (layout copies, fills, running statistics).

Statistics are sums of deviations from a pivot, the group's first element,
accumulated in float64 (:func:`deviation_sums`), so that float32 data far
from zero keeps the CPU's accuracy; the statistics arrays are float64.  The
elementwise passes run in the accumulation type (float32 for float16 and
float32 data, float64 for float64) and subtract the float64 mean in two
parts (:func:`mean_parts`), so that ``x - mean`` does not cancel.  Every
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

if SIMULATED:

    @cuda.jit(device=True)
    def block_reduce(p, q, shared):
        """Sum one float64 pair per thread over a 1-D block; every thread gets the totals.

        Shared-memory tree (the simulator has no warp shuffles); the block
        size must be a power of two.  ``shared`` is a ``(2, BLOCK_THREADS)``
        float64 shared array.
        """
        tid = cuda.threadIdx.x
        cuda.syncthreads()
        shared[0, tid] = p
        shared[1, tid] = q
        cuda.syncthreads()
        stride = cuda.blockDim.x // 2
        while stride > 0:
            if tid < stride:
                shared[0, tid] += shared[0, tid + stride]
                shared[1, tid] += shared[1, tid + stride]
            cuda.syncthreads()
            stride //= 2
        return shared[0, 0], shared[1, 0]
else:

    @cuda.jit(device=True)
    def block_reduce(p, q, shared):
        """Sum one float64 pair per thread over a 1-D block; every thread gets the totals.

        Warp shuffles, then the warps' results through shared memory; the
        block size must be a multiple of the warp size.  ``shared`` is a
        ``(2, BLOCK_THREADS)`` float64 shared array.
        """
        tid = cuda.threadIdx.x
        offset = WARP_SIZE // 2
        while offset > 0:
            p += cuda.shfl_down_sync(FULL_MASK, p, offset)
            q += cuda.shfl_down_sync(FULL_MASK, q, offset)
            offset //= 2
        cuda.syncthreads()
        if tid % WARP_SIZE == 0:
            warp = tid // WARP_SIZE
            shared[0, warp] = p
            shared[1, warp] = q
        cuda.syncthreads()
        p = 0.0
        q = 0.0
        for warp in range(cuda.blockDim.x // WARP_SIZE):
            p += shared[0, warp]
            q += shared[1, warp]
        return p, q


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


@cuda.jit(device=True)
def pivot_of(first, centered):
    """The value a group's deviations are taken from: its first element, 0 for RMS norm."""
    return np.float64(first) if centered else 0.0


@cuda.jit(device=True)
def deviation_sums(s1, s2, v, pivot):
    """Add ``d = v - pivot`` to ``s1`` and ``d*d`` to ``s2``, in float64.

    Shifted sums instead of Welford's update: no division per element, and
    partial sums of a group merge by addition.  With the pivot an element of
    the group, ``s2 - s1**2/n`` cancels only by the factor ``1 + (mean -
    pivot)**2 / var``, harmless in float64.
    """
    d = np.float64(v) - pivot
    return s1 + d, s2 + d * d


@cuda.jit(device=True)
def moments_of_sums(count, pivot, s1, s2, centered):
    """``(mean, M2)`` of a group from its :func:`deviation_sums`; not ``centered``, ``(0, s2)``."""
    if not centered:
        return 0.0, s2
    shift = s1 / count
    m2 = s2 - s1 * shift
    if m2 < 0.0:  # rounding; NaN passes
        m2 = 0.0
    return pivot + shift, m2


@functools.cache
def mean_parts(acc_dtype):
    """The device function ``(high, low) = parts(mean)``: a float64 mean in two ``acc_dtype``s.

    ``(v - high) - low`` is ``v - mean`` to the accuracy of ``acc_dtype``
    even where ``v`` and the mean are large and close (float32 data of mean
    1e4): ``v - high`` is then exact.
    """
    acc = np.dtype(acc_dtype).type

    @cuda.jit(device=True)
    def parts(mean):
        m = np.float64(mean)
        high = acc(m)
        return high, acc(m - np.float64(high))

    return parts
