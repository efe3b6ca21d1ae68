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
    input_gradient_coefficients,
    last_block,
    mean_parts,
    moments_of_sums,
    pivot_of,
    reciprocal_sqrt,
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
def element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias):
    """``(x, dy, w, bias)`` of element ``i`` of a row: ``dy`` is ``x`` without
    ``use_dy``; ``w`` and ``bias`` are the element's, or the segment's."""
    xv = x_row[i]
    if per_element:
        w = weight2[c, i]
        bias = bias2[c, i]
    return xv, dy_row[i] if use_dy else xv, w, bias


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


@functools.cache
def affine_row(acc_dtype):
    """The device function writing one group's elementwise pass, in ``acc_dtype``.

    ``affine(x4, dy4, use_dy, b, c, lane, size, segment, mean, a, s, p, q, z,
    weight2, bias2, out4)`` writes ``out = (x - mean)*(a*w + s) + q*bias + z`` (plus
    ``dy*p*w`` with ``use_dy``) over group ``(b, c)``, the thread's share of
    a team of ``size``: the forward's ``y`` and the backward's ``dx`` are both
    of this form.  ``segment`` is the row's :func:`segments`; ``mean`` is
    float64.  All loads of an unrolled step come
    before its stores, so ``out`` may be ``x`` or ``dy``.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def value(e, use_dy, mean_high, mean_low, a, s, p, q, z):
        xv, dyv, w, bias = e
        out = ((acc(xv) - mean_high) - mean_low) * (a * acc(w) + s) + q * acc(bias) + z
        if use_dy:
            out += acc(dyv) * p * acc(w)
        return out

    @cuda.jit(device=True)
    def affine(
        x4, dy4, use_dy, b, c, lane, size, segment, mean, a, s, p, q, z, weight2, bias2, out4
    ):
        mean_high, mean_low = parts(mean)
        count, length, per_element = segment
        for o in range(x4.shape[1]):
            x_row = x4[b, o, c]
            dy_row = dy4[b, o, c]
            out_row = out4[b, o, c]
            for k in range(count):
                w = weight2[c, k]
                bias = bias2[c, k]
                i = k * length + lane
                end = (k + 1) * length
                while i + 3 * size < end:
                    e0 = element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias)
                    i1 = i + size
                    e1 = element(x_row, dy_row, use_dy, weight2, bias2, c, i1, per_element, w, bias)
                    i2 = i1 + size
                    e2 = element(x_row, dy_row, use_dy, weight2, bias2, c, i2, per_element, w, bias)
                    i3 = i2 + size
                    e3 = element(x_row, dy_row, use_dy, weight2, bias2, c, i3, per_element, w, bias)
                    out_row[i] = value(e0, use_dy, mean_high, mean_low, a, s, p, q, z)
                    out_row[i1] = value(e1, use_dy, mean_high, mean_low, a, s, p, q, z)
                    out_row[i2] = value(e2, use_dy, mean_high, mean_low, a, s, p, q, z)
                    out_row[i3] = value(e3, use_dy, mean_high, mean_low, a, s, p, q, z)
                    i = i3 + size
                while i < end:
                    e = element(x_row, dy_row, use_dy, weight2, bias2, c, i, per_element, w, bias)
                    out_row[i] = value(e, use_dy, mean_high, mean_low, a, s, p, q, z)
                    i += size

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
    ):
        groups, count, segment, lane, team, first, step = team_loop(x4, weight2, team_shift)
        size = 1 << team_shift
        shared = cuda.shared.array((3, TEAM_SLOTS), np.float64)
        zero = acc(0)
        for base in range(first, groups, step):
            active, b, c = group_of(base, team, groups, x4.shape[2])
            if input_stats:
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
                    zero, zero, acc(1), zero, weight2, bias2, out4,
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
    centered, refine, dx4, refined)``: with ``input_stats``, the group's
    ``sum(dy*w)`` and ``sum(dy*w*(x - mean))``; then ``dx`` with the
    coefficients of :func:`~numbanorm._cuda_shared.input_gradient_coefficients`.
    With ``refine``, the given mean (float32, rounded) is first moved to the
    mean of ``x`` by ``sum(x - mean) / count``, taken in the same pass, and
    written to ``refined``.
    """
    acc = np.dtype(acc_dtype).type
    tiny = float(np.finfo(acc_dtype).tiny)
    affine = affine_row(acc_dtype)
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def add(sums, e, mean_high, mean_low):
        s_g, s_gx, s_d = sums
        xv, dyv, w, _ = e
        g = acc(dyv) * acc(w)
        d = (acc(xv) - mean_high) - mean_low
        return s_g + np.float64(g), s_gx + np.float64(g * d), s_d + np.float64(d)

    @cuda.jit(device=True)
    def gradient_sums(x4, dy4, b, c, lane, size, segment, weight2, mean_high, mean_low):
        """A thread's ``sum(dy*w)``, ``sum(dy*w*(x - mean))`` and ``sum(x - mean)``."""
        count, length, per_element = segment
        sums = (0.0, 0.0, 0.0)
        for o in range(x4.shape[1]):
            x_row = x4[b, o, c]
            dy_row = dy4[b, o, c]
            for k in range(count):
                w = weight2[c, k]
                i = k * length + lane
                end = (k + 1) * length
                while i + 3 * size < end:
                    e0 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w)
                    i += size
                    e1 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w)
                    i += size
                    e2 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w)
                    i += size
                    e3 = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w)
                    i += size
                    sums = add(sums, e0, mean_high, mean_low)
                    sums = add(sums, e1, mean_high, mean_low)
                    sums = add(sums, e2, mean_high, mean_low)
                    sums = add(sums, e3, mean_high, mean_low)
                while i < end:
                    e = element(x_row, dy_row, True, weight2, weight2, c, i, per_element, w, w)
                    sums = add(sums, e, mean_high, mean_low)
                    i += size
        return sums

    @cuda.jit
    def kernel(
        dy4, x4, team_shift, mean, rstd, weight2, input_stats, centered, refine, dx4, refined
    ):
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
            if input_stats:
                mean_high, mean_low = parts(m)
                s_d = 0.0
                if active:
                    s_g, s_gx, s_d = gradient_sums(
                        x4, dy4, b, c, lane, size, segment, weight2, mean_high, mean_low
                    )
                s_g, s_gx, s_d = team_reduce(s_g, s_gx, s_d, team_shift, shared)
                if refine:
                    delta = s_d / count
                    s_gx -= delta * s_g
                    m += delta
                    if active and lane == 0:
                        refined[b, c] = m
            shift, offset = input_gradient_coefficients(
                s_g, s_gx, r, count, input_stats, centered, tiny
            )
            if active:
                affine(
                    x4, dy4, True, b, c, lane, size, segment, m, zero, acc(shift), acc(r), zero,
                    acc(offset), weight2, weight2, dx4,
                )  # fmt: skip

    return kernel
