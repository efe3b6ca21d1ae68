"""The columns regime of the GPU kernels: column tiles, merged per group.

For few large groups (batch norm, channels-last data with few samples): the
input is seen as ``(B', rows, K)`` with ``K`` contiguous columns, ``B'`` being
the samples ``B`` (rows ``O``, ``K = C * I``) or one slice of all ``B * O``
rows.  Tiles of ``TILE_COLUMNS`` columns by ``TILE_ROWS`` thread rows walk a
chunk of rows and write one partial state per column and chunk; the grid's
last block to finish merges them per group or parameter, in a fixed order (a
two-stage grid reduction in one launch, which fills the GPU even with a few
channels).  The elementwise pass then works out each column's coefficients
from the group's statistics.

Tile kernels launch on the grid ``(ceil(K / TILE_COLUMNS) * B', chunks)`` of
``(TILE_COLUMNS, TILE_ROWS)`` blocks; :func:`group_coefficients` on one
block of a power of two of threads.  The factories
build one kernel for an accumulation dtype, float32 or float64, and cache it;
the statistics, in float64 throughout, are a plain kernel.
"""

import functools

import numpy as np
from numba import cuda

from ._cuda_elementwise import fold_running
from ._cuda_shared import (
    TEAM_SLOTS,
    TILE_COLUMNS,
    TILE_ROWS,
    block_shift,
    first_selected,
    input_gradient_coefficients,
    last_block,
    mean_parts,
    moments_of_sums,
    pivot_of,
    reciprocal_sqrt,
    selected,
    selected_deviation_sums,
    selected_pivot,
    strided_deviation_sums,
    team_reduce,
    variance_rstd,
)


@cuda.jit(device=True)
def tile_reduce(p, q, r, shared):
    """Sum a float64 triple over ``threadIdx.y`` for each ``threadIdx.x``; row 0 gets it.

    ``shared`` is ``(3, TILE_ROWS, TILE_COLUMNS)``.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    shared[0, ty, tx] = p
    shared[1, ty, tx] = q
    shared[2, ty, tx] = r
    cuda.syncthreads()
    stride = TILE_ROWS // 2
    while stride > 0:
        if ty < stride:
            shared[0, ty, tx] += shared[0, ty + stride, tx]
            shared[1, ty, tx] += shared[1, ty + stride, tx]
            shared[2, ty, tx] += shared[2, ty + stride, tx]
        cuda.syncthreads()
        stride //= 2
    return shared[0, 0, tx], shared[1, 0, tx], shared[2, 0, tx]


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
    """``(b, o)``: sample and row within it of row ``row`` of slice ``bp`` of a
    ``(B', rows, K)`` view, ``O`` rows a sample."""
    if rows == O:
        return bp, row
    b = row // O
    return b, row - b * O


@cuda.jit(device=True)
def next_row(b, o, O):
    """``(b, o)`` moved on by ``TILE_ROWS`` rows: a 32-bit division, where a sample ends."""
    o += TILE_ROWS
    if o >= O:
        samples = np.uint32(o) // np.uint32(O)
        b += samples
        o -= samples * O
    return b, o


@cuda.jit(device=True)
def param_index(i, W, R):
    """Parameter column of element ``i`` of a row: ``i // R``, without dividing where it can."""
    if R == 1:
        return i
    if W == 1:
        return 0
    return i // R


@cuda.jit(device=True)
def mask_column(mask4, b, c, i):
    """The ``(b, :, c, i)`` column of a mask, None without one."""
    if mask4 is None:
        return None
    return mask4[b, :, c, i]


@cuda.jit
def columns_moments(
    x3, I, centered, chunk_rows, part_s1, part_s2, counter, eps, stats, update, selection
):
    """The statistics' tile kernel, merged by its last block.

    Per column ``k`` and chunk ``j`` of ``chunk_rows`` rows, the
    :func:`~numbanorm._cuda_shared.deviation_sums` from the pivot of ``k``'s
    group (``I`` columns each) into ``part_*[b', j, k]``; the grid's last
    block then merges each group's partials into ``stats = (mean, var, rstd,
    out_mean)`` (:func:`merge_moments`) and, with ``update[0]``, folds them
    into running ones (:func:`~numbanorm._cuda_elementwise.fold_running`).

    ``selection`` is None, or ``(mask4, part_n, count)`` for statistics over
    the elements the boolean ``(B, O, C, I)`` ``mask4`` selects: the
    partials are then counts, means and M2 (:func:`selected_tile_moments`),
    and the merge writes each group's count into ``count``
    (:func:`merge_selected_moments`).
    """
    k, j, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], chunk_rows)
    shared = cuda.shared.array((3, TILE_ROWS, TILE_COLUMNS), np.float64)
    if selection is None:
        s1 = 0.0
        s2 = 0.0
        if k < x3.shape[2]:
            pivot = pivot_of(x3[bp, 0, k - k % I], centered)
            s1, s2 = strided_deviation_sums(x3[bp, :, k], first, end, TILE_ROWS, s1, s2, pivot)
        s1, s2, _ = tile_reduce(s1, s2, 0.0, shared)
        if cuda.threadIdx.y == 0 and k < x3.shape[2]:
            part_s1[bp, j, k] = s1
            part_s2[bp, j, k] = s2
    else:
        selected_tile_moments(
            x3, I, centered, selection[0], k, j, bp, first, end, selection[1], part_s1, part_s2,
            shared,
        )  # fmt: skip
    flag = cuda.shared.array(1, np.int32)
    if last_block(counter, flag):
        merge = cuda.shared.array((3, TEAM_SLOTS), np.float64)
        if selection is None:
            merge_moments(x3, I, centered, part_s1, part_s2, eps, stats, merge)
        else:
            merge_selected_moments(
                I, selection[1], part_s1, part_s2, eps, stats, selection[2], merge
            )
        if update[0]:
            cuda.syncthreads()
            fold_running(update, stats[0], stats[1])


@cuda.jit(device=True)
def merge_teams():
    """``(lane, team, teams, shift)`` of a last block's merge: teams of a warp (the
    whole block in the simulator), over the block's linear thread index."""
    tid = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    shift = min(block_shift(), 5)
    return (
        tid & ((1 << shift) - 1),
        tid >> shift,
        (cuda.blockDim.x * cuda.blockDim.y) >> shift,
        shift,
    )


@cuda.jit(device=True)
def partial_sums(part_a, part_b, b0, b1, first, length, lane, size):
    """A lane's share of two partials' sums over slices ``b0:b1``, every chunk and
    the columns ``first:first + length``, in a fixed order."""
    a = 0.0
    b = 0.0
    for bp in range(b0, b1):
        for j in range(part_a.shape[1]):
            t = lane
            while t < length:
                a += part_a[bp, j, first + t]
                b += part_b[bp, j, first + t]
                t += size
    return a, b


@cuda.jit(device=True)
def merge_moments(x3, I, centered, part_s1, part_s2, eps, stats, shared):
    """One block: every group's statistics from :func:`columns_moments`' partials.

    ``stats = (mean, var, rstd, out_mean)``, ``(B, C)``: the float64 mean
    and variance, ``rstd``, and the public mean in its own dtype.
    """
    mean, var, rstd, out_mean = stats
    C = mean.shape[1]
    count = x3.shape[1] * I
    lane, team, teams, shift = merge_teams()
    for g in range(team, mean.size, teams):
        b = np.uint32(g) // np.uint32(C)
        c = np.uint32(g) - b * np.uint32(C)
        s1, s2 = partial_sums(part_s1, part_s2, b, b + 1, c * I, I, lane, 1 << shift)
        s1, s2, _ = team_reduce(s1, s2, 0.0, shift, shared)
        if lane == 0:
            group_mean, m2 = moments_of_sums(
                count, pivot_of(x3[b, 0, c * I], centered), s1, s2, centered
            )
            variance = m2 / count
            mean[b, c] = group_mean
            out_mean[b, c] = group_mean
            var[b, c] = variance
            rstd[b, c] = reciprocal_sqrt(variance + eps)


@cuda.jit(device=True)
def selected_tile_moments(
    x3, I, centered, mask4, k, j, bp, first, end, part_n, part_mean, part_m2, shared
):  # fmt: skip
    """A tile's partial ``(count, mean, M2)`` of the elements ``mask4`` selects, per column
    ``k`` and chunk ``j`` of sample ``bp``, into ``part_*[bp, j, k]``.

    Around a pivot of the column's chunk, the mean of its threads' first
    selected elements (one more merge over the tile's rows): partials around
    different pivots merge as means and M2.
    """
    inside = k < x3.shape[2]
    c = k // I
    i = k - c * I
    pivot = 0.0
    if centered:
        total = 0.0
        found = 0.0
        if inside:
            total, found = first_selected(x3[bp, :, k], mask4[bp, :, c, i], first, end, TILE_ROWS)
        total, found, _ = tile_reduce(total, found, 0.0, shared)
        pivot = selected_pivot(total, found)
        cuda.syncthreads()  # every thread has read the merge before the next one
    s1 = 0.0
    s2 = 0.0
    n = 0.0
    if inside:
        s1, s2, n = selected_deviation_sums(
            x3[bp, :, k], mask4[bp, :, c, i], first, end, TILE_ROWS, s1, s2, n, pivot
        )
    s1, s2, n = tile_reduce(s1, s2, n, shared)
    if cuda.threadIdx.y == 0 and inside:
        mean = 0.0
        m2 = 0.0
        if n > 0.0:
            mean, m2 = moments_of_sums(n, pivot, s1, s2, centered)
        part_n[bp, j, k] = n
        part_mean[bp, j, k] = mean
        part_m2[bp, j, k] = m2


@cuda.jit(device=True)
def merge_selected_moments(I, part_n, part_mean, part_m2, eps, stats, count, shared):
    """One block: every group's statistics from :func:`selected_tile_moments`' partials.

    As :func:`merge_moments`, with the group's selected ``count``; partial
    means and M2 merge as Chan et al.'s pairwise update does, in two passes:
    the mean, then the M2s and the spread of the partial means around it.
    """
    mean, var, rstd, out_mean = stats
    C = mean.shape[1]
    lane, team, teams, shift = merge_teams()
    size = 1 << shift
    for g in range(team, mean.size, teams):
        b = np.uint32(g) // np.uint32(C)
        c = np.uint32(g) - b * np.uint32(C)
        n = 0.0
        total = 0.0
        for j in range(part_n.shape[1]):
            t = lane
            while t < I:
                n_part = part_n[b, j, c * I + t]
                n += n_part
                total += n_part * part_mean[b, j, c * I + t]
                t += size
        n, total, _ = team_reduce(n, total, 0.0, shift, shared)
        group_mean = total / n if n > 0.0 else 0.0
        m2 = 0.0
        for j in range(part_n.shape[1]):
            t = lane
            while t < I:
                spread = part_mean[b, j, c * I + t] - group_mean
                m2 += part_m2[b, j, c * I + t] + part_n[b, j, c * I + t] * spread * spread
                t += size
        m2, _, _ = team_reduce(m2, 0.0, 0.0, shift, shared)
        if lane == 0:
            variance, group_rstd = variance_rstd(n, m2, eps)
            mean[b, c] = group_mean
            out_mean[b, c] = group_mean
            var[b, c] = variance
            rstd[b, c] = group_rstd
            count[b, c] = n


@functools.cache
def columns_gradient_sums(acc_dtype):
    """The backward's tile kernel, per-thread arithmetic in ``acc_dtype``, merged by
    its last block.

    ``columns_gradient_sums(dy3, x3, mean, rstd, O, I, chunk_rows, partials,
    counter, gradients, groups, selection)``: per column and chunk of rows, ``sum(dy)``,
    ``sum(dy*x̂)`` and ``sum(x - mean)`` into ``partials = (part_dy,
    part_dyx, part_d)``, ``[b', j, k]`` float64 (the last only to refine the
    mean).  The rows of slice ``b'`` are either sample ``b'``'s ``O`` rows
    or, with one slice, all samples' ``B*O`` (see :func:`sample_of`).

    The grid's last block then merges: with ``groups = (merge, weight2,
    input_stats, centered, refine, count, refined, shift, offset)`` whose
    ``merge`` is set (per-sample slices), each group's coefficients of ``dx``
    (:func:`merge_groups`); then every parameter's gradients into
    ``gradients = (dweight2, dbias2)``, ``(C, W)`` in their own dtype
    (:func:`parameter_sums`), around the refined mean.

    ``selection`` is None, or with per-sample slices ``(mask4, part_n)``:
    ``sum(x - mean)`` then covers the elements the boolean ``(B, O, C, I)``
    ``mask4`` selects, and their count goes to ``part_n[b', j, k]``, from
    which :func:`merge_groups` takes each group's.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)
    tiny = float(np.finfo(acc_dtype).tiny)

    @cuda.jit(device=True)
    def add(sums, e):
        """``sums`` plus element ``e = (x, dy, mean, rstd)``'s ``dy``, ``dy*x̂``, ``x - mean``."""
        s_dy, s_dyx, s_d = sums
        xv, dyv, m, r = e
        mean_high, mean_low = parts(m)
        dy = acc(dyv)
        d = (acc(xv) - mean_high) - mean_low
        return s_dy + np.float64(dy), s_dyx + np.float64(dy * d * acc(r)), s_d + np.float64(d)

    @cuda.jit(device=True)
    def add_selected(sums, xv, dyv, chosen, mean_high, mean_low, r):
        """``sums`` plus an element's ``dy`` and ``dy*x̂``, and its ``x - mean`` and 1
        where ``chosen``."""
        s_dy, s_dyx, s_d, n = sums
        dy = acc(dyv)
        d = (acc(xv) - mean_high) - mean_low
        s_dy += np.float64(dy)
        s_dyx += np.float64(dy * d * r)
        if chosen:
            s_d += np.float64(d)
            n += 1.0
        return s_dy, s_dyx, s_d, n

    @cuda.jit(device=True)
    def selected_column_sums(dy3, x3, mean, rstd, I, mask4, k, bp, first, end):
        """A thread's ``sum(dy)``, ``sum(dy*x̂)`` over its rows of column ``k`` of sample
        ``bp``, and ``sum(x - mean)`` and the count over those ``mask4`` selects."""
        c = k // I
        line = mask4[bp, :, c, k - c * I]
        mean_high, mean_low = parts(mean[bp, c])
        r = acc(rstd[bp, c])
        sums = (0.0, 0.0, 0.0, 0.0)
        row = first
        while row + 3 * TILE_ROWS < end:
            r1 = row + TILE_ROWS
            r2 = r1 + TILE_ROWS
            r3 = r2 + TILE_ROWS
            x0, x1, x2, x3_ = x3[bp, row, k], x3[bp, r1, k], x3[bp, r2, k], x3[bp, r3, k]
            d0, d1, d2, d3 = dy3[bp, row, k], dy3[bp, r1, k], dy3[bp, r2, k], dy3[bp, r3, k]
            m0, m1, m2, m3 = line[row], line[r1], line[r2], line[r3]
            sums = add_selected(sums, x0, d0, m0, mean_high, mean_low, r)
            sums = add_selected(sums, x1, d1, m1, mean_high, mean_low, r)
            sums = add_selected(sums, x2, d2, m2, mean_high, mean_low, r)
            sums = add_selected(sums, x3_, d3, m3, mean_high, mean_low, r)
            row = r3 + TILE_ROWS
        while row < end:
            sums = add_selected(
                sums, x3[bp, row, k], dy3[bp, row, k], line[row], mean_high, mean_low, r
            )
            row += TILE_ROWS
        return sums

    @cuda.jit
    def kernel(
        dy3, x3, mean, rstd, O, I, chunk_rows, partials, counter, gradients, groups, selection
    ):
        part_dy, part_dyx, part_d = partials
        merge_groups_too, weight2, input_stats, centered, refine, count, refined, shift, offset = (
            groups
        )
        k, j, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], chunk_rows)
        s_dy = 0.0
        s_dyx = 0.0
        s_d = 0.0
        n = 0.0
        if k < x3.shape[2] and selection is not None:
            s_dy, s_dyx, s_d, n = selected_column_sums(
                dy3, x3, mean, rstd, I, selection[0], k, bp, first, end
            )
        elif k < x3.shape[2]:
            c = k // I
            b, o = sample_of(bp, first, x3.shape[1], O)
            sums = (0.0, 0.0, 0.0)
            row = first
            while row + 3 * TILE_ROWS < end:
                b1, o1 = next_row(b, o, O)
                b2, o2 = next_row(b1, o1, O)
                b3, o3 = next_row(b2, o2, O)
                e0 = (x3[bp, row, k], dy3[bp, row, k], mean[b, c], rstd[b, c])
                e1 = (
                    x3[bp, row + TILE_ROWS, k],
                    dy3[bp, row + TILE_ROWS, k],
                    mean[b1, c],
                    rstd[b1, c],
                )
                e2 = (
                    x3[bp, row + 2 * TILE_ROWS, k],
                    dy3[bp, row + 2 * TILE_ROWS, k],
                    mean[b2, c],
                    rstd[b2, c],
                )
                e3 = (
                    x3[bp, row + 3 * TILE_ROWS, k],
                    dy3[bp, row + 3 * TILE_ROWS, k],
                    mean[b3, c],
                    rstd[b3, c],
                )
                sums = add(sums, e0)
                sums = add(sums, e1)
                sums = add(sums, e2)
                sums = add(sums, e3)
                b, o = next_row(b3, o3, O)
                row += 4 * TILE_ROWS
            while row < end:
                sums = add(sums, (x3[bp, row, k], dy3[bp, row, k], mean[b, c], rstd[b, c]))
                b, o = next_row(b, o, O)
                row += TILE_ROWS
            s_dy, s_dyx, s_d = sums
        shared = cuda.shared.array((3, TILE_ROWS, TILE_COLUMNS), np.float64)
        s_dy, s_dyx, s_d = tile_reduce(s_dy, s_dyx, s_d, shared)
        if selection is not None:
            cuda.syncthreads()  # every thread has read the merge before the next one
            n, _, _ = tile_reduce(n, 0.0, 0.0, shared)
            if cuda.threadIdx.y == 0 and k < x3.shape[2]:
                selection[1][bp, j, k] = n
        if cuda.threadIdx.y == 0 and k < x3.shape[2]:
            part_dy[bp, j, k] = s_dy
            part_dyx[bp, j, k] = s_dyx
            if refine:
                part_d[bp, j, k] = s_d
        flag = cuda.shared.array(1, np.int32)
        if last_block(counter, flag):
            merge = cuda.shared.array((3, TEAM_SLOTS), np.float64)
            if merge_groups_too:
                merge_groups(
                    partials, selected_counts(selection), weight2, I, mean, rstd, count,
                    input_stats, centered, refine, tiny, refined, shift, offset, merge,
                )  # fmt: skip
                cuda.syncthreads()
            dweight2, dbias2 = gradients
            parameter_sums(
                part_dy, part_dyx, I, dweight2, dbias2, mean, rstd, refined,
                merge_groups_too and refine, merge,
            )  # fmt: skip

    return kernel


@cuda.jit(device=True)
def selected_counts(selection):
    """The partial counts of :func:`columns_gradient_sums`' ``selection``, None without one."""
    if selection is None:
        return None
    return selection[1]


@cuda.jit(device=True)
def merge_groups(
    partials, part_n, weight2, I, mean, rstd, count, input_stats, centered, refine, tiny,
    refined, shift, offset, shared,
):  # fmt: skip
    """One block: every group's ``sum(dy*w)`` and ``sum(dy*w*x̂)`` from per-sample
    column partials, and from them the ``(B, C)`` coefficients ``shift`` and
    ``offset`` of :func:`~numbanorm._cuda_shared.input_gradient_coefficients`
    over ``count`` elements, or with a mask each group's selected count,
    summed from the partials ``part_n`` (None without one).  With
    ``refine``, the mean is first moved to the mean of ``x`` by ``sum(x -
    mean) / count``; ``refined`` gets the mean used.
    """
    part_dy, part_dyx, part_d = partials
    C = shift.shape[1]
    W = weight2.shape[1]
    R = I // W
    lane, team, teams, team_shift = merge_teams()
    size = 1 << team_shift
    for g in range(team, shift.size, teams):
        b = np.uint32(g) // np.uint32(C)
        c = np.uint32(g) - b * np.uint32(C)
        s_g = 0.0
        s_gx = 0.0
        s_d = 0.0
        n = 0.0
        for w in range(W):
            weight = np.float64(weight2[c, w])
            s_dy, s_dyx = partial_sums(part_dy, part_dyx, b, b + 1, c * I + w * R, R, lane, size)
            s_g += weight * s_dy
            s_gx += weight * s_dyx
            if refine:
                s_d += partial_sums(part_d, part_d, b, b + 1, c * I + w * R, R, lane, size)[0]
            if part_n is not None:
                n += partial_sums(part_n, part_n, b, b + 1, c * I + w * R, R, lane, size)[0]
        s_g, s_gx, s_d = team_reduce(s_g, s_gx, s_d, team_shift, shared)
        group_count = count
        if part_n is not None:
            group_count, _, _ = team_reduce(n, 0.0, 0.0, team_shift, shared)
        if lane == 0:
            m = np.float64(mean[b, c])
            r = np.float64(rstd[b, c])
            if refine:
                delta = s_d / group_count if group_count > 0 else 0.0
                s_gx -= delta * r * s_g
                m += delta
            refined[b, c] = m
            # sum(dy*w*(x - mean)) = sum(dy*w*x̂) / rstd, as the CPU backend converts it
            # (0 for a group without a selected element, whose rstd is 0)
            s_gx = s_gx / r if r != 0.0 else 0.0
            s, z = input_gradient_coefficients(
                s_g, s_gx, r, group_count, input_stats, centered, tiny
            )
            shift[b, c] = s
            offset[b, c] = z


@cuda.jit(device=True)
def parameter_sums(part_dy, part_dyx, I, dweight2, dbias2, mean, rstd, refined, refine, shared):
    """One block: every parameter's partials, over slices, chunks and its columns.

    With ``refine`` (per-sample slices), each sample's ``sum(dy*x̂)`` is moved
    from ``mean`` to the ``refined`` mean.
    """
    W = dweight2.shape[1]
    R = I // W
    lane, team, teams, shift = merge_teams()
    for p in range(team, dweight2.size, teams):
        c = np.uint32(p) // np.uint32(W)
        w = np.uint32(p) - c * np.uint32(W)
        s_dy = 0.0
        s_dyx = 0.0
        for b in range(part_dy.shape[0]):
            a, d = partial_sums(part_dy, part_dyx, b, b + 1, c * I + w * R, R, lane, 1 << shift)
            if refine:
                d -= (np.float64(refined[b, c]) - np.float64(mean[b, c])) * rstd[b, c] * a
            s_dy += a
            s_dyx += d
        s_dy, s_dyx, _ = team_reduce(s_dy, s_dyx, 0.0, shift, shared)
        if lane == 0:
            dweight2[c, w] = s_dyx
            dbias2[c, w] = s_dy


@functools.cache
def group_coefficients(acc_dtype):
    """:func:`merge_groups` as a kernel of one block, for group sums given as
    ``(B, 1, C)`` one-column partials (``I`` 1, weight ones, no refinement),
    and with a mask the selected counts as such partials ``part_n``."""
    tiny = float(np.finfo(acc_dtype).tiny)

    @cuda.jit
    def kernel(partials, weight2, mean, rstd, count, refined, shift, offset, part_n):
        shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
        merge_groups(
            partials, part_n, weight2, 1, mean, rstd, count, True, True, False, tiny, refined,
            shift, offset, shared,
        )  # fmt: skip

    return kernel


@functools.cache
def columns_affine(acc_dtype):
    """The elementwise pass of the columns regime, per-thread arithmetic in ``acc_dtype``.

    ``columns_affine(x3, dy3, backward, rows_per_block, mean, rstd, weight2,
    bias2, shift, offset, out3, mask4)`` over ``(B, O, C*I)`` views, with
    ``(B, C)`` group statistics: the forward's ``out = (x - mean)*rstd*w +
    bias``, or the backward's ``dx = (x - mean)*shift + offset + dy*rstd*w``
    with the groups' coefficients of :func:`group_coefficients`, whose
    ``(x - mean)*shift + offset`` reaches only the elements a ``(B, O, C,
    I)`` ``mask4`` selects (all where it is None).  Each thread works out its
    column's coefficients once.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def value(line, row, xv, dyv, backward, mean_high, mean_low, scale, constant, w):
        """An element's output; ``(x - mean)*scale + constant`` only where the mask
        ``line`` (None: every element) selects row ``row``."""
        out = ((acc(xv) - mean_high) - mean_low) * scale + constant
        if not selected(line, row):
            out = acc(0)
        if backward:
            out += acc(dyv) * w
        return out

    @cuda.jit
    def kernel(
        x3, dy3, backward, rows_per_block, mean, rstd, weight2, bias2, shift, offset, out3, mask4
    ):
        k, _, bp, first, end = tile_rows(x3.shape[1], x3.shape[2], rows_per_block)
        if k < x3.shape[2]:
            I = x3.shape[2] // mean.shape[1]
            W = weight2.shape[1]
            c = k // I
            p = param_index(k - c * I, W, I // W)
            line = mask_column(mask4, bp, c, k - c * I)
            mean_high, mean_low = parts(mean[bp, c])
            w = acc(weight2[c, p]) * acc(rstd[bp, c])
            if backward:
                scale = acc(shift[bp, c])
                constant = acc(offset[bp, c])
            else:
                scale = w
                constant = acc(bias2[c, p])
            row = first
            while row + 3 * TILE_ROWS < end:
                r1 = row + TILE_ROWS
                r2 = r1 + TILE_ROWS
                r3 = r2 + TILE_ROWS
                v0 = x3[bp, row, k]
                v1 = x3[bp, r1, k]
                v2 = x3[bp, r2, k]
                v3 = x3[bp, r3, k]
                d0 = dy3[bp, row, k] if backward else v0
                d1 = dy3[bp, r1, k] if backward else v1
                d2 = dy3[bp, r2, k] if backward else v2
                d3 = dy3[bp, r3, k] if backward else v3
                out3[bp, row, k] = value(
                    line, row, v0, d0, backward, mean_high, mean_low, scale, constant, w
                )
                out3[bp, r1, k] = value(
                    line, r1, v1, d1, backward, mean_high, mean_low, scale, constant, w
                )
                out3[bp, r2, k] = value(
                    line, r2, v2, d2, backward, mean_high, mean_low, scale, constant, w
                )
                out3[bp, r3, k] = value(
                    line, r3, v3, d3, backward, mean_high, mean_low, scale, constant, w
                )
                row = r3 + TILE_ROWS
            while row < end:
                xv = x3[bp, row, k]
                dyv = dy3[bp, row, k] if backward else xv
                out3[bp, row, k] = value(
                    line, row, xv, dyv, backward, mean_high, mean_low, scale, constant, w
                )
                row += TILE_ROWS

    return kernel
