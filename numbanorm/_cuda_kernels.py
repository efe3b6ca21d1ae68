"""Numba CUDA kernels shared by every norm.

They work on the same canonical ``(B, O, C, I)`` view as the CPU kernels
(statistics per ``(b, c)`` group over ``O`` and ``I``; affine parameters
``(C, W)`` with ``I == W * R``), in one of two regimes:

*rows*
    One thread block per group: per-thread Welford over strided, coalesced
    loads of the group's rows, a block merge of ``(count, mean, M2)`` with
    Chan's formula, then the elementwise pass over the same rows (a second
    read, mostly from L2).  For groups that have long contiguous rows and
    are many, or small.
*columns*
    For few large groups or short rows (batch norm, channels-last data): the
    input is seen as ``(B', rows, K)`` with ``K`` contiguous columns; tiles of
    ``TILE_COLUMNS`` columns by a chunk of rows give per-column partial
    states, which a second kernel merges per group (a two-stage grid
    reduction that fills the GPU even with a few channels).  The
    elementwise pass then reads per-column coefficients.

Per-thread arithmetic runs in the accumulation type (float32 for float16 and
float32 data, float64 for float64); block merges run in float64.  Every
reduction has a fixed shape of work, so results are bit-identical between
runs.  Kernels are built per accumulation type by :func:`kernels`.

The warp-level merge uses shuffles on a GPU; the Numba CUDA simulator has no
warp intrinsics, so there the merge goes through shared memory.
"""

import functools
import math
import types

import numpy as np
from numba import config, cuda

SIMULATED = bool(config.ENABLE_CUDASIM)

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

CHAN = 0
SUM = 1


@cuda.jit(device=True)
def _combine(mode, n_a, mean_a, m2_a, n_b, mean_b, m2_b):
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
    def _block_reduce(mode, p, q, r, shared):
        """Reduce one float64 triple per thread over a 1-D block; every thread gets the total.

        Shared-memory tree (the simulator has no warp shuffles); the block
        size must be a power of two.
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
                shared[0, tid], shared[1, tid], shared[2, tid] = _combine(
                    mode, shared[0, tid], shared[1, tid], shared[2, tid],
                    shared[0, tid + stride], shared[1, tid + stride], shared[2, tid + stride])
            cuda.syncthreads()
            stride //= 2
        return shared[0, 0], shared[1, 0], shared[2, 0]
else:
    @cuda.jit(device=True)
    def _block_reduce(mode, p, q, r, shared):
        """Reduce one float64 triple per thread over a 1-D block; every thread gets the total.

        Warp shuffles, then the warps' results through shared memory; the
        block size must be a multiple of the warp size.
        """
        tid = cuda.threadIdx.x
        offset = WARP_SIZE // 2
        while offset > 0:
            p_o = cuda.shfl_down_sync(FULL_MASK, p, offset)
            q_o = cuda.shfl_down_sync(FULL_MASK, q, offset)
            r_o = cuda.shfl_down_sync(FULL_MASK, r, offset)
            p, q, r = _combine(mode, p, q, r, p_o, q_o, r_o)
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
            p, q, r = _combine(mode, p, q, r, shared[0, warp], shared[1, warp], shared[2, warp])
        return p, q, r


@cuda.jit(device=True)
def _tile_reduce(mode, p, q, r, shared):
    """Reduce a float64 triple over ``threadIdx.y`` for each ``threadIdx.x``; row 0 gets it."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    shared[0, ty, tx] = p
    shared[1, ty, tx] = q
    shared[2, ty, tx] = r
    cuda.syncthreads()
    stride = TILE_ROWS // 2
    while stride > 0:
        if ty < stride:
            shared[0, ty, tx], shared[1, ty, tx], shared[2, ty, tx] = _combine(
                mode, shared[0, ty, tx], shared[1, ty, tx], shared[2, ty, tx],
                shared[0, ty + stride, tx], shared[1, ty + stride, tx],
                shared[2, ty + stride, tx])
        cuda.syncthreads()
        stride //= 2
    return shared[0, 0, tx], shared[1, 0, tx], shared[2, 0, tx]


@cuda.jit(device=True)
def _tile_rows(rows, chunk_rows):
    """``(column, chunk, slice, first row, end row)`` of this thread of a column tile."""
    j = cuda.blockIdx.y
    return (cuda.blockIdx.x * TILE_COLUMNS + cuda.threadIdx.x, j, cuda.blockIdx.z,
            j * chunk_rows + cuda.threadIdx.y, min(rows, (j + 1) * chunk_rows))


@cuda.jit(device=True)
def _reciprocal_sqrt(v):
    # A float64 NumPy scalar numerator makes 1/0 an IEEE infinity in the
    # simulator too (a Python float would raise there).
    return np.float64(1.0) / math.sqrt(v)


@cuda.jit(device=True)
def _row_split(W, R):
    """``(w_first, w_step, r_first, r_step)``: a block's threads over a row seen as ``(W, R)``.

    Element ``i = w*R + r`` uses parameter ``w``.  The threads stride over
    ``w`` when ``R`` is 1 (layer norm) and over ``r`` otherwise, so that loads
    stay coalesced and no element needs a division to find its parameter.
    """
    if R == 1:
        return cuda.threadIdx.x, cuda.blockDim.x, 0, 1
    return 0, 1, cuda.threadIdx.x, cuda.blockDim.x


@cuda.jit(device=True)
def _sample_of(bp, row, rows, O):
    """Sample of row ``row`` of slice ``bp`` of a ``(B', rows, K)`` view with ``O`` rows per sample."""
    if rows == O:
        return bp
    if O == 1:
        return row
    return row // O


@cuda.jit(device=True)
def _param_index(i, W, R):
    """Parameter column of element ``i`` of a row: ``i // R``, without dividing where it can."""
    if R == 1:
        return i
    if W == 1:
        return 0
    return i // R


@functools.lru_cache(maxsize=None)
def kernels(acc_dtype):
    """The kernels with per-thread arithmetic in ``acc_dtype`` (float32 or float64)."""
    acc = np.dtype(acc_dtype).type

    @cuda.jit(device=True)
    def welford_step(n, mean, m2, v, centered):
        n += acc(1)
        if centered:
            delta = v - mean
            mean += delta / n
            m2 += delta * (v - mean)
        else:
            m2 += v * v
        return n, mean, m2

    @cuda.jit(device=True)
    def affine_row(x4, dy4, use_dy, b, c, mean, a, s, p, q, z, weight2, bias2, out4):
        """``out = (x - mean)*(a*w + s) + q*bias + z`` (+ ``dy*p*w``) over group ``(b, c)``."""
        O = x4.shape[1]
        W = weight2.shape[1]
        R = x4.shape[3] // W
        w_first, w_step, r_first, r_step = _row_split(W, R)
        for o in range(O):
            for k in range(w_first, W, w_step):
                w = weight2[c, k]
                scale = a * w + s
                shift = q * bias2[c, k] + z
                dy_scale = p * w
                for r in range(r_first, R, r_step):
                    i = k * R + r
                    value = (acc(x4[b, o, c, i]) - mean) * scale + shift
                    if use_dy:
                        value += acc(dy4[b, o, c, i]) * dy_scale
                    out4[b, o, c, i] = value

    @cuda.jit
    def rows_forward(x4, centered, compute_stats, write_output, eps, mean, var, rstd, weight2,
                     bias2, out4):
        """Block per group: statistics (with ``compute_stats``), then ``out = x̂*w + bias``."""
        O = x4.shape[1]
        C = x4.shape[2]
        I = x4.shape[3]
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        shared = cuda.shared.array((3, BLOCK_THREADS), np.float64)
        if compute_stats:
            n = acc(0)
            m = acc(0)
            m2 = acc(0)
            for o in range(O):
                for i in range(cuda.threadIdx.x, I, cuda.blockDim.x):
                    n, m, m2 = welford_step(n, m, m2, acc(x4[b, o, c, i]), centered)
            count, total_mean, total_m2 = _block_reduce(CHAN, np.float64(n), np.float64(m),
                                                        np.float64(m2), shared)
            if cuda.threadIdx.x == 0:
                variance = total_m2 / count
                mean[b, c] = total_mean
                var[b, c] = variance
                rstd[b, c] = _reciprocal_sqrt(variance + eps)
            cuda.syncthreads()
        if write_output:
            zero = acc(0)
            affine_row(x4, x4, False, b, c, mean[b, c], rstd[b, c], zero, zero, acc(1), zero,
                       weight2, bias2, out4)

    @cuda.jit
    def rows_backward(dy4, x4, mean, rstd, weight2, from_input, centered, dx4):
        """Block per group: ``sum(dy*w)`` and ``sum(dy*w*x̂)``, then ``dx``."""
        O = x4.shape[1]
        C = x4.shape[2]
        I = x4.shape[3]
        W = weight2.shape[1]
        R = I // W
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        m = mean[b, c]
        r = rstd[b, c]
        shift = acc(0)
        offset = acc(0)
        if from_input:
            shared = cuda.shared.array((3, BLOCK_THREADS), np.float64)
            sum_g = acc(0)
            sum_gx = acc(0)
            w_first, w_step, r_first, r_step = _row_split(W, R)
            for o in range(O):
                for k in range(w_first, W, w_step):
                    w = weight2[c, k]
                    for i in range(k * R + r_first, (k + 1) * R, r_step):
                        g = acc(dy4[b, o, c, i]) * w
                        sum_g += g
                        sum_gx += g * (acc(x4[b, o, c, i]) - m)
            total_g, total_gx, _ = _block_reduce(SUM, np.float64(sum_g), np.float64(sum_gx), 0.0,
                                                 shared)
            count = O * I
            shift = acc(-r * r * r * total_gx / count)
            if centered:
                offset = acc(-r * total_g / count)
        zero = acc(0)
        affine_row(x4, dy4, True, b, c, m, zero, shift, r, zero, offset, weight2, weight2, dx4)

    @cuda.jit
    def columns_moments(x3, centered, chunk_rows, part_mean, part_m2):
        """Per column ``k`` and chunk ``j`` of rows: mean and M2 into ``part_*[b', j, k]``."""
        k, j, bp, first, end = _tile_rows(x3.shape[1], chunk_rows)
        n = acc(0)
        m = acc(0)
        m2 = acc(0)
        if k < x3.shape[2]:
            for row in range(first, end, TILE_ROWS):
                n, m, m2 = welford_step(n, m, m2, acc(x3[bp, row, k]), centered)
        shared = cuda.shared.array((3, TILE_ROWS, TILE_COLUMNS), np.float64)
        _, total_mean, total_m2 = _tile_reduce(CHAN, np.float64(n), np.float64(m),
                                               np.float64(m2), shared)
        if cuda.threadIdx.y == 0 and k < x3.shape[2]:
            part_mean[bp, j, k] = total_mean
            part_m2[bp, j, k] = total_m2

    @cuda.jit
    def columns_gradient_sums(dy3, x3, mean, rstd, O, I, chunk_rows, part_dy, part_dyx):
        """Per column and chunk of rows: ``sum(dy)`` and ``sum(dy*x̂)``.

        The rows of slice ``b'`` are either sample ``b'``'s ``O`` rows or, with
        one slice, all samples' ``B*O`` (see :func:`_sample_of`).
        """
        k, j, bp, first, end = _tile_rows(x3.shape[1], chunk_rows)
        s_dy = acc(0)
        s_dyx = acc(0)
        if k < x3.shape[2]:
            c = k // I
            for row in range(first, end, TILE_ROWS):
                b = _sample_of(bp, row, x3.shape[1], O)
                dy = acc(dy3[bp, row, k])
                s_dy += dy
                s_dyx += dy * (acc(x3[bp, row, k]) - mean[b, c]) * rstd[b, c]
        shared = cuda.shared.array((3, TILE_ROWS, TILE_COLUMNS), np.float64)
        total_dy, total_dyx, _ = _tile_reduce(SUM, np.float64(s_dy), np.float64(s_dyx), 0.0,
                                              shared)
        if cuda.threadIdx.y == 0 and k < x3.shape[2]:
            part_dy[bp, j, k] = total_dy
            part_dyx[bp, j, k] = total_dyx

    @cuda.jit
    def merge_column_moments(part_mean, part_m2, chunk_rows, rows, I, eps, mean, var, rstd):
        """Block per group ``(b, c)``: merge its columns' partial states."""
        C = mean.shape[1]
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        n_chunks = part_mean.shape[1]
        n = 0.0
        m = 0.0
        m2 = 0.0
        for t in range(cuda.threadIdx.x, n_chunks * I, cuda.blockDim.x):
            j = t // I
            k = c * I + t - j * I
            count = min(rows, (j + 1) * chunk_rows) - j * chunk_rows
            n, m, m2 = _combine(CHAN, n, m, m2, np.float64(count),
                                np.float64(part_mean[b, j, k]), np.float64(part_m2[b, j, k]))
        shared = cuda.shared.array((3, BLOCK_THREADS), np.float64)
        n, m, m2 = _block_reduce(CHAN, n, m, m2, shared)
        if cuda.threadIdx.x == 0:
            variance = m2 / n
            mean[b, c] = m
            var[b, c] = variance
            rstd[b, c] = _reciprocal_sqrt(variance + eps)

    @cuda.jit
    def merge_group_sums(part_dy, part_dyx, weight2, I, group_g, group_gx):
        """Block per group: ``sum(dy*w)`` and ``sum(dy*w*x̂)`` from column partials."""
        C = group_g.shape[1]
        W = weight2.shape[1]
        R = I // W
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        n_chunks = part_dy.shape[1]
        s_g = 0.0
        s_gx = 0.0
        for t in range(cuda.threadIdx.x, n_chunks * I, cuda.blockDim.x):
            j = t // I
            i = t - j * I
            w = np.float64(weight2[c, _param_index(i, W, R)])
            s_g += w * part_dy[b, j, c * I + i]
            s_gx += w * part_dyx[b, j, c * I + i]
        shared = cuda.shared.array((3, BLOCK_THREADS), np.float64)
        s_g, s_gx, _ = _block_reduce(SUM, s_g, s_gx, 0.0, shared)
        if cuda.threadIdx.x == 0:
            group_g[b, c] = s_g
            group_gx[b, c] = s_gx

    @cuda.jit
    def merge_parameter_sums(part_dy, part_dyx, I, dweight2, dbias2):
        """Block per parameter ``(c, w)``: sums of its columns' partials over slices and chunks."""
        W = dweight2.shape[1]
        R = I // W
        c = cuda.blockIdx.x // W
        w = cuda.blockIdx.x % W
        slices = part_dy.shape[0]
        n_chunks = part_dy.shape[1]
        s_dy = 0.0
        s_dyx = 0.0
        for t in range(cuda.threadIdx.x, slices * n_chunks * R, cuda.blockDim.x):
            r = t % R
            j = (t // R) % n_chunks
            bp = t // (R * n_chunks)
            k = c * I + w * R + r
            s_dy += part_dy[bp, j, k]
            s_dyx += part_dyx[bp, j, k]
        shared = cuda.shared.array((3, BLOCK_THREADS), np.float64)
        s_dy, s_dyx, _ = _block_reduce(SUM, s_dy, s_dyx, 0.0, shared)
        if cuda.threadIdx.x == 0:
            dweight2[c, w] = s_dyx
            dbias2[c, w] = s_dy

    @cuda.jit
    def column_coefficients(mean, rstd, weight2, bias2, group_g, group_gx, count, backward,
                            from_input, centered, I, coef):
        """Per ``(b, k)``: ``out = x*coef[0] + coef[1] (+ dy*coef[2])`` of the columns regime.

        Forward: ``x̂*w + bias``.  Backward: ``dx = rstd*(dy*w - sum(dy*w)/n -
        x̂*sum(dy*w*x̂)/n)``, the sums being zero for constant statistics.
        """
        B = mean.shape[0]
        K = coef.shape[2]
        W = weight2.shape[1]
        R = I // W
        for t in range(cuda.grid(1), B * K, cuda.gridsize(1)):
            b = t // K
            k = t - b * K
            c = k // I
            w = weight2[c, _param_index(k - c * I, W, R)]
            m = mean[b, c]
            r = rstd[b, c]
            if backward:
                shift = acc(0)
                offset = acc(0)
                if from_input:
                    shift = acc(-r * r * group_gx[b, c] / count)
                    if centered:
                        offset = acc(-r * group_g[b, c] / count)
                coef[0, b, k] = shift
                coef[1, b, k] = offset - m * shift
                coef[2, b, k] = r * w
            else:
                scale = r * w
                coef[0, b, k] = scale
                coef[1, b, k] = bias2[c, _param_index(k - c * I, W, R)] - m * scale
                coef[2, b, k] = 0

    @cuda.jit
    def columns_affine(x3, dy3, use_dy, rows_per_block, coef, out3):
        """``out = x*coef[0] + coef[1] (+ dy*coef[2])`` with coefficients per ``(b', k)``."""
        k, _, bp, first, end = _tile_rows(x3.shape[1], rows_per_block)
        if k < x3.shape[2]:
            scale = coef[0, bp, k]
            shift = coef[1, bp, k]
            dy_scale = coef[2, bp, k]
            for row in range(first, end, TILE_ROWS):
                value = acc(x3[bp, row, k]) * scale + shift
                if use_dy:
                    value += acc(dy3[bp, row, k]) * dy_scale
                out3[bp, row, k] = value

    return types.SimpleNamespace(
        rows_forward=rows_forward, rows_backward=rows_backward, columns_moments=columns_moments,
        columns_gradient_sums=columns_gradient_sums, merge_column_moments=merge_column_moments,
        merge_group_sums=merge_group_sums, merge_parameter_sums=merge_parameter_sums,
        column_coefficients=column_coefficients, columns_affine=columns_affine)


@cuda.jit(device=True)
def _offsets(t, shape, a_strides, b_strides):
    """Offsets in two layouts of the ``t``-th element, in C order, of ``shape``."""
    a = 0
    b = 0
    for d in range(len(shape) - 1, -1, -1):
        index = t % shape[d]
        t //= shape[d]
        a += index * a_strides[d]
        b += index * b_strides[d]
    return a, b


@cuda.jit(device=True)
def _size(shape):
    size = 1
    for d in range(len(shape)):
        size *= shape[d]
    return size


@cuda.jit
def strided_copy(src, dst, shape, src_strides, dst_strides, scale):
    """``dst[...] = src[...] * scale`` between two N-d layouts of flat buffers.

    ``shape`` and the strides (in elements) are tuples; ``src`` and ``dst`` are
    1-D views from each array's first element.  Casts to ``dst``'s dtype.
    """
    for t in range(cuda.grid(1), _size(shape), cuda.gridsize(1)):
        s, o = _offsets(t, shape, src_strides, dst_strides)
        dst[o] = src[s] * scale


@cuda.jit
def fill(flat, shape, strides, value):
    """Set every element of an N-d layout of a flat buffer to ``value``."""
    for t in range(cuda.grid(1), _size(shape), cuda.gridsize(1)):
        o, _ = _offsets(t, shape, strides, strides)
        flat[o] = value


@cuda.jit
def running_as_groups(running_mean, running_var, eps, mean, rstd):
    """Running statistics ``(C,)`` as ``(B, C)`` group mean and ``rstd``."""
    B, C = mean.shape
    for t in range(cuda.grid(1), B * C, cuda.gridsize(1)):
        c = t % C
        mean[t // C, c] = running_mean[c]
        rstd[t // C, c] = _reciprocal_sqrt(np.float64(running_var[c]) + eps)


@cuda.jit
def update_running(running_mean, running_var, mean, var, momentum, unbias):
    """``running = (1 - momentum)*running + momentum*stat``, stats averaged over ``B``."""
    B, C = mean.shape
    c = cuda.grid(1)
    if c < C:
        m = 0.0
        v = 0.0
        for b in range(B):
            m += mean[b, c]
            v += var[b, c]
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * (m / B)
        running_var[c] = (1 - momentum) * running_var[c] + momentum * (v / B * unbias)
