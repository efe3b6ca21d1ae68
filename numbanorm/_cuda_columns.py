"""The columns regime of the GPU kernels: column tiles, merged per group.

For few large groups or short rows (batch norm, channels-last data): the
input is seen as ``(B', rows, K)`` with ``K`` contiguous columns, ``B'`` being
the samples ``B`` (rows ``O``, ``K = C * I``) or one slice of all ``B * O``
rows.  Tiles of ``TILE_COLUMNS`` columns by ``TILE_ROWS`` thread rows walk a
chunk of rows and write one partial state per column and chunk; a merge
kernel, a block per group or parameter, combines them in a fixed order (a
two-stage grid reduction that fills the GPU even with a few channels).  The
elementwise pass then reads per-column coefficients.

Tile kernels launch on the grid ``(ceil(K / TILE_COLUMNS) * B', chunks)`` of
``(TILE_COLUMNS, TILE_ROWS)`` blocks; merge kernels on ``[groups, threads]``
with a power-of-two number of threads of at most ``BLOCK_THREADS``.  The
factories build one kernel for an accumulation dtype, float32 or float64,
and cache it; the merges, in float64 throughout, are plain kernels.
"""

import functools

import numpy as np
from numba import cuda

from ._cuda_shared import (
    TEAM_SLOTS,
    TILE_COLUMNS,
    TILE_ROWS,
    block_shift,
    deviation_sums,
    input_gradient_coefficients,
    last_block,
    mean_parts,
    moments_of_sums,
    pivot_of,
    reciprocal_sqrt,
    team_reduce,
)


@cuda.jit(device=True)
def tile_reduce(p, q, shared):
    """Sum a float64 pair over ``threadIdx.y`` for each ``threadIdx.x``; row 0 gets it."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    shared[0, ty, tx] = p
    shared[1, ty, tx] = q
    cuda.syncthreads()
    stride = TILE_ROWS // 2
    while stride > 0:
        if ty < stride:
            shared[0, ty, tx] += shared[0, ty + stride, tx]
            shared[1, ty, tx] += shared[1, ty + stride, tx]
        cuda.syncthreads()
        stride //= 2
    return shared[0, 0, tx], shared[1, 0, tx]


@cuda.jit(device=True)
def tile_rows(rows, K, chunk_rows):
    """``(column, chunk, slice, first row, end row)`` of this thread of a column tile.

    Grid x runs over the slices' column tiles, slice-major (see
    ``_cuda._column_grid``): grid y and z are limited to 65,535 blocks.
    """
    tiles = (K + TILE_COLUMNS - 1) // TILE_COLUMNS
    j = cuda.blockIdx.y
    return (
        (cuda.blockIdx.x % tiles) * TILE_COLUMNS + cuda.threadIdx.x,
        j,
        cuda.blockIdx.x // tiles,
        j * chunk_rows + cuda.threadIdx.y,
        min(rows, (j + 1) * chunk_rows),
    )


@cuda.jit(device=True)
def sample_of(bp, row, rows, O):
    """Sample of row ``row`` of slice ``bp`` of a ``(B', rows, K)`` view, ``O`` rows a sample."""
    if rows == O:
        return bp
    if O == 1:
        return row
    return row // O


@cuda.jit(device=True)
def param_index(i, W, R):
    """Parameter column of element ``i`` of a row: ``i // R``, without dividing where it can."""
    if R == 1:
        return i
    if W == 1:
        return 0
    return i // R


@cuda.jit
def columns_moments(x3, I, centered, chunk_rows, part_s1, part_s2):
    """The statistics' tile kernel: per column ``k`` and chunk ``j`` of ``chunk_rows``
    rows, the :func:`~numbanorm._cuda_shared.deviation_sums` from the pivot of
    ``k``'s group (``I`` columns each) into ``part_*[b', j, k]``."""
    k, j, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], chunk_rows)
    s1 = 0.0
    s2 = 0.0
    if k < x3.shape[2]:
        pivot = pivot_of(x3[bp, 0, k - k % I], centered)
        for row in range(first, end, TILE_ROWS):
            s1, s2 = deviation_sums(s1, s2, x3[bp, row, k], pivot)
    shared = cuda.shared.array((2, TILE_ROWS, TILE_COLUMNS), np.float64)
    s1, s2 = tile_reduce(s1, s2, shared)
    if cuda.threadIdx.y == 0 and k < x3.shape[2]:
        part_s1[bp, j, k] = s1
        part_s2[bp, j, k] = s2


@functools.cache
def columns_gradient_sums(acc_dtype):
    """The backward's tile kernel, per-thread arithmetic in ``acc_dtype``.

    ``columns_gradient_sums(dy3, x3, mean, rstd, O, I, chunk_rows, part_dy,
    part_dyx, counter, dweight2, dbias2)``: per column and chunk of rows,
    ``sum(dy)`` and ``sum(dy*x̂)`` into ``part_*[b', j, k]`` (float64).  The
    rows of slice ``b'`` are either sample ``b'``'s ``O`` rows or, with one
    slice, all samples' ``B*O`` (see :func:`sample_of`).  The grid's last
    block then sums the partials of every parameter into ``dweight2`` and
    ``dbias2``, ``(C, W)`` in their own dtype (:func:`parameter_sums`).
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit
    def kernel(dy3, x3, mean, rstd, O, I, chunk_rows, part_dy, part_dyx, counter, dweight2, dbias2):
        k, j, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], chunk_rows)
        s_dy = 0.0
        s_dyx = 0.0
        if k < x3.shape[2]:
            c = k // I
            for row in range(first, end, TILE_ROWS):
                b = sample_of(bp, row, x3.shape[1], O)
                mean_high, mean_low = parts(mean[b, c])
                dy = acc(dy3[bp, row, k])
                s_dy += np.float64(dy)
                s_dyx += np.float64(
                    dy * ((acc(x3[bp, row, k]) - mean_high) - mean_low) * acc(rstd[b, c])
                )
        shared = cuda.shared.array((2, TILE_ROWS, TILE_COLUMNS), np.float64)
        total_dy, total_dyx = tile_reduce(s_dy, s_dyx, shared)
        if cuda.threadIdx.y == 0 and k < x3.shape[2]:
            part_dy[bp, j, k] = total_dy
            part_dyx[bp, j, k] = total_dyx
        flag = cuda.shared.array(1, np.int32)
        if last_block(counter, flag):
            merge = cuda.shared.array((3, TEAM_SLOTS), np.float64)
            parameter_sums(part_dy, part_dyx, I, dweight2, dbias2, merge)

    return kernel


@cuda.jit(device=True)
def parameter_sums(part_dy, part_dyx, I, dweight2, dbias2, shared):
    """One block: every parameter's partials, over slices, chunks and its columns, summed
    in a fixed order by a team of a warp (the whole block in the simulator)."""
    W = dweight2.shape[1]
    R = I // W
    tid = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    shift = min(block_shift(), 5)
    lane = tid & ((1 << shift) - 1)
    for p in range(tid >> shift, dweight2.size, (cuda.blockDim.x * cuda.blockDim.y) >> shift):
        c = np.uint32(p) // np.uint32(W)
        first = c * I + (np.uint32(p) - c * np.uint32(W)) * R
        s_dy = 0.0
        s_dyx = 0.0
        for bp in range(part_dy.shape[0]):
            for j in range(part_dy.shape[1]):
                r = lane
                while r < R:
                    s_dy += part_dy[bp, j, first + r]
                    s_dyx += part_dyx[bp, j, first + r]
                    r += 1 << shift
        s_dy, s_dyx, _ = team_reduce(s_dy, s_dyx, 0.0, shift, shared)
        if lane == 0:
            dweight2[c, p - c * W] = s_dyx
            dbias2[c, p - c * W] = s_dy


@cuda.jit
def merge_column_moments(x3, part_s1, part_s2, centered, eps, mean, var, rstd, out_mean):
    """Block per group ``(b, c)``: its columns' partial sums into ``mean``, ``var``, ``rstd``.

    ``part_*`` are :func:`columns_moments`' ``(B, chunks, C*I)`` partials of
    ``x3``, ``(B, O, C*I)``.  The mean goes into ``out_mean`` too: the public
    statistic, in its own dtype.
    """
    C = mean.shape[1]
    I = x3.shape[2] // C
    b = cuda.blockIdx.x // C
    c = cuda.blockIdx.x % C
    n_chunks = part_s1.shape[1]
    s1 = 0.0
    s2 = 0.0
    for t in range(cuda.threadIdx.x, n_chunks * I, cuda.blockDim.x):
        j = t // I
        k = c * I + t - j * I
        s1 += part_s1[b, j, k]
        s2 += part_s2[b, j, k]
    shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
    s1, s2, _ = team_reduce(s1, s2, 0.0, block_shift(), shared)
    if cuda.threadIdx.x == 0:
        count = x3.shape[1] * I
        group_mean, m2 = moments_of_sums(
            count, pivot_of(x3[b, 0, c * I], centered), s1, s2, centered
        )
        variance = m2 / count
        mean[b, c] = group_mean
        out_mean[b, c] = group_mean
        var[b, c] = variance
        rstd[b, c] = reciprocal_sqrt(variance + eps)


@cuda.jit
def merge_group_sums(part_dy, part_dyx, weight2, I, group_g, group_gxhat):
    """Block per group: ``sum(dy*w)`` and ``sum(dy*w*x̂)`` from per-sample column partials."""
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
        w = np.float64(weight2[c, param_index(i, W, R)])
        s_g += w * part_dy[b, j, c * I + i]
        s_gx += w * part_dyx[b, j, c * I + i]
    shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
    s_g, s_gx, _ = team_reduce(s_g, s_gx, 0.0, block_shift(), shared)
    if cuda.threadIdx.x == 0:
        group_g[b, c] = s_g
        group_gxhat[b, c] = s_gx


@functools.cache
def column_coefficients(acc_dtype):
    """The kernel of the elementwise pass's per-column coefficients, in ``acc_dtype``.

    ``column_coefficients(mean, rstd, weight2, bias2, group_g, group_gxhat,
    count, backward, input_stats, centered, I, coef)`` writes, per ``(b,
    k)``, ``coef`` such that ``out = (x - mean)*coef[0] + coef[1] (+
    dy*coef[2])``.
    Forward: ``x̂*w + bias``.  Backward: ``dx`` with the coefficients of
    :func:`~numbanorm._cuda_shared.input_gradient_coefficients`, from the
    groups' ``sum(dy*w)`` and ``sum(dy*w*x̂)`` over ``count`` elements.
    """
    acc = np.dtype(acc_dtype).type
    tiny = float(np.finfo(acc_dtype).tiny)

    @cuda.jit
    def kernel(
        mean,
        rstd,
        weight2,
        bias2,
        group_g,
        group_gxhat,
        count,
        backward,
        input_stats,
        centered,
        I,
        coef,
    ):
        B = mean.shape[0]
        K = coef.shape[2]
        W = weight2.shape[1]
        R = I // W
        for t in range(cuda.grid(1), B * K, cuda.gridsize(1)):
            b = t // K
            k = t - b * K
            c = k // I
            w = acc(weight2[c, param_index(k - c * I, W, R)])
            r = rstd[b, c]
            if backward:
                # sum(dy*w*(x - mean)) = sum(dy*w*x̂) / rstd, as the CPU backend converts it
                s, z = input_gradient_coefficients(
                    group_g[b, c], group_gxhat[b, c] / r, r, count, input_stats, centered, tiny
                )
                coef[0, b, k] = acc(s)
                coef[1, b, k] = acc(z)
                coef[2, b, k] = r * w
            else:
                coef[0, b, k] = r * w
                coef[1, b, k] = acc(bias2[c, param_index(k - c * I, W, R)])
                coef[2, b, k] = 0

    return kernel


@functools.cache
def columns_affine(acc_dtype):
    """The elementwise pass of the columns regime, per-thread arithmetic in ``acc_dtype``.

    ``columns_affine(x3, dy3, use_dy, rows_per_block, mean, coef, out3)``
    writes ``out = (x - mean)*coef[0] + coef[1] (+ dy*coef[2])`` with
    coefficients per ``(b', k)`` (see :func:`column_coefficients`) and the
    ``(B', C)`` group means.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit
    def kernel(x3, dy3, use_dy, rows_per_block, mean, coef, out3):
        k, _, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], rows_per_block)
        if k < x3.shape[2]:
            mean_high, mean_low = parts(mean[bp, k // (x3.shape[2] // mean.shape[1])])
            scale = coef[0, bp, k]
            shift = coef[1, bp, k]
            dy_scale = coef[2, bp, k]
            for row in range(first, end, TILE_ROWS):
                value = ((acc(x3[bp, row, k]) - mean_high) - mean_low) * scale + shift
                if use_dy:
                    value += acc(dy3[bp, row, k]) * dy_scale
                out3[bp, row, k] = value

    return kernel
