"""The rows regime of the GPU kernels: a team of threads per ``(b, c)`` group.

A block's threads form teams of ``1 << team_shift`` threads (a power of two
from 1 to ``MAX_TEAM``: sub-warp teams for short rows, several warps for
long ones).  Teams walk the groups in a grid-stride loop, so the grid is
sized from the device's SM count rather than from the number of groups.
A team's threads read the group's rows with ``UNROLL`` loads in flight each,
merge their float64 sums (:func:`~numbanorm._cuda_shared.team_reduce`), then
run the elementwise pass over the same elements (a second read, mostly from
L1 and L2).  Loops advance by addition: the one integer division per group
is 32-bit.

A row of ``I`` elements is seen as ``(W, R)``, element ``i = w*R + r`` using
parameter ``w``: per element for layer norm (``R == 1``), per segment of
``R`` elements otherwise (group and instance norm).

Each factory builds one kernel (or device function) for an accumulation
dtype, float32 or float64, and caches it.
"""

import functools

import numpy as np
from numba import cuda

from ._cuda_elementwise import fold_running
from ._cuda_shared import (
    TEAM_SLOTS,
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
    selected_statistics,
    strided_deviation_sums,
    team_reduce,
)


@cuda.jit(device=True)
def team_loop(x4, weight2, team_shift):
    """What a thread of a team kernel needs before its loop over the groups.

    ``(groups, count, segment, lane, team, first, step)``: the number of
    groups and their element count, the rows' :func:`segments`, the
    thread's lane in its team and its team in the block, and the first group
    index and stride of the block's loop.
    """
    tid = cuda.threadIdx.x
    teams = cuda.blockDim.x >> team_shift
    return (
        x4.shape[0] * x4.shape[2],
        x4.shape[1] * x4.shape[3],
        segments(x4.shape[3], weight2.shape[1]),
        tid & ((1 << team_shift) - 1),
        tid >> team_shift,
        cuda.blockIdx.x * teams,
        cuda.gridDim.x * teams,
    )


@cuda.jit(device=True)
def group_of(base, team, groups, C):
    """``(active, b, c)`` of a team's group in the loop step from group ``base``.

    A team past the last group is not active and takes the step's first
    group: it still joins its block's merges.  The division is 32-bit.
    """
    g = base + team
    active = g < groups
    if not active:
        g = base
    b = np.uint32(g) // np.uint32(C)
    return active, b, np.uint32(g) - b * np.uint32(C)


@cuda.jit(device=True)
def segments(I, W):
    """``(count, length, per_element)``: a row's segments of one parameter each, or
    one segment of a parameter per element (layer norm)."""
    if W == I:
        return 1, I, True
    return W, I // W, False


@cuda.jit(device=True)
def mask_row(mask4, b, o, c):
    """Row ``(b, o, c)`` of a mask, None without one."""
    if mask4 is None:
        return None
    return mask4[b, o, c]


@cuda.jit(device=True)
def element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias, m_row):
    """``(x, dy, w, bias, selected)`` of element ``i`` of a row: ``dy`` is ``x`` without
    ``use_dy``; ``w`` and ``bias`` are the element's, or the segment's;
    ``selected`` is the mask row ``m_row``'s (True without one)."""
    xv = x_row[i]
    if per_element:
        w = weight2[c, i]
        bias = bias2[c, i]
    return xv, dy_row[i] if use_dy else xv, w, bias, selected(m_row, i)


@cuda.jit(device=True)
def row_deviation_sums(x4, b, c, lane, size, pivot):
    """A thread's :func:`~numbanorm._cuda_shared.deviation_sums` over group ``(b, c)``."""
    I = x4.shape[3]
    s1 = 0.0
    s2 = 0.0
    for o in range(x4.shape[1]):
        row = x4[b, o, c]
        s1, s2 = strided_deviation_sums(row, lane, I, size, s1, s2, pivot)
    return s1, s2


@cuda.jit(device=True)
def selected_group_sums(x4, mask4, b, c, lane, size, active, centered, team_shift, shared):
    """``(count, pivot, s1, s2)``: the team's deviation sums over the elements of group
    ``(b, c)`` that ``mask4`` selects, and their count.

    The pivot is the mean of the threads' first selected elements (0 for RMS
    norm), one more team merge.  Every thread of the block calls it.
    """
    I = x4.shape[3]
    pivot = 0.0
    if centered:
        first = 0.0
        found = 0.0
        if active:
            for o in range(x4.shape[1]):
                first, found = first_selected(x4[b, o, c], mask4[b, o, c], lane, I, size)
                if found > 0.0:
                    break
        first, found, _ = team_reduce(first, found, 0.0, team_shift, shared)
        pivot = selected_pivot(first, found)
    s1 = 0.0
    s2 = 0.0
    n = 0.0
    if active:
        for o in range(x4.shape[1]):
            s1, s2, n = selected_deviation_sums(
                x4[b, o, c], mask4[b, o, c], lane, I, size, s1, s2, n, pivot
            )
    s1, s2, n = team_reduce(s1, s2, n, team_shift, shared)
    return n, pivot, s1, s2


@functools.cache
def affine_row(acc_dtype):
    """The device function writing one group's elementwise pass, in ``acc_dtype``.

    ``affine(x4, dy4, use_dy, b, c, lane, size, segment, mean, a, s, p, q, z,
    weight2, bias2, out4, mask4)`` writes ``out = (x - mean)*(a*w + s) + q*bias + z``
    (plus ``dy*p*w`` with ``use_dy``) over group ``(b, c)``, the thread's share
    of a team of ``size``: the forward's ``y`` and the backward's ``dx`` are
    both of this form.  Where a ``mask4`` (None or the backward's mask) does
    not select an element, only the ``dy`` term is written.  ``segment`` is
    the row's :func:`segments`; ``mean`` is float64.  All loads of an
    unrolled step come before its stores, so ``out`` may be ``x`` or ``dy``.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def value(e, use_dy, mean_high, mean_low, a, s, p, q, z):
        xv, dyv, w, bias, chosen = e
        out = ((acc(xv) - mean_high) - mean_low) * (a * acc(w) + s) + q * acc(bias) + z
        if not chosen:
            out = acc(0)
        if use_dy:
            out += acc(dyv) * p * acc(w)
        return out

    @cuda.jit(device=True)
    def affine_segment(
        x_row, dy_row, use_dy, weight2, bias2, c, i, end, size, per_element, w, bias, m_row,
        mean_high, mean_low, a, s, p, q, z, out_row,
    ):  # fmt: skip
        """:func:`affine` over one segment's elements ``i:end:size`` of a row."""
        while i + 3 * size < end:
            e0 = element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias, m_row)
            i1 = i + size
            e1 = element(x_row, dy_row, use_dy, weight2, bias2, c, i1, per_element, w, bias, m_row)
            i2 = i1 + size
            e2 = element(x_row, dy_row, use_dy, weight2, bias2, c, i2, per_element, w, bias, m_row)
            i3 = i2 + size
            e3 = element(x_row, dy_row, use_dy, weight2, bias2, c, i3, per_element, w, bias, m_row)
            out_row[i] = value(e0, use_dy, mean_high, mean_low, a, s, p, q, z)
            out_row[i1] = value(e1, use_dy, mean_high, mean_low, a, s, p, q, z)
            out_row[i2] = value(e2, use_dy, mean_high, mean_low, a, s, p, q, z)
            out_row[i3] = value(e3, use_dy, mean_high, mean_low, a, s, p, q, z)
            i = i3 + size
        while i < end:
            e = element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias, m_row)
            out_row[i] = value(e, use_dy, mean_high, mean_low, a, s, p, q, z)
            i += size

    @cuda.jit(device=True)
    def affine(
        x4, dy4, use_dy, b, c, lane, size, segment, mean, a, s, p, q, z, weight2, bias2, out4,
        mask4,
    ):  # fmt: skip
        mean_high, mean_low = parts(mean)
        count, length, per_element = segment
        for o in range(x4.shape[1]):
            x_row = x4[b, o, c]
            dy_row = dy4[b, o, c]
            out_row = out4[b, o, c]
            m_row = mask_row(mask4, b, o, c)
            for k in range(count):
                w = weight2[c, k]
                bias = bias2[c, k]
                i = k * length + lane
                end = (k + 1) * length
                # Two versions of the loop, rather than a branch in it.
                if per_element:
                    affine_segment(
                        x_row, dy_row, use_dy, weight2, bias2, c, i, end, size, True, w, bias,
                        m_row, mean_high, mean_low, a, s, p, q, z, out_row,
                    )  # fmt: skip
                else:
                    affine_segment(
                        x_row, dy_row, use_dy, weight2, bias2, c, i, end, size, False, w, bias,
                        m_row, mean_high, mean_low, a, s, p, q, z, out_row,
                    )  # fmt: skip

    return affine


@functools.cache
def rows_forward(acc_dtype):
    """The forward kernel of the rows regime, per-thread arithmetic in ``acc_dtype``.

    ``rows_forward(x4, team_shift, centered, input_stats, write_output, eps,
    mean, var, rstd, weight2, bias2, out4, counter, update)``: with
    ``input_stats``, the group's statistics from ``x4`` into the ``(B, C)``
    arrays ``mean``, ``var`` and ``rstd`` (otherwise ``mean`` and ``rstd``
    are given and ``var`` is not touched); with ``write_output``, ``out4 =
    x̂*w + bias``.  With ``update[0]``, the grid's last block folds the
    statistics into running ones (see
    :func:`~numbanorm._cuda_elementwise.fold_running`; ``counter`` as
    :func:`~numbanorm._cuda_shared.last_block` takes it).

    ``selection`` is None, or ``(mask4, count)`` for statistics over the
    elements the boolean ``mask4`` selects, their number per group into the
    ``(B, C)`` array ``count`` (see :func:`selected_group_sums`).
    """
    acc = np.dtype(acc_dtype).type
    affine = affine_row(acc_dtype)

    @cuda.jit
    def kernel(
        x4,
        team_shift,
        centered,
        input_stats,
        write_output,
        eps,
        mean,
        var,
        rstd,
        weight2,
        bias2,
        out4,
        counter,
        update,
        selection,
    ):
        groups, count, segment, lane, team, first, step = team_loop(x4, weight2, team_shift)
        size = 1 << team_shift
        shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
        zero = acc(0)
        for base in range(first, groups, step):
            active, b, c = group_of(base, team, groups, x4.shape[2])
            if input_stats and selection is not None:
                mask4, counts = selection
                n, pivot, s1, s2 = selected_group_sums(
                    x4, mask4, b, c, lane, size, active, centered, team_shift, shared
                )
                group_mean, variance, group_rstd = selected_statistics(
                    n, pivot, s1, s2, centered, eps
                )
                if active and lane == 0:
                    mean[b, c] = group_mean
                    var[b, c] = variance
                    rstd[b, c] = group_rstd
                    counts[b, c] = n
            elif input_stats:
                pivot = pivot_of(x4[b, 0, c, 0], centered)
                s1 = 0.0
                s2 = 0.0
                if active:
                    s1, s2 = row_deviation_sums(x4, b, c, lane, size, pivot)
                s1, s2, _ = team_reduce(s1, s2, 0.0, team_shift, shared)
                group_mean, m2 = moments_of_sums(count, pivot, s1, s2, centered)
                variance = m2 / count
                group_rstd = reciprocal_sqrt(variance + eps) if active else 0.0
                if active and lane == 0:
                    mean[b, c] = group_mean
                    var[b, c] = variance
                    rstd[b, c] = group_rstd
            else:
                group_mean = np.float64(mean[b, c])
                group_rstd = np.float64(rstd[b, c])
            if write_output and active:
                affine(
                    x4, x4, False, b, c, lane, size, segment, group_mean, acc(group_rstd),
                    zero, zero, acc(1), zero, weight2, bias2, out4, None,
                )  # fmt: skip
        if update[0]:
            flag = cuda.shared.array(1, np.int32)
            if last_block(counter, flag):
                fold_running(update, mean, var)

    return kernel


@functools.cache
def rows_backward(acc_dtype):
    """The backward's ``dx`` kernel of the rows regime, per-thread arithmetic in ``acc_dtype``.

    ``rows_backward(dy4, x4, team_shift, mean, rstd, weight2, input_stats,
    centered, refine, dx4, refined, mask4)``: with ``input_stats``, the
    group's ``sum(dy*w)`` and ``sum(dy*w*(x - mean))``; then ``dx`` with the
    coefficients of :func:`~numbanorm._cuda_shared.input_gradient_coefficients`.
    With ``refine``, the given mean (float32, rounded) is first moved to the
    mean of ``x`` by ``sum(x - mean) / count``, taken in the same pass, and
    written to ``refined``.

    ``mask4`` is None, or the forward's boolean mask: ``count`` and ``sum(x -
    mean)`` then cover the elements it selects (the other sums all), and
    the coefficients' terms reach those elements only.
    """
    acc = np.dtype(acc_dtype).type
    tiny = float(np.finfo(acc_dtype).tiny)
    affine = affine_row(acc_dtype)
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def add(sums, e, mean_high, mean_low, m_row):
        """``sums`` plus element ``e``'s terms; its ``x - mean`` and 1 where the mask
        row ``m_row`` selects it (the count stays 0 without one)."""
        s_g, s_gx, s_d, n = sums
        xv, dyv, w, _, chosen = e
        g = acc(dyv) * acc(w)
        d = (acc(xv) - mean_high) - mean_low
        s_g += np.float64(g)
        s_gx += np.float64(g * d)
        if m_row is None:
            s_d += np.float64(d)
        elif chosen:
            s_d += np.float64(d)
            n += 1.0
        return s_g, s_gx, s_d, n

    @cuda.jit(device=True)
    def segment_sums(
        sums, x_row, dy_row, weight2, c, i, end, size, per_element, w, m_row, mean_high,
        mean_low,
    ):  # fmt: skip
        """``sums`` plus :func:`add` over one segment's elements ``i:end:size`` of a row."""
        while i + 3 * size < end:
            e0 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w, m_row)
            i += size
            e1 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w, m_row)
            i += size
            e2 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w, m_row)
            i += size
            e3 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w, m_row)
            i += size
            sums = add(sums, e0, mean_high, mean_low, m_row)
            sums = add(sums, e1, mean_high, mean_low, m_row)
            sums = add(sums, e2, mean_high, mean_low, m_row)
            sums = add(sums, e3, mean_high, mean_low, m_row)
        while i < end:
            e = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w, m_row)
            sums = add(sums, e, mean_high, mean_low, m_row)
            i += size
        return sums

    @cuda.jit(device=True)
    def gradient_sums(x4, dy4, b, c, lane, size, segment, weight2, mean_high, mean_low, mask4):
        """A thread's ``sum(dy*w)``, ``sum(dy*w*(x - mean))``, and ``sum(x - mean)`` and
        the count over the elements ``mask4`` selects (all, and no count, without one)."""
        count, length, per_element = segment
        sums = (0.0, 0.0, 0.0, 0.0)
        for o in range(x4.shape[1]):
            x_row = x4[b, o, c]
            dy_row = dy4[b, o, c]
            m_row = mask_row(mask4, b, o, c)
            for k in range(count):
                w = weight2[c, k]
                i = k * length + lane
                end = (k + 1) * length
                # Two versions of the loop, rather than a branch in it.
                if per_element:
                    sums = segment_sums(
                        sums, x_row, dy_row, weight2, c, i, end, size, True, w, m_row,
                        mean_high, mean_low,
                    )  # fmt: skip
                else:
                    sums = segment_sums(
                        sums, x_row, dy_row, weight2, c, i, end, size, False, w, m_row,
                        mean_high, mean_low,
                    )  # fmt: skip
        return sums

    @cuda.jit
    def kernel(
        dy4, x4, team_shift, mean, rstd, weight2, input_stats, centered, refine, dx4, refined,
        mask4,
    ):  # fmt: skip
        groups, count, segment, lane, team, first, step = team_loop(x4, weight2, team_shift)
        size = 1 << team_shift
        shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
        zero = acc(0)
        for base in range(first, groups, step):
            active, b, c = group_of(base, team, groups, x4.shape[2])
            m = np.float64(mean[b, c])
            r = np.float64(rstd[b, c])
            s_g = 0.0
            s_gx = 0.0
            group_count = count
            if input_stats:
                mean_high, mean_low = parts(m)
                s_d = 0.0
                n = 0.0
                if active:
                    s_g, s_gx, s_d, n = gradient_sums(
                        x4, dy4, b, c, lane, size, segment, weight2, mean_high, mean_low, mask4
                    )
                s_g, s_gx, s_d = team_reduce(s_g, s_gx, s_d, team_shift, shared)
                if mask4 is not None:
                    group_count, _, _ = team_reduce(n, 0.0, 0.0, team_shift, shared)
                if refine:
                    delta = s_d / group_count if group_count > 0 else 0.0
                    s_gx -= delta * s_g
                    m += delta
                    if active and lane == 0:
                        refined[b, c] = m
            shift, offset = input_gradient_coefficients(
                s_g, s_gx, r, group_count, input_stats, centered, tiny
            )
            if active:
                affine(
                    x4, dy4, True, b, c, lane, size, segment, m, zero, acc(shift), acc(r), zero,
                    acc(offset), weight2, weight2, dx4, mask4,
                )  # fmt: skip

    return kernel
