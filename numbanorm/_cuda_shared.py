"""What the GPU kernels of both regimes share: launch sizes and device functions.

The kernels work on the same canonical ``(B, O, C, I)`` view as the CPU
kernels (statistics per ``(b, c)`` group over ``O`` and ``I``; affine
parameters ``(C, W)`` with ``I == W * R``), in one of two regimes:
``_cuda_rows.py`` (a team of threads per group) and ``_cuda_columns.py`` (column
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

Threads merge their sums with :func:`team_reduce`, over teams of a power of
two of threads (a whole block for the merge kernels): warp shuffles on a
GPU; the Numba CUDA simulator has no warp intrinsics, so there the merge
goes through shared memory.
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
# The simulator's stand-in for the blocks a device holds at once.
SIMULATED_BLOCKS = 4
MANY_GROUPS = 4 if SIMULATED else 256
SMALL_GROUP = 16 if SIMULATED else 16384
WARP_SIZE = 32
FULL_MASK = 0xFFFFFFFF
# The rows regime's teams: up to MAX_TEAM threads a group, each with UNROLL
# loads in flight; SM_BLOCKS blocks of BLOCK_THREADS threads fill an SM
# (2,048 resident threads on sm_80 and later).
MAX_TEAM = BLOCK_THREADS if SIMULATED else 1024
UNROLL = 4
SM_BLOCKS = 2048 // BLOCK_THREADS
# Slots of a team reduction's shared array: a block's threads in the
# simulator, a block's warps on a GPU.
TEAM_SLOTS = BLOCK_THREADS if SIMULATED else MAX_TEAM // WARP_SIZE

if SIMULATED:

    @cuda.jit(device=True)
    def team_reduce(p, q, r, team_shift, shared):
        """Sum a float64 triple over each team of ``1 << team_shift`` threads; all get it.

        Through shared memory (the simulator has no warp shuffles); every
        thread of the block calls it.  ``shared`` is ``(3, TEAM_SLOTS)``.
        """
        tid = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
        cuda.syncthreads()
        shared[0, tid] = p
        shared[1, tid] = q
        shared[2, tid] = r
        cuda.syncthreads()
        first = (tid >> team_shift) << team_shift
        p = 0.0
        q = 0.0
        r = 0.0
        for t in range(first, first + (1 << team_shift)):
            p += shared[0, t]
            q += shared[1, t]
            r += shared[2, t]
        return p, q, r

else:

    @cuda.jit(device=True)
    def team_reduce(p, q, r, team_shift, shared):
        """Sum a float64 triple over each team of ``1 << team_shift`` threads; all get it.

        Butterfly shuffles within a warp (sub-warp teams stay inside their
        lanes), then, for teams of several warps, the warps' sums through
        shared memory.  Every thread of the block calls it.  ``shared`` is
        ``(3, TEAM_SLOTS)``.
        """
        offset = min(1 << team_shift, WARP_SIZE) >> 1
        while offset > 0:
            p += cuda.shfl_xor_sync(FULL_MASK, p, offset)
            q += cuda.shfl_xor_sync(FULL_MASK, q, offset)
            r += cuda.shfl_xor_sync(FULL_MASK, r, offset)
            offset >>= 1
        if team_shift > 5:
            warp = cuda.threadIdx.x >> 5
            cuda.syncthreads()
            if cuda.threadIdx.x & (WARP_SIZE - 1) == 0:
                shared[0, warp] = p
                shared[1, warp] = q
                shared[2, warp] = r
            cuda.syncthreads()
            first = (warp >> (team_shift - 5)) << (team_shift - 5)
            p = 0.0
            q = 0.0
            r = 0.0
            for w in range(first, first + (1 << (team_shift - 5))):
                p += shared[0, w]
                q += shared[1, w]
                r += shared[2, w]
        return p, q, r


@cuda.jit(device=True)
def last_block(counter, flag):
    """Whether this block is the grid's last to get here ("last block merges").

    Every thread calls it after its block's writes: they are made visible
    to the whole device first, then one thread counts the block in
    ``counter`` (an int32 array of one zero) and tells the block through
    ``flag`` (an int32 shared array of one).  The last block resets the
    counter for the next launch on the stream.
    """
    cuda.threadfence()
    cuda.syncthreads()
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        blocks = cuda.gridDim.x * cuda.gridDim.y * cuda.gridDim.z
        flag[0] = cuda.atomic.add(counter, 0, 1) == blocks - 1
        if flag[0]:
            counter[0] = 0
    cuda.syncthreads()
    return flag[0] != 0


@cuda.jit(device=True)
def block_shift():
    """``log2`` of the block's threads, a power of two."""
    shift = 0
    while (1 << shift) < cuda.blockDim.x * cuda.blockDim.y:
        shift += 1
    return shift


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
    sum(dy*w*(x - mean))`` over a group whose statistics came from
    ``count`` elements give ``shift = -rstd**3 * sum_gx / count`` and
    ``offset = -rstd * sum_g / count`` (zero for a norm that is not
    ``centered``); without ``input_stats`` the statistics are constants and
    both are zero, as they are for a group without a selected element.
    ``shift`` scales like ``1 / var``: below ``tiny``, the smallest normal
    number of the accumulation type, it has lost its digits and is NaN.
    """
    if not input_stats or count == 0:
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
def strided_deviation_sums(a, first, end, step, s1, s2, pivot):
    """:func:`deviation_sums` over ``a[first:end:step]`` (1-D), four loads in flight."""
    i = first
    while i + 3 * step < end:
        v0 = a[i]
        v1 = a[i + step]
        v2 = a[i + 2 * step]
        v3 = a[i + 3 * step]
        s1, s2 = deviation_sums(s1, s2, v0, pivot)
        s1, s2 = deviation_sums(s1, s2, v1, pivot)
        s1, s2 = deviation_sums(s1, s2, v2, pivot)
        s1, s2 = deviation_sums(s1, s2, v3, pivot)
        i += 4 * step
    while i < end:
        s1, s2 = deviation_sums(s1, s2, a[i], pivot)
        i += step
    return s1, s2


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


@cuda.jit(device=True)
def selected(line, i):
    """Whether element ``i`` of a mask's 1-D ``line`` is selected: always without a mask
    (``line`` None, a branch Numba prunes)."""
    if line is None:
        return True
    return line[i]


@cuda.jit(device=True)
def first_selected(a, line, first, end, step):
    """``(value, found)``: ``a[i]`` (float64) at the first ``i`` of ``first:end:step``
    that the mask ``line`` selects, and 1.0; ``(0.0, 0.0)`` where it selects none."""
    i = first
    while i < end:
        if line[i]:
            return np.float64(a[i]), 1.0
        i += step
    return 0.0, 0.0


@cuda.jit(device=True)
def selected_pivot(total, found):
    """The pivot of a masked group: the mean of ``found`` selected elements summing to
    ``total`` (0 for none).

    With a mask the group's first element may be unselected, and hold
    anything (NaN padding); elements it selects keep the pivot near the data.
    """
    return total / found if found > 0.0 else 0.0


@cuda.jit(device=True)
def selected_deviation_sums(a, line, first, end, step, s1, s2, n, pivot):
    """:func:`strided_deviation_sums` over the elements the mask ``line`` selects, and
    their count ``n``; four loads of each in flight.

    A select rather than a product with the mask: an unselected NaN or inf
    must not reach the sums.
    """
    i = first
    while i + 3 * step < end:
        v0 = a[i]
        v1 = a[i + step]
        v2 = a[i + 2 * step]
        v3 = a[i + 3 * step]
        m0 = line[i]
        m1 = line[i + step]
        m2 = line[i + 2 * step]
        m3 = line[i + 3 * step]
        s1, s2, n = _selected_sums(s1, s2, n, v0, m0, pivot)
        s1, s2, n = _selected_sums(s1, s2, n, v1, m1, pivot)
        s1, s2, n = _selected_sums(s1, s2, n, v2, m2, pivot)
        s1, s2, n = _selected_sums(s1, s2, n, v3, m3, pivot)
        i += 4 * step
    while i < end:
        s1, s2, n = _selected_sums(s1, s2, n, a[i], line[i], pivot)
        i += step
    return s1, s2, n


@cuda.jit(device=True)
def _selected_sums(s1, s2, n, v, chosen, pivot):
    if chosen:
        s1, s2 = deviation_sums(s1, s2, v, pivot)
        n += 1.0
    return s1, s2, n


@cuda.jit(device=True)
def selected_statistics(n, pivot, s1, s2, centered, eps):
    """``(mean, var, rstd)`` of a group of ``n`` selected elements from their
    :func:`deviation_sums`: zero for none, so that the group is normalized to
    its bias, never NaN."""
    if n == 0.0:
        return 0.0, 0.0, 0.0
    mean, m2 = moments_of_sums(n, pivot, s1, s2, centered)
    variance, rstd = variance_rstd(n, m2, eps)
    return mean, variance, rstd


@cuda.jit(device=True)
def variance_rstd(n, m2, eps):
    """``(var, rstd)`` of a group of ``n`` selected elements of M2 ``m2``; zero for none."""
    if n == 0.0:
        return 0.0, 0.0
    variance = m2 / n
    return variance, reciprocal_sqrt(variance + eps)


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
