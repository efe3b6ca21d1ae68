"""Numba CPU kernels shared by every norm.

Every kernel works on a C-contiguous *canonical view* ``x4`` of shape
``(B, O, C, I)``: statistics are computed for each ``(b, c)`` group over the
``O`` and ``I`` axes.  Affine parameters ``weight2``/``bias2`` have shape
``(C, W)`` with ``I == W * R``: element ``i`` of a row uses parameter
``i // R``.  ``x4``, the parameters and the outputs are float32 or float64;
arithmetic runs in that precision over blocks of ``ROW_BLOCK`` elements (or
``SLAB_PARTIAL_ROWS`` slabs), around each group's rounded mean, and the
statistics and the sums across blocks are float64.

Work is split into tasks by :func:`plan_tasks`.  In the *row* regime (``I``
long enough to vectorize) a task is ``(b-block, o-chunk, c)`` and walks
contiguous rows of length ``I``; in the *slab* regime (short ``I``) a task is
``(b-block, o-chunk, c-block)`` and vectorizes over the contiguous elements
of its channels in each ``(b, o)`` slab, at most ``SLAB_BLOCK`` of them.
When a task owns whole groups (one o-chunk), the statistics and the
elementwise pass run in the same task, so the second read of a group comes
from cache: one pass over memory.  The partition depends only on the shape,
never on the thread count, so results are bit-identical between runs;
inputs of at most ``SERIAL_MAX_ELEMENTS`` run a serial compilation of the
same kernels (``SERIAL``).
"""

import functools
import math
import types

import numpy as np
from numba import prange

from ._jit import jit

ROW_MIN_LENGTH = 32
TARGET_TASKS = 64
MIN_WHOLE_GROUPS = 16
SLAB_BLOCK = 32768
ROW_BLOCK = 1024
SLAB_PARTIAL_ROWS = 32
SERIAL_MAX_ELEMENTS = 1 << 14
MIN_TASK_ELEMENTS = 4096
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT64_TINY = float(np.finfo(np.float64).tiny)


@functools.lru_cache(maxsize=1024)
def plan_tasks(B, O, C, I):
    """Split a ``(B, O, C, I)`` view into parallel tasks.

    Returns ``(rows, b_block, o_chunk, c_block)``: whether the row regime is
    used, how many consecutive ``b`` each task covers, how many consecutive
    ``o``, and in the slab regime how many consecutive ``c``.  A slab task
    spans at most ``SLAB_BLOCK`` elements of a slab, so that its scratch
    stays small however wide the slabs are.  Groups are split along ``O``
    only when there are too few of them to keep every core busy, and a task
    gets at least ``MIN_TASK_ELEMENTS`` elements where the input has them:
    below that, starting a task costs more than its work.
    """
    rows = I >= ROW_MIN_LENGTH or O == 1
    c_block = C if rows else max(1, min(C, SLAB_BLOCK // max(I, 1)))
    n_c = C if rows else -(-C // c_block)
    groups = B * n_c
    per_o = I if rows else c_block * I
    if groups >= MIN_WHOLE_GROUPS or O == 1:
        o_chunk = O
        n_b_blocks = min(B, -(-TARGET_TASKS // max(n_c, 1)))
        b_block = max(-(-B // max(n_b_blocks, 1)), -(-MIN_TASK_ELEMENTS // max(O * per_o, 1)))
    else:
        o_chunk = -(-O // min(O, -(-TARGET_TASKS // max(groups, 1))))
        if not rows:
            slab_rows = max(1, SLAB_BLOCK // max(per_o, 1))
            o_chunk = max(min(o_chunk, slab_rows), -(-O // TARGET_TASKS))
        o_chunk = max(o_chunk, -(-MIN_TASK_ELEMENTS // max(per_o, 1)))
        b_block = 1
    return rows, max(min(b_block, B), 1), max(min(o_chunk, O), 1), max(c_block, 1)


def n_param_blocks(B, O, b_block, o_chunk):
    """Number of partial sums of the parameter gradients (see :func:`gradient_sums`)."""
    return -(-B // b_block) * -(-O // o_chunk)


@jit(inline=True, fastmath=False)
def _task_bounds(t, B, O, C, rows, b_block, o_chunk, c_block):
    """``(b0, b1, o0, o1, c, q)`` of task ``t``: ``c`` is a channel, or a block of
    ``c_block`` channels in the slab regime; ``q`` indexes the parameter sums."""
    n_o = -(-O // o_chunk)
    n_c = C if rows else -(-C // c_block)
    c = t % n_c
    j = (t // n_c) % n_o
    bb = t // (n_c * n_o)
    return (bb * b_block, min(B, (bb + 1) * b_block), j * o_chunk,
            min(O, (j + 1) * o_chunk), c, bb * n_o + j)


@jit(inline=True, fastmath=False)
def _n_tasks(B, O, C, rows, b_block, o_chunk, c_block):
    return -(-B // b_block) * -(-O // o_chunk) * (C if rows else -(-C // c_block))


@jit(inline=True, fastmath=False)
def _n_nonfinite(stat):
    """How many entries of a ``(B, C)`` statistic are inf or NaN.

    float32 sums of squares overflow for values beyond about 1e17, and a
    group holding NaN or inf has no finite statistics: the engine looks at
    such groups again (``_engine.resum_overflowed``) when this is not 0.
    """
    n = 0
    for b in range(stat.shape[0]):
        for c in range(stat.shape[1]):
            if not math.isfinite(stat[b, c]):
                n += 1
    return n


@jit(inline=True, fastmath=False)
def _chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    if n_b == 0:
        return n_a, mean_a, m2_a
    n = n_a + n_b
    delta = mean_b - mean_a
    frac = n_b / n
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


@jit(inline=True, fastmath=False)
def _input_grad_coefficients(sum_g, sum_gx, rstd, count, from_input, centered, tiny):
    """``(shift, offset)`` of ``dx = dy*w*rstd + (x - mean)*shift + offset``.

    ``sum_g = sum(dy*w)`` and ``sum_gx = sum(dy*w*(x - mean))`` over the group;
    with statistics that do not depend on ``x`` both terms vanish.  ``shift``
    scales like ``1 / var``: below ``tiny``, the smallest normal number of
    the precision of ``x`` (float32 data of standard deviation beyond about
    1e18), it would lose its digits in that precision, and is NaN instead.
    """
    if not from_input:
        return 0.0, 0.0
    mean_g = sum_g / count if centered else 0.0
    shift = -rstd * rstd * rstd * sum_gx / count
    if shift != 0.0 and abs(shift) < tiny:
        shift = math.nan
    return shift, -rstd * mean_g


# ----------------------------------------------------------------------------
# Row regime: one (b, c) group, rows x4[b, o, c, :] for o in [o0, o1)


@jit(inline=True)
def _block_moments(block, centered):
    """``(mean, M2)`` of a short contiguous block, as float64.

    Summed in the block's own precision, which vectorizes float32 twice as
    wide as float64, around a pivot: the block's mean rounded to that
    precision.  The pivot removes any offset before squaring, and the sum of
    the deviations corrects for its rounding, so the result keeps float64
    accuracy for blocks of ``ROW_BLOCK`` elements.  float32 sums of squares
    overflow for values beyond about 1e17: the engine sums such groups again
    in float64 (``_engine.resum_overflowed``).
    """
    n = block.size
    pivot = block.dtype.type(0)
    if centered:
        total = block.dtype.type(0)
        for i in range(n):
            total += block[i]
        pivot = block.dtype.type(total / n)
    s1 = block.dtype.type(0)
    s2 = block.dtype.type(0)
    for i in range(n):
        d = block[i] - pivot
        s1 += d
        s2 += d * d
    if not centered:
        return 0.0, np.float64(s2)
    shift = np.float64(s1) / n
    return np.float64(pivot) + shift, np.float64(s2) - np.float64(s1) * shift


@jit(inline=True)
def _row_moments(row, centered):
    """(count, mean, M2) of a contiguous row: blockwise, Chan-merged in float64."""
    if row.size <= ROW_BLOCK:
        block_mean, block_m2 = _block_moments(row, centered)
        return row.size, block_mean, block_m2
    n_total = 0
    mean = 0.0
    m2 = 0.0
    for start in range(0, row.size, ROW_BLOCK):
        block = row[start:start + ROW_BLOCK]
        block_mean, block_m2 = _block_moments(block, centered)
        n_total, mean, m2 = _chan_merge(n_total, mean, m2, block.size, block_mean, block_m2)
    return n_total, mean, m2


@jit(inline=True)
def _rows_moments(x4, b, o0, o1, c, centered):
    n = 0
    mean = 0.0
    m2 = 0.0
    for o in range(o0, o1):
        n_r, mean_r, m2_r = _row_moments(x4[b, o, c], centered)
        n, mean, m2 = _chan_merge(n, mean, m2, n_r, mean_r, m2_r)
    return mean, m2


@jit(inline=True)
def _rows_normalize(x4, b, o0, o1, c, mean, rstd, w_row, bias_row, out4):
    """``out = (x - mean) * rstd * w + bias`` over the rows ``x4[b, o0:o1, c]``.

    Computed in the precision of ``x`` (``w_row`` and ``bias_row`` are
    given in it) as ``(x - pivot) * a + (bias - delta * a)``, where ``pivot``
    is ``mean`` rounded to that precision and ``delta = mean - pivot``:
    ``x - pivot`` is exact for ``x`` near the mean, so a large offset costs
    no accuracy.
    """
    pivot = x4.dtype.type(mean)
    delta = mean - np.float64(pivot)
    scale = x4.dtype.type(rstd)
    delta_scale = x4.dtype.type(delta * rstd)
    W = w_row.size
    R = x4.shape[3] // W
    for o in range(o0, o1):
        xr = x4[b, o, c]
        yr = out4[b, o, c]
        if R == 1:
            for i in range(W):
                yr[i] = (xr[i] - pivot) * (scale * w_row[i]) + (bias_row[i]
                                                                - delta_scale * w_row[i])
        else:
            for wi in range(W):
                a = x4.dtype.type(rstd * w_row[wi])
                t = x4.dtype.type(bias_row[wi] - delta * rstd * w_row[wi])
                xs = xr[wi * R:(wi + 1) * R]
                ys = yr[wi * R:(wi + 1) * R]
                for k in range(R):
                    ys[k] = (xs[k] - pivot) * a + t


@jit(inline=True)
def _rows_input_gradient(dy4, x4, b, o0, o1, c, mean, rstd, shift, offset, w_row, dx4):
    """``dx = dy * rstd * w + (x - mean) * shift + offset`` over the rows of one group.

    In the precision of ``x``, around the rounded mean as in
    :func:`_rows_normalize`.
    """
    pivot = x4.dtype.type(mean)
    delta = mean - np.float64(pivot)
    h = x4.dtype.type(shift)
    t = x4.dtype.type(offset - delta * shift)
    scale = x4.dtype.type(rstd)
    W = w_row.size
    R = x4.shape[3] // W
    for o in range(o0, o1):
        xr = x4[b, o, c]
        gr = dy4[b, o, c]
        dxr = dx4[b, o, c]
        if R == 1:
            for i in range(W):
                dxr[i] = gr[i] * (scale * w_row[i]) + ((xr[i] - pivot) * h + t)
        else:
            for wi in range(W):
                u = x4.dtype.type(rstd * w_row[wi])
                xs = xr[wi * R:(wi + 1) * R]
                gs = gr[wi * R:(wi + 1) * R]
                dxs = dxr[wi * R:(wi + 1) * R]
                for k in range(R):
                    dxs[k] = gs[k] * u + ((xs[k] - pivot) * h + t)


@jit(inline=True)
def _flush_partials(part, param_dy, param_dyx):
    """Add the partial parameter sums ``part`` into the float64 ones and clear them."""
    for i in range(part.shape[1]):
        param_dy[i] += part[0, i]
        param_dyx[i] += part[1, i]
    part[:] = 0


@jit(inline=True)
def _rows_gradient(dy4, x4, b, o0, o1, c, m, r, w_row, refine, part, n_partial, group_h,
                   param_dy, param_dyx):
    """``(m, sum(dy*w), sum(dy*w*(x - m)), sum(x - m), n_partial)`` of one group.

    The parameter sums accumulate.  With ``refine`` (the group's rows must
    all be given) the mean ``m`` is refined from ``x`` (see
    :func:`_rows_mean`), and the sums are around the refined mean, which is
    returned.

    Products are formed in the precision of ``x`` around the rounded mean
    and the group sums are summed in float64.  With a weight per element
    (``R == 1``) the parameter sums go to ``part``, partial sums in the
    precision of ``x`` over at most ``SLAB_PARTIAL_ROWS`` rows, which are
    flushed into ``param_dy``/``param_dyx``; ``n_partial`` counts the rows
    in ``part``.  Such rows are whole groups (``O == 1``), never split
    between tasks: they skip ``sum(x - m)`` (NaN), and refining takes a
    pass of its own, only where the offset exceeds the standard deviation.
    With a weight per segment of ``R`` elements the group's sums of ``dy``
    per weight go to ``group_h`` (scratch) and the parameter sums are
    completed once the mean is known, so refining costs no pass.
    """
    W = w_row.size
    R = x4.shape[3] // W
    if refine and R == 1 and _rounding_counts(m, r):
        m = _rows_mean(x4, b, o0, o1, c, m)
    pivot = x4.dtype.type(m)
    delta = m - np.float64(pivot)
    s_g = 0.0
    s_gd = 0.0
    s_x = 0.0
    count = (o1 - o0) * x4.shape[3]
    if R == 1:
        delta_t = x4.dtype.type(delta)
        r_t = x4.dtype.type(r)
        part_dy = part[0]
        part_dyx = part[1]
        for o in range(o0, o1):
            xr = x4[b, o, c]
            gr = dy4[b, o, c]
            for start in range(0, W, ROW_BLOCK):
                xs = xr[start:start + ROW_BLOCK]
                gs = gr[start:start + ROW_BLOCK]
                ws = w_row[start:start + ROW_BLOCK]
                ps = part_dy[start:start + ROW_BLOCK]
                pxs = part_dyx[start:start + ROW_BLOCK]
                block_g = x4.dtype.type(0)
                block_gd = x4.dtype.type(0)
                for i in range(xs.size):
                    d = gs[i]
                    dd = d * (xs[i] - pivot)
                    block_g += d * ws[i]
                    block_gd += dd * ws[i]
                    ps[i] += d
                    pxs[i] += (dd - delta_t * d) * r_t
                s_g += block_g
                s_gd += block_gd
            n_partial += 1
            if n_partial == SLAB_PARTIAL_ROWS:
                _flush_partials(part, param_dy, param_dyx)
                n_partial = 0
        return m, s_g, s_gd - delta * s_g, math.nan, n_partial
    group_h[:] = 0.0
    for o in range(o0, o1):
        xr = x4[b, o, c]
        gr = dy4[b, o, c]
        for wi in range(W):
            h = 0.0
            hd = 0.0
            for start in range(wi * R, (wi + 1) * R, ROW_BLOCK):
                xs = xr[start:min(start + ROW_BLOCK, (wi + 1) * R)]
                gs = gr[start:min(start + ROW_BLOCK, (wi + 1) * R)]
                block_h = x4.dtype.type(0)
                block_hd = x4.dtype.type(0)
                block_x = x4.dtype.type(0)
                for k in range(xs.size):
                    xd = xs[k] - pivot
                    block_h += gs[k]
                    block_hd += gs[k] * xd
                    block_x += xd
                h += block_h
                hd += block_hd
                s_x += block_x
            s_g += h * w_row[wi]
            s_gd += hd * w_row[wi]
            group_h[wi] += h
            param_dyx[wi] += hd * r
    if refine:
        delta = s_x / count
        m = np.float64(pivot) + delta
    for wi in range(W):
        param_dy[wi] += group_h[wi]
        param_dyx[wi] -= delta * group_h[wi] * r
    return m, s_g, s_gd - delta * s_g, s_x - count * delta, n_partial


@jit(inline=True, fastmath=False)
def _rounding_counts(m, r):
    """Whether rounding the mean ``m`` to float32 counts against float32's own precision.

    The rounding is at most ``|m| * 2**-24``, which ``rstd = r`` scales: it
    matters only for an offset beyond the standard deviation.
    """
    return abs(m) * r > 1.0


@jit(inline=True)
def _rows_mean(x4, b, o0, o1, c, m):
    """The mean of the rows ``x4[b, o0:o1, c]``, refined from an approximation ``m``.

    ``m`` rounded to the precision of ``x`` is a pivot; the deviations from
    it are exact for ``x`` near the mean, so their sum gives the mean to
    float64 accuracy, whatever rounding ``m`` went through.
    """
    pivot = x4.dtype.type(m)
    s_x = 0.0
    for o in range(o0, o1):
        xr = x4[b, o, c]
        for start in range(0, xr.size, ROW_BLOCK):
            xs = xr[start:start + ROW_BLOCK]
            block_x = x4.dtype.type(0)
            for i in range(xs.size):
                block_x += xs[i] - pivot
            s_x += block_x
    return np.float64(pivot) + s_x / ((o1 - o0) * x4.shape[3])


# ----------------------------------------------------------------------------
# Slab regime: every c of one b, slabs x3[b, o, :] for o in [o0, o1)


@jit(fastmath=False)
def _slab_scratch(x3, width):
    """Per-task scratch of the slab helpers for slabs ``width`` elements wide.

    Partial sums, float64 totals and pivots.
    """
    return np.empty((3, width), x3.dtype), np.empty((3, width)), np.empty(width, x3.dtype)


@jit(inline=True)
def _slab_sums(x3, dy3, b, o0, o1, k0, k1, pivot_k, what, part, total):
    """Per-element sums over the slabs ``x3[b, o0:o1, k0:k1]`` into ``total`` (float64).

    ``what`` 0: ``total[0] = sum(x)``; 1: ``sum(x - p)`` and ``sum((x - p)**2)``;
    2: ``sum(dy)`` and ``sum(dy * (x - p))``; 3: these and ``total[2] = sum(x - p)``; with
    the pivots ``p = pivot_k``.
    Summed in the input's precision over ``SLAB_PARTIAL_ROWS`` slabs at a
    time (``part``: scratch), then in float64.
    """
    total[:] = 0.0
    part0 = part[0]
    part1 = part[1]
    part2 = part[2]
    for start in range(o0, o1, SLAB_PARTIAL_ROWS):
        part[:] = 0
        for o in range(start, min(o1, start + SLAB_PARTIAL_ROWS)):
            xs = x3[b, o, k0:k1]
            if what == 0:
                for k in range(xs.size):
                    part0[k] += xs[k]
            elif what == 1:
                for k in range(xs.size):
                    d = xs[k] - pivot_k[k]
                    part0[k] += d
                    part1[k] += d * d
            elif what == 2:
                gs = dy3[b, o, k0:k1]
                for k in range(xs.size):
                    part0[k] += gs[k]
                    part1[k] += gs[k] * (xs[k] - pivot_k[k])
            else:
                gs = dy3[b, o, k0:k1]
                for k in range(xs.size):
                    d = xs[k] - pivot_k[k]
                    part0[k] += gs[k]
                    part1[k] += gs[k] * d
                    part2[k] += d
        for k in range(part0.size):
            total[0, k] += part0[k]
            total[1, k] += part1[k]
            total[2, k] += part2[k]


@jit(inline=True)
def _slab_moments(x3, b, o0, o1, k0, k1, C, centered, part, total, pivot_k, mean_c, m2_c):
    """Mean and M2 of the ``C`` channels of ``x3[b, o0:o1, k0:k1]``, in two passes.

    The first pass finds each c's mean, rounded to the input's precision as a
    pivot; the second sums deviations from it, as in :func:`_block_moments`.
    ``part``, ``total`` and ``pivot_k`` are scratch.
    """
    I = (k1 - k0) // C
    count = (o1 - o0) * I
    pivot_k[:] = 0
    if centered:
        _slab_sums(x3, x3, b, o0, o1, k0, k1, pivot_k, 0, part, total)
        for c in range(C):
            pivot_k[c * I:(c + 1) * I] = total[0, c * I:(c + 1) * I].sum() / count
    _slab_sums(x3, x3, b, o0, o1, k0, k1, pivot_k, 1, part, total)
    for c in range(C):
        s1 = total[0, c * I:(c + 1) * I].sum()
        s2 = total[1, c * I:(c + 1) * I].sum()
        if centered:
            shift = s1 / count
            mean_c[c] = np.float64(pivot_k[c * I]) + shift
            m2_c[c] = s2 - s1 * shift
        else:
            mean_c[c] = 0.0
            m2_c[c] = s2


@jit(inline=True)
def _slab_affine(x3, dy3, use_dy, b, o0, o1, k0, k1, mean_c, scale_c, shift_c, offset_c,
                 dy_scale_c, weight2, bias2, coef, out3):
    """``out = (x - m)*(scale*w + shift) + bias + offset [+ dy*dy_scale*w]`` for every c at once.

    The slab-regime counterpart of :func:`_rows_normalize` and
    :func:`_rows_input_gradient`: per-element coefficients (``coef``,
    scratch) in the input's precision, around the rounded means.
    """
    C, W = weight2.shape
    CI = k1 - k0
    I = CI // C
    R = I // W
    p_k = coef[0]
    a_k = coef[1]
    t_k = coef[2]
    u_k = coef[3]
    for c in range(C):
        pivot = x3.dtype.type(mean_c[c])
        delta = mean_c[c] - np.float64(pivot)
        for i in range(I):
            k = c * I + i
            w = np.float64(weight2[c, i // R])
            a = scale_c[c] * w + shift_c[c]
            p_k[k] = pivot
            a_k[k] = a
            t_k[k] = bias2[c, i // R] + offset_c[c] - delta * a
            u_k[k] = dy_scale_c[c] * w
    for o in range(o0, o1):
        xs = x3[b, o, k0:k1]
        ys = out3[b, o, k0:k1]
        gs = dy3[b, o, k0:k1]
        if use_dy:
            for k in range(CI):
                ys[k] = gs[k] * u_k[k] + ((xs[k] - p_k[k]) * a_k[k] + t_k[k])
        else:
            for k in range(CI):
                ys[k] = (xs[k] - p_k[k]) * a_k[k] + t_k[k]


@jit(inline=True)
def _slab_gradient(dy3, x3, b, o0, o1, k0, k1, mean_c, rstd_c, weight2, part, total, pivot_k,
                   refine, whole, used_mean_c, g_c, gx_c, d_c, param_dy, param_dyx):
    """Row-regime :func:`_rows_gradient` for every c at once (``part``, ``total``,
    ``pivot_k``: scratch).

    With ``refine`` the mean is to be refined from ``x`` (see
    :func:`_rows_mean`), where its rounding counts (:func:`_rounding_counts`
    for some channel): the slabs' sums of ``x - mean`` are then taken too.
    Slabs that hold ``whole`` groups refine it here; otherwise ``d_c``
    receives ``sum(x - mean)`` for the caller to refine it (0 where not
    summed).  The sums are around ``used_mean_c``, the mean used.
    """
    C, W = weight2.shape
    I = (k1 - k0) // C
    R = I // W
    count = (o1 - o0) * I
    deviations = False
    for c in range(C):
        pivot_k[c * I:(c + 1) * I] = mean_c[c]
        deviations = deviations or (refine and _rounding_counts(mean_c[c], rstd_c[c]))
    _slab_sums(x3, dy3, b, o0, o1, k0, k1, pivot_k, 3 if deviations else 2, part, total)
    for c in range(C):
        pivot = np.float64(pivot_k[c * I])
        s_x = total[2, c * I:(c + 1) * I].sum() if deviations else 0.0
        delta = s_x / count if deviations and whole else mean_c[c] - pivot
        used_mean_c[c] = pivot + delta
        d_c[c] = s_x - count * delta if deviations else 0.0
        s_g = 0.0
        s_gx = 0.0
        for i in range(I):
            k = c * I + i
            w = weight2[c, i // R]
            h = total[0, k]
            hx = total[1, k] - delta * h
            s_g += h * w
            s_gx += hx * w
            param_dy[c, i // R] += h
            param_dyx[c, i // R] += hx * rstd_c[c]
        g_c[c] = s_g
        gx_c[c] = s_gx


# ----------------------------------------------------------------------------
# Kernels


@jit(parallel=True)
def group_moments(x4, centered, rows, b_block, o_chunk, c_block, mean_out, m2_out):
    """Mean and M2 of every ``(b, c)`` group of ``x4`` into ``(B, C)`` arrays.

    For groups split into several o-chunks: per-chunk results are merged with
    Chan's formula.  ``centered=False`` gives a zero mean and the sum of
    squares (RMS norm).  Returns the number of groups whose M2 is not finite
    (see :func:`_n_nonfinite`).
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    n_o = -(-O // o_chunk)
    if n_o == 1:  # whole groups: no partial statistics to merge
        part_mean = mean_out.reshape((B, 1, C))
        part_m2 = m2_out.reshape((B, 1, C))
    else:
        part_mean = np.empty((B, n_o, C))
        part_m2 = np.empty((B, n_o, C))
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk, c_block)):
        b0, b1, o0, o1, c, _ = _task_bounds(t, B, O, C, rows, b_block, o_chunk, c_block)
        c0 = c * c_block
        c1 = min(C, c0 + c_block)
        j = o0 // o_chunk
        if rows:
            for b in range(b0, b1):
                part_mean[b, j, c], part_m2[b, j, c] = _rows_moments(x4, b, o0, o1, c, centered)
        else:
            part, total, pivot_k = _slab_scratch(x3, (c1 - c0) * I)
            for b in range(b0, b1):
                _slab_moments(x3, b, o0, o1, c0 * I, c1 * I, c1 - c0, centered, part, total,
                              pivot_k, part_mean[b, j, c0:c1], part_m2[b, j, c0:c1])
    if n_o == 1:
        return _n_nonfinite(m2_out)
    for g in prange(B * C):
        b = g // C
        c = g % C
        n = 0
        mean = 0.0
        m2 = 0.0
        for j in range(n_o):
            n_j = (min(O, (j + 1) * o_chunk) - j * o_chunk) * I
            n, mean, m2 = _chan_merge(n, mean, m2, n_j, part_mean[b, j, c], part_m2[b, j, c])
        mean_out[b, c] = mean
        m2_out[b, c] = m2
    return _n_nonfinite(m2_out)


@jit(parallel=True)
def normalize(x4, compute_stats, centered, eps, rows, b_block, o_chunk, c_block, mean, var, rstd,
              weight2, bias2, out4):
    """``out = (x - mean) * rstd * w + bias``.

    With ``compute_stats`` (tasks must own whole groups: ``o_chunk == O``)
    each task first computes its groups' statistics into ``mean``, ``var``
    and ``rstd``, and normalizes them while they are still in cache;
    otherwise ``mean`` and ``rstd`` are given and ``var`` is not used.
    Returns the number of groups whose computed variance is not finite.
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    out3 = out4.reshape((B, O, C * I))
    count = O * I
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk, c_block)):
        b0, b1, o0, o1, c, _ = _task_bounds(t, B, O, C, rows, b_block, o_chunk, c_block)
        c0 = c * c_block
        c1 = min(C, c0 + c_block)
        if rows:
            for b in range(b0, b1):
                if compute_stats:
                    m, m2 = _rows_moments(x4, b, o0, o1, c, centered)
                    mean[b, c] = m
                    var[b, c] = m2 / count
                    rstd[b, c] = 1.0 / math.sqrt(m2 / count + eps)
                _rows_normalize(x4, b, o0, o1, c, mean[b, c], rstd[b, c], weight2[c], bias2[c],
                                out4)
        else:
            k0 = c0 * I
            k1 = c1 * I
            part, total, pivot_k = _slab_scratch(x3, k1 - k0)
            coef = np.empty((4, k1 - k0), x3.dtype)
            zeros = np.zeros(c1 - c0)
            for b in range(b0, b1):
                if compute_stats:
                    _slab_moments(x3, b, o0, o1, k0, k1, c1 - c0, centered, part, total, pivot_k,
                                  mean[b, c0:c1], var[b, c0:c1])
                    for cc in range(c0, c1):
                        var[b, cc] /= count
                        rstd[b, cc] = 1.0 / math.sqrt(var[b, cc] + eps)
                _slab_affine(x3, x3, False, b, o0, o1, k0, k1, mean[b, c0:c1], rstd[b, c0:c1],
                             zeros, zeros, zeros, weight2[c0:c1], bias2[c0:c1], coef, out3)
    return _n_nonfinite(var) if compute_stats else 0


@jit(parallel=True)
def gradient_sums(dy4, x4, mean, rstd, weight2, refine, rows, b_block, o_chunk, c_block,
                  group_g, group_gx, group_d, param_dy, param_dyx):
    """Reductions of the backward pass for groups split into o-chunks.

    Per ``(b, c)`` group: ``group_g = sum(dy*w)``, ``group_gx =
    sum(dy*w*(x - mean))``, and with ``refine`` ``group_d = sum(x - mean)``
    for the caller to refine the mean (0 where its rounding does not count,
    see :func:`_slab_gradient`).  Per task block ``q`` and parameter
    ``(c, wi)``: ``param_dy[q] = sum(dy)``, ``param_dyx[q] =
    sum(dy*(x - mean)*rstd)``; the caller sums over ``q`` in a fixed order.
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    n_o = -(-O // o_chunk)
    part_g = np.empty((B, n_o, C))
    part_gx = np.empty((B, n_o, C))
    part_d = np.empty((B, n_o, C))
    param_dy[:] = 0.0
    param_dyx[:] = 0.0
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk, c_block)):
        b0, b1, o0, o1, c, q = _task_bounds(t, B, O, C, rows, b_block, o_chunk, c_block)
        c0 = c * c_block
        c1 = min(C, c0 + c_block)
        j = o0 // o_chunk
        if rows:
            part = np.zeros((2, weight2.shape[1]), x4.dtype)
            group_h = np.empty(weight2.shape[1])
            n_partial = 0
            for b in range(b0, b1):
                _, part_g[b, j, c], part_gx[b, j, c], part_d[b, j, c], n_partial = _rows_gradient(
                    dy4, x4, b, o0, o1, c, mean[b, c], rstd[b, c], weight2[c], False, part,
                    n_partial, group_h, param_dy[q, c], param_dyx[q, c])
            _flush_partials(part, param_dy[q, c], param_dyx[q, c])
        else:
            part, total, pivot_k = _slab_scratch(x3, (c1 - c0) * I)
            used_mean = np.empty(c1 - c0)
            for b in range(b0, b1):
                _slab_gradient(dy3, x3, b, o0, o1, c0 * I, c1 * I, mean[b, c0:c1], rstd[b, c0:c1],
                               weight2[c0:c1], part, total, pivot_k, refine, False, used_mean,
                               part_g[b, j, c0:c1], part_gx[b, j, c0:c1], part_d[b, j, c0:c1],
                               param_dy[q, c0:c1], param_dyx[q, c0:c1])
    for g in prange(B * C):
        b = g // C
        c = g % C
        s_g = 0.0
        s_gx = 0.0
        s_d = 0.0
        for j in range(n_o):
            s_g += part_g[b, j, c]
            s_gx += part_gx[b, j, c]
            s_d += part_d[b, j, c]
        group_g[b, c] = s_g
        group_gx[b, c] = s_gx
        group_d[b, c] = s_d


@jit(parallel=True)
def input_gradient(dy4, x4, mean, rstd, weight2, from_input, centered, compute_sums, refine,
                   count, rows, b_block, o_chunk, c_block, group_g, group_gx, param_dy, param_dyx,
                   dx4):
    """``dx``, and with ``compute_sums`` the reductions of :func:`gradient_sums` too.

    With ``compute_sums`` (tasks must own whole groups) each task reduces its
    groups and writes their ``dx`` while they are still in cache; otherwise
    ``group_g`` and ``group_gx`` are given.  ``count`` is the number of
    elements each group's statistics came from: ``O * I``, or more when the
    groups span other processes and the given sums are theirs too.

    With ``compute_sums`` and ``refine`` the mean is taken as an
    approximation and refined from ``x`` (see :func:`_rows_gradient` and
    :func:`_slab_gradient`; ``_engine.refines_mean`` says when).
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    dx3 = dx4.reshape((B, O, C * I))
    tiny = FLOAT32_TINY if x4.itemsize < 8 else FLOAT64_TINY
    if compute_sums:
        param_dy[:] = 0.0
        param_dyx[:] = 0.0
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk, c_block)):
        b0, b1, o0, o1, c, q = _task_bounds(t, B, O, C, rows, b_block, o_chunk, c_block)
        c0 = c * c_block
        c1 = min(C, c0 + c_block)
        if rows:
            part = np.zeros((2, weight2.shape[1]), x4.dtype)
            group_h = np.empty(weight2.shape[1])
            n_partial = 0
            for b in range(b0, b1):
                m = mean[b, c]
                r = rstd[b, c]
                if compute_sums:
                    m, group_g[b, c], group_gx[b, c], _, n_partial = _rows_gradient(
                        dy4, x4, b, o0, o1, c, m, r, weight2[c], refine, part, n_partial,
                        group_h, param_dy[q, c], param_dyx[q, c])
                shift, offset = _input_grad_coefficients(group_g[b, c], group_gx[b, c], r,
                                                         count, from_input, centered, tiny)
                _rows_input_gradient(dy4, x4, b, o0, o1, c, m, r, shift, offset, weight2[c],
                                     dx4)
            _flush_partials(part, param_dy[q, c], param_dyx[q, c])
        else:
            k0 = c0 * I
            k1 = c1 * I
            part, total, pivot_k = _slab_scratch(x3, k1 - k0)
            coef = np.empty((4, k1 - k0), x3.dtype)
            zero_bias = np.zeros_like(weight2[c0:c1])
            zeros = np.zeros(c1 - c0)
            shift_c = np.empty(c1 - c0)
            offset_c = np.empty(c1 - c0)
            used_mean = np.empty(c1 - c0)
            deviation_sums = np.empty(c1 - c0)
            for b in range(b0, b1):
                used_mean[:] = mean[b, c0:c1]
                if compute_sums:
                    _slab_gradient(dy3, x3, b, o0, o1, k0, k1, mean[b, c0:c1], rstd[b, c0:c1],
                                   weight2[c0:c1], part, total, pivot_k, refine, True,
                                   used_mean, group_g[b, c0:c1], group_gx[b, c0:c1], deviation_sums,
                                   param_dy[q, c0:c1], param_dyx[q, c0:c1])
                for cc in range(c0, c1):
                    shift_c[cc - c0], offset_c[cc - c0] = _input_grad_coefficients(
                        group_g[b, cc], group_gx[b, cc], rstd[b, cc], count, from_input,
                        centered, tiny)
                _slab_affine(x3, dy3, True, b, o0, o1, k0, k1, used_mean, zeros, shift_c,
                             offset_c, rstd[b, c0:c1], weight2[c0:c1], zero_bias, coef, dx3)


def _serial_variant(kernel):
    """``kernel`` compiled to run on the calling thread alone.

    For inputs of at most ``SERIAL_MAX_ELEMENTS`` a parallel launch costs
    more than the work, and when other processes hold the cores it waits
    for a descheduled thread.  The task partition is the same, so the
    results are identical.  A distinct qualified name keeps the variant's
    on-disk cache entry apart from the parallel kernel's.
    """
    source = kernel.py_func
    serial = types.FunctionType(source.__code__, source.__globals__, source.__name__ + "_serial")
    serial.__qualname__ = source.__qualname__ + "_serial"
    serial.__doc__ = source.__doc__
    return jit(serial)


SERIAL = {kernel: _serial_variant(kernel)
          for kernel in (group_moments, normalize, gradient_sums, input_gradient)}
