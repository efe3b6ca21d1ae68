"""Numba CPU kernels shared by every norm.

Every kernel works on a C-contiguous *canonical view* ``x4`` of shape
``(B, O, C, I)``: statistics are computed for each ``(b, c)`` group over the
``O`` and ``I`` axes.  Affine parameters ``weight2``/``bias2`` have shape
``(C, W)`` with ``I == W * R``: element ``i`` of a row uses parameter
``i // R``.  ``x4``, the parameters and the outputs are float32 or float64;
arithmetic runs in that precision over blocks of ``ROW_BLOCK`` elements (or
``SLAB_PARTIAL_ROWS`` slabs), around each group's rounded mean, and the
statistics and the sums across blocks are float64.

Work is split into tasks by :func:`plan_tasks`, each a ``(b-block, o-chunk,
c-block)``, in the order of memory.  In the *row* regime (``I`` long enough
to vectorize) a task walks contiguous rows of length ``I``, channel by
channel; in the *slab* regime (short ``I``) it vectorizes over the
contiguous elements of its channels in each ``(b, o)`` slab, at most
``SLAB_BLOCK`` of them.
When a task owns whole groups (one o-chunk), the statistics and the
elementwise pass run in the same task, so the second read of a group comes
from cache: one pass over memory.  The partition depends only on the shape,
never on the thread count, so results are bit-identical between runs;
inputs of at most ``SERIAL_MAX_ELEMENTS`` run a serial compilation of the
same kernels (``SERIAL``).

The row regime comes in two forms: with a weight per element of a row
(``W == I``: layer and RMS norm) and with a weight per segment of ``R > 1``
elements (batch, instance and group norm).  Each of the three has its own
kernels (:data:`ELEMENTS`, :data:`ROWS`, :data:`SLAB`), so that a call
compiles only the code it runs: compilation, not the kernels' speed, is
what a first call costs.  A kernel is a parallel loop over the calls of
one serial *task* function, which its serial variant shares.  Numba
compiles the code of a ``prange`` body several times over, and LLVM
optimizes a parallel kernel, with all the code it calls, once per level of
Numba's parallel wrappers (four): kernel bodies stay small, and so does
the code under them.  The row regime's helpers are inlined into its tasks,
since a call per group would cost small groups more than their work;
the other helpers are compiled once per process (typed once, not per
caller) and linked into the kernels that call them, where LLVM inlines
them (see ``_jit.jit``).

The elementwise passes have one form, ``out = (x - p) * a + t [+ dy * u]``
with coefficients per group and weight index (:func:`_coefficient`), ``p``
the group's mean rounded to the precision of ``x``.  Helpers take
``dy=None`` in the forward and ``bias_row=None`` in the backward: Numba
compiles a function for each type of its arguments, and where one is None
(or a constant) drops the branches that testing it against None rules
out.  The row helpers take ``segments``: None with a weight per element,
the constant True with a weight per segment, so that each row kernel
compiles one of the two.
"""

import collections
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
FUSE_MAX_ELEMENTS = 1 << 18
MAX_BLOCKS = 256
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT64_TINY = float(np.finfo(np.float64).tiny)
# Runs of a mask that repeats one value (zero strides: a padding mask) are read
# from these instead, at unit stride, so that the loops over them vectorize.
_UNIFORM_RUNS = np.zeros((2, SLAB_BLOCK), np.bool_)
_UNIFORM_RUNS[1] = True


@functools.lru_cache(maxsize=1024)
def plan_tasks(B, O, C, I):
    """Split a ``(B, O, C, I)`` view into parallel tasks.

    Returns ``(rows, b_block, o_chunk, c_block)``: whether the row regime is
    used, how many consecutive ``b`` each task covers, how many consecutive
    ``o``, and how many consecutive ``c``.

    Numba hands each thread a contiguous range of task indices, and task
    indices run over ``c`` fastest, then ``o``, then ``b``: the order of
    memory.  A task covers a contiguous range of the input where it can
    (``c_block == C``, or one ``o`` and one ``b``), so that each thread
    streams through its share of the input; a task that walks one channel
    across rows ``C * I`` elements apart ran up to 2x slower on 2 cores,
    in its reads and in its writes.  Tasks aim at ``TARGET_TASKS`` per input
    and hold at least ``MIN_TASK_ELEMENTS`` where the input has them.

    Tasks own whole groups (``o_chunk == O``), which lets the statistics
    and the elementwise pass run in the same task while a group is in
    cache, when a group is contiguous (``O == 1``), when ``O`` slabs fit in
    ``FUSE_MAX_ELEMENTS`` and there are enough groups to share out (the
    whole input fitting there counts as such too), and when slabs are wider
    than a slab task may span (``SLAB_BLOCK`` elements, which bounds its
    scratch): the runs a task reads are then long enough to stream.
    Otherwise groups are split along ``O``, each task holding at most
    ``FUSE_MAX_ELEMENTS``, and their statistics take a pass of their own.
    Each partial statistic then sums at least ``ROW_MIN_LENGTH`` elements,
    and there are at most ``MAX_BLOCKS`` ``(b, o)`` blocks, so that the
    partial sums stay a small fraction of the input.  The partition
    depends on the shape alone.
    """
    rows = I >= ROW_MIN_LENGTH or O == 1
    slab = C * I
    size = B * O * slab
    c_limit = C if rows else max(1, SLAB_BLOCK // max(I, 1))
    whole = (
        O == 1
        or slab > c_limit * I
        or (O * slab <= FUSE_MAX_ELEMENTS and (B >= MIN_WHOLE_GROUPS or size <= FUSE_MAX_ELEMENTS))
    )
    task = max(MIN_TASK_ELEMENTS, -(-size // TARGET_TASKS))
    if whole:
        # A slab task reads contiguous runs of c_block * I elements; a row task
        # contiguous rows of I, whatever c_block.
        c_block = min(C, c_limit, -(-task // max(O * I, 1)) if rows else C)
        b_block = 1 if rows and C > 1 else -(-task // max(O * slab, 1))
        b_block = max(b_block, -(-B // MAX_BLOCKS))
        return rows, max(min(b_block, B), 1), O, max(c_block, 1)
    task = min(task, FUSE_MAX_ELEMENTS)
    c_block = max(1, min(C, c_limit, -(-task // max(I, 1))))
    o_chunk = max(1 if c_block < C else -(-task // max(slab, 1)), -(-ROW_MIN_LENGTH // max(I, 1)))
    o_chunk = max(o_chunk, -(-O // max(1, MAX_BLOCKS // B)))
    return rows, 1, max(min(o_chunk, O), 1), c_block


def n_param_blocks(B, O, b_block, o_chunk):
    """Number of partial sums of the parameter gradients (see ``gradient_sums``)."""
    return -(-B // b_block) * -(-O // o_chunk)


# ----------------------------------------------------------------------------
# Helpers of every regime


@jit(helper=True)
def _n_tasks(shape, tiling):
    B, O, C, _ = shape
    b_block, o_chunk, c_block = tiling
    return -(-B // b_block) * -(-O // o_chunk) * -(-C // c_block)


@jit(inline=True)
def _task_bounds(t, shape, tiling):
    """``(b0, b1, o0, o1, c0, c1, q)``: the ranges of b, o and c of task ``t``.

    ``tiling`` is ``(b_block, o_chunk, c_block)``.  ``q`` numbers the task's
    (b-block, o-chunk) pair, which indexes the partial sums of the
    parameter gradients; ``o0 // o_chunk`` indexes the partial statistics
    of split groups.
    """
    B, O, C, _ = shape
    b_block, o_chunk, c_block = tiling
    n_o = -(-O // o_chunk)
    n_c = -(-C // c_block)
    c = t % n_c
    j = (t // n_c) % n_o
    bb = t // (n_c * n_o)
    return (
        bb * b_block,
        min(B, (bb + 1) * b_block),
        j * o_chunk,
        min(O, (j + 1) * o_chunk),
        c * c_block,
        min(C, (c + 1) * c_block),
        bb * n_o + j,
    )


@jit(helper=True, fastmath=False)
def _n_nonfinite(stat):
    """How many entries of a statistic are inf or NaN.

    float32 sums of squares overflow for values beyond about 1e17, and a
    group holding NaN or inf has no finite statistics: the engine looks at
    such groups again (``_engine.resum_overflowed``) when this is not 0.
    """
    n = 0
    for value in stat.flat:
        if not math.isfinite(value):
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
    if not from_input or count == 0:
        return 0.0, 0.0
    mean_g = sum_g / count if centered else 0.0
    shift = -rstd * rstd * rstd * sum_gx / count
    if shift != 0.0 and abs(shift) < tiny:
        shift = math.nan
    return shift, -rstd * mean_g


@jit(inline=True)
def _pivoted(group, x):
    """The per-group terms of the elementwise pass of :func:`_coefficient`.

    ``group = (mean, scale, shift, offset, dy_scale)`` describes ``out =
    (x - mean) * (scale*w + shift) + bias + offset + dy * dy_scale*w``,
    which is computed as ``(x - p) * a + t + dy * u`` in the precision of
    ``x``, where the pivot ``p`` is ``mean`` rounded to that precision:
    ``x - p`` is exact for ``x`` near the mean, so a large offset costs no
    accuracy.  Returns ``(p, scale, shift, t0, ds, dy_scale)`` (float64),
    with ``delta = mean - p`` folded into ``t0 = offset - delta*shift`` and
    ``ds = delta*scale``: kept apart from ``p``, where fast-math
    reassociation would add it back to ``p`` and lose it.
    """
    mean, scale, shift, offset, dy_scale = group
    pivot = x.dtype.type(mean)
    delta = mean - np.float64(pivot)
    return pivot, scale, shift, offset - delta * shift, delta * scale, dy_scale


@jit(inline=True)
def _coefficient(w_row, bias_row, wi, scale, shift, t0, ds, dy_scale):
    """``(a, t, u)`` of weight ``wi``: ``a = scale*w + shift``, ``t = t0 - ds*w [+ bias]``.

    ``u = dy_scale*w``; the terms are :func:`_pivoted`'s, in the precision
    the result is to have.  The forward is ``scale = rstd`` with a
    ``bias_row``, the input gradient ``dy_scale = rstd`` with ``shift`` and
    ``offset`` (:func:`_input_grad_coefficients`) and ``bias_row=None``.
    """
    w = w_row[wi]
    t = t0 - ds * w
    if bias_row is not None:
        t += bias_row[wi]
    return scale * w + shift, t, dy_scale * w


@jit(helper=True)
def _coefficients(group, w_row, bias_row, coef):
    """:func:`_coefficient` of every weight of a group into ``coef[:, wi]``: ``(p, a, t, u)``.

    ``group`` is ``(mean, scale, shift, offset, dy_scale)``; computed in
    float64 and rounded to the precision of ``coef``, that of ``x``.
    """
    pivot, scale, shift, t0, ds, dy_scale = _pivoted(group, coef)
    for wi in range(w_row.size):
        coef[0, wi] = pivot
        coef[1, wi], coef[2, wi], coef[3, wi] = _coefficient(
            w_row, bias_row, wi, scale, shift, t0, ds, dy_scale
        )


@jit(inline=True, fastmath=False)
def _rounding_counts(m, r):
    """Whether rounding the mean ``m`` to float32 counts against float32's own precision.

    The rounding is at most ``|m| * 2**-24``, which ``rstd = r`` scales: it
    matters only for an offset beyond the standard deviation.
    """
    return abs(m) * r > 1.0


# ----------------------------------------------------------------------------
# Masks: ``mask4`` is None (every element counts) or a boolean array of the
# canonical shape, with zero strides where the user's mask broadcasts.  The
# statistics and the feedback through them cover the selected elements only.


@jit(inline=True)
def _mask_run(mask4, b, o, c, start, stop):
    """The selection of ``x4[b, o, c, start:stop]``, None without a mask.

    Runs are at most ``SLAB_BLOCK`` long (see :func:`_unit_stride`).
    """
    if mask4 is None:
        return None
    return _unit_stride(mask4[b, o, c, start:stop])


_NONE_SELECTED = 0
_ALL_SELECTED = 1
_SOME_SELECTED = 2


@jit(inline=True)
def _run_kind(mask4, b, o, c, start, stop):
    """Whether ``mask4`` selects all of ``x4[b, o, c, start:stop]`` (always without a
    mask), none of it, or some: a run that repeats one value (a padding mask) is
    one of the first two, which need not read the mask element by element."""
    if mask4 is None:
        return _ALL_SELECTED
    return _uniform_run(mask4[b, o, c, start:stop])


@jit(inline=True)
def _uniform_run(run):
    """:func:`_run_kind` of a mask's ``run``."""
    if run.size and run.strides[0] == 0:
        return _ALL_SELECTED if run[0] else _NONE_SELECTED
    return _SOME_SELECTED


@jit(inline=True)
def _mask_row(mask4, b, o, c, start, stop):
    """The selection of ``x4[b, o, c, start:stop]`` of any length, as the mask strides it.

    None without a mask.
    """
    if mask4 is None:
        return None
    return mask4[b, o, c, start:stop]


@jit(inline=True)
def _unit_stride(run):
    """``run``, or where it repeats one value, that value's run in ``_UNIFORM_RUNS``."""
    if run.size > 1 and run.strides[0] == 0:
        return _UNIFORM_RUNS[1 if run[0] else 0, : run.size]
    return run


@jit(inline=True)
def _pick(selection, k, value, zero):
    """``value`` where element ``k`` is selected (always without a mask), else ``zero``.

    A select, not a product with the mask: an unselected NaN or inf must not
    reach the sums.
    """
    if selection is None:
        return value
    return value if selection[k] else zero


@jit(inline=True)
def _n_selected(selection, size):
    """How many of the ``size`` elements of a run ``selection`` selects.

    Counted in float32 over blocks of ``ROW_BLOCK`` elements, exactly: wider
    vectors than integer counts.
    """
    if selection is None:
        return size
    if size and selection.strides[0] == 0:
        return size if selection[0] else 0
    one = np.float32(1)
    zero = np.float32(0)
    n = 0
    for start in range(0, size, ROW_BLOCK):
        block = zero
        for k in range(start, min(size, start + ROW_BLOCK)):
            block += one if selection[k] else zero
        n += int(block)
    return n


@jit(inline=True)
def _deviation_sums(block, selection, pivot, count):
    """``(sum(d), sum(d**2), n)`` of the deviations ``d`` from ``pivot`` of the selected
    elements of ``block``; ``n`` counts them with ``count`` (True), else is 0."""
    zero = block.dtype.type(0)
    one = block.dtype.type(1)
    s1 = zero
    s2 = zero
    n = zero
    for i in range(block.size):
        d = _pick(selection, i, block[i] - pivot, zero)
        s1 += d
        s2 += d * d
        if count is not None:
            n += _pick(selection, i, one, zero)
    return s1, s2, n


@jit(inline=True)
def _selected_sum(selection, block):
    """``(sum, count)`` of the elements of ``block`` that ``selection`` selects, in one loop.

    The count is summed in the block's precision, as wide as its values: exact
    for the at most ``ROW_BLOCK`` elements of a block.
    """
    zero = block.dtype.type(0)
    total = zero
    if selection is None:
        for i in range(block.size):
            total += block[i]
        return total, block.size
    one = block.dtype.type(1)
    n = zero
    for i in range(block.size):
        chosen = selection[i]
        total += block[i] if chosen else zero
        n += one if chosen else zero
    return total, int(n)


@jit(inline=True)
def _group_count(count, counts, b, c):
    """The number of elements group ``(b, c)``'s statistics came from: ``count``, or
    ``counts[b, c]`` where a mask makes it differ between groups."""
    if counts is None:
        return count
    return counts[b, c]


@jit(inline=True)
def _variance_rstd(n, m2, eps):
    """``(var, rstd)`` of a group of ``n`` counted elements with sum of squares ``m2``.

    A group with no selected element gets ``var = rstd = 0``: normalized to
    its bias, never NaN.
    """
    if n == 0:
        return 0.0, 0.0
    var = m2 / n
    return var, 1.0 / math.sqrt(var + eps)


# ----------------------------------------------------------------------------
# Row regime: one (b, c) group, rows x4[b, o, c, :] for o in [o0, o1)


@jit(inline=True)
def _rows_moments(x4, b, o0, o1, c, centered, mask4):
    """``(count, mean, M2)`` of the rows ``x4[b, o0:o1, c]``, as float64.

    Only the elements that ``mask4`` selects count (every one where it is
    None).  Each block of ``ROW_BLOCK`` elements is summed in its own
    precision, which vectorizes float32 twice as wide as float64, around a
    pivot: the block's mean rounded to that precision.  The pivot removes
    any offset before squaring, and the sum of the deviations corrects for
    its rounding, so each block keeps float64 accuracy; blocks are merged
    with Chan's formula.  float32 sums of squares overflow for values beyond
    about 1e17: the engine sums such groups again in float64
    (``_engine.resum_overflowed``).
    """
    n = 0
    mean = 0.0
    m2 = 0.0
    for o in range(o0, o1):
        row = x4[b, o, c]
        for start in range(0, row.size, ROW_BLOCK):
            block = row[start : start + ROW_BLOCK]
            if mask4 is None:
                size, block_mean, block_m2 = _block_moments(block, None, centered)
            else:
                run = mask4[b, o, c, start : start + block.size]
                size, block_mean, block_m2 = _masked_block_moments(block, run, centered)
            n, mean, m2 = _chan_merge(n, mean, m2, size, block_mean, block_m2)
    return n, mean, m2


@jit(helper=True)
def _masked_block_moments(block, run, centered):
    """:func:`_block_moments` of the elements of ``block`` that a mask's ``run`` selects.

    Compiled apart, as the unmasked kernels never run it; a run that repeats
    one value takes the unmasked loops, or none.
    """
    kind = _uniform_run(run)
    if kind == _NONE_SELECTED:
        return 0, 0.0, 0.0
    if kind == _ALL_SELECTED:
        return _block_moments(block, None, centered)
    return _block_moments(block, _unit_stride(run), centered)


@jit(inline=True)
def _block_moments(block, selection, centered):
    """``(count, mean, M2)`` of one block of :func:`_rows_moments` (count 0: none)."""
    zero = block.dtype.type(0)
    pivot = zero
    size = block.size
    if centered:
        total, size = _selected_sum(selection, block)
        if size == 0:
            return 0, 0.0, 0.0
        pivot = block.dtype.type(total / size)
    if selection is None:
        s1, s2, _ = _deviation_sums(block, None, pivot, None)
    elif centered:
        s1, s2, _ = _deviation_sums(block, selection, pivot, None)
    else:  # without a mean, the selected elements are counted with the squares
        s1, s2, counted = _deviation_sums(block, selection, pivot, True)
        size = int(counted)
        if size == 0:
            return 0, 0.0, 0.0
    block_mean = 0.0
    block_m2 = np.float64(s2)
    if centered:
        shift = np.float64(s1) / size
        block_mean = np.float64(pivot) + shift
        block_m2 -= np.float64(s1) * shift
    return size, block_mean, block_m2


@jit(inline=True)
def _rows_mean(x4, b, o0, o1, c, m, mask4, count):
    """The mean of the rows ``x4[b, o0:o1, c]``, refined from an approximation ``m``.

    ``m`` rounded to the precision of ``x`` is a pivot; the deviations from
    it are exact for ``x`` near the mean, so their sum gives the mean to
    float64 accuracy, whatever rounding ``m`` went through.  The mean is
    that of the ``count`` elements ``mask4`` selects (``m`` where there are
    none).
    """
    pivot = x4.dtype.type(m)
    zero = x4.dtype.type(0)
    s_x = 0.0
    for o in range(o0, o1):
        xr = x4[b, o, c]
        for start in range(0, xr.size, ROW_BLOCK):
            xs = xr[start : start + ROW_BLOCK]
            selection = _mask_run(mask4, b, o, c, start, start + xs.size)
            block_x = zero
            for i in range(xs.size):
                block_x += _pick(selection, i, xs[i] - pivot, zero)
            s_x += block_x
    if count == 0:
        return m
    return np.float64(pivot) + s_x / count


@jit(inline=True)
def _rows_selected(mask4, b, o0, o1, c, I):
    """How many elements of the rows ``x4[b, o0:o1, c]`` ``mask4`` selects (all without it)."""
    if mask4 is None:
        return (o1 - o0) * I
    n = 0
    for o in range(o0, o1):
        n += _n_selected(mask4[b, o, c], I)
    return n


@jit(inline=True)
def _flush_partials(part, param_dy, param_dyx):
    """Add the partial parameter sums ``part`` into the float64 ones and clear them."""
    for i in range(part.shape[1]):
        param_dy[i] += part[0, i]
        param_dyx[i] += part[1, i]
        part[0, i] = 0
        part[1, i] = 0


@jit(inline=True)
def _rows_affine(x4, dy4, segments, b, o0, o1, c, group, w_row, bias_row, coef, out4, mask4):
    """The elementwise pass of one group (see :func:`_pivoted`) over ``x4[b, o0:o1, c]``.

    ``group`` is ``(mean, scale, shift, offset, dy_scale)``.  In the input
    gradient (``dy4`` given) the terms fed back through the statistics
    reach the elements ``mask4`` selects only (all without it).  With a weight
    per element the coefficients are computed in the loop, in the
    precision of ``x`` (an array of them would cost a pass; ``coef`` is not
    used); with a weight per segment ``coef`` (scratch) receives them, and
    they are constant over each segment of ``R`` elements.
    """
    if segments is None:
        pivot, scale, shift, t0, ds, dy_scale = _pivoted(group, x4)
        scale, shift, t0, ds, dy_scale = (
            x4.dtype.type(scale),
            x4.dtype.type(shift),
            x4.dtype.type(t0),
            x4.dtype.type(ds),
            x4.dtype.type(dy_scale),
        )
        for o in range(o0, o1):
            xs = x4[b, o, c]
            ys = out4[b, o, c]
            if dy4 is None:
                for k in range(xs.size):
                    a, t, _ = _coefficient(w_row, bias_row, k, scale, shift, t0, ds, dy_scale)
                    ys[k] = (xs[k] - pivot) * a + t
            else:
                dys = dy4[b, o, c]
                terms = (scale, shift, t0, ds, dy_scale)
                if mask4 is None:
                    _elements_dx(xs, dys, ys, pivot, w_row, terms, None)
                else:
                    selection = _mask_row(mask4, b, o, c, 0, xs.size)
                    if _uniform_run(selection) == _ALL_SELECTED:
                        _elements_dx(xs, dys, ys, pivot, w_row, terms, None)
                    else:
                        _elements_dx(xs, dys, ys, pivot, w_row, terms, selection)
        return
    W = w_row.size
    R = x4.shape[3] // W
    _coefficients(group, w_row, bias_row, coef)
    p = coef[0, 0]
    for o in range(o0, o1):
        for wi in range(W):
            a = coef[1, wi]
            t = coef[2, wi]
            xs = x4[b, o, c, wi * R : (wi + 1) * R]
            ys = out4[b, o, c, wi * R : (wi + 1) * R]
            if dy4 is None:
                for k in range(R):
                    ys[k] = (xs[k] - p) * a + t
            else:
                u = coef[3, wi]
                dys = dy4[b, o, c, wi * R : (wi + 1) * R]
                if mask4 is None:
                    _segment_dx(xs, dys, ys, p, a, t, u, None)
                else:
                    selection = _mask_row(mask4, b, o, c, wi * R, (wi + 1) * R)
                    if _uniform_run(selection) == _ALL_SELECTED:
                        _segment_dx(xs, dys, ys, p, a, t, u, None)
                    else:
                        _segment_dx(xs, dys, ys, p, a, t, u, selection)


@jit(inline=True)
def _elements_dx(xs, dys, ys, pivot, w_row, terms, selection):
    """The input gradient's loop of :func:`_rows_affine` over one row, a weight per
    element; ``terms`` are :func:`_pivoted`'s ``(scale, shift, t0, ds, dy_scale)``."""
    scale, shift, t0, ds, dy_scale = terms
    zero = xs.dtype.type(0)
    for k in range(xs.size):
        a, t, u = _coefficient(w_row, None, k, scale, shift, t0, ds, dy_scale)
        ys[k] = dys[k] * u + _pick(selection, k, (xs[k] - pivot) * a + t, zero)


@jit(inline=True)
def _segment_dx(xs, dys, ys, p, a, t, u, selection):
    """The input gradient's loop of :func:`_rows_affine` over one segment of a weight."""
    zero = xs.dtype.type(0)
    for k in range(xs.size):
        ys[k] = dys[k] * u + _pick(selection, k, (xs[k] - p) * a + t, zero)


@jit(inline=True)
def _rows_gradient(
    dy4,
    x4,
    segments,
    b,
    o0,
    o1,
    c,
    m,
    r,
    w_row,
    refine,
    part,
    first_row,
    group_h,
    param_dy,
    param_dyx,
    mask4,
):
    """``(m, sum(dy*w), sum(dy*w*(x - m)), sum(x - m), count)`` of one group.

    :func:`_elements_gradient`, which uses ``part`` and ``first_row``, with
    a weight per element (``segments`` None); :func:`_segments_gradient`,
    which uses ``group_h``, with a weight per segment.  The mean,
    ``sum(x - m)`` and ``count`` cover the elements ``mask4`` selects, the
    other sums all.
    """
    if segments is None:
        return _elements_gradient(
            dy4, x4, b, o0, o1, c, m, r, w_row, refine, part, first_row, param_dy, param_dyx, mask4
        )
    return _segments_gradient(
        dy4, x4, b, o0, o1, c, m, r, w_row, refine, group_h, param_dy, param_dyx, mask4
    )


@jit(inline=True)
def _elements_gradient(
    dy4, x4, b, o0, o1, c, m, r, w_row, refine, part, first_row, param_dy, param_dyx, mask4
):
    """``(m, sum(dy*w), sum(dy*w*(x - m)), sum(x - m), count)`` of one group, a weight
    per element.

    The parameter sums accumulate.  With ``refine`` the mean ``m`` is to be
    refined from ``x`` (see :func:`_rows_mean`), which takes a pass of its
    own, only where the offset exceeds the standard deviation: where the
    rows are the whole group (all of ``O``) it is refined here, the sums are
    around the refined mean and it is returned; otherwise ``sum(x - m)`` is
    returned for the caller to refine it (0 where its rounding does not
    count).

    Products are formed in the precision of ``x`` around the rounded mean
    and the group sums are summed in float64.  The parameter sums go to
    ``part``, partial sums in the precision of ``x``, which are flushed into
    ``param_dy``/``param_dyx`` every ``SLAB_PARTIAL_ROWS`` rows of the task;
    the task's rows before these are ``first_row``.
    """
    count = _rows_selected(mask4, b, o0, o1, c, x4.shape[3])
    deviations = 0.0
    if refine and _rounding_counts(m, r):
        refined = _rows_mean(x4, b, o0, o1, c, m, mask4, count)
        if o1 - o0 == x4.shape[1]:
            m = refined
        else:
            deviations = (refined - m) * count
    pivot = x4.dtype.type(m)
    delta = m - np.float64(pivot)
    delta_t = x4.dtype.type(delta)
    r_t = x4.dtype.type(r)
    part_dy = part[0]
    part_dyx = part[1]
    s_g = 0.0
    s_gd = 0.0
    for o in range(o0, o1):
        xr = x4[b, o, c]
        gr = dy4[b, o, c]
        for start in range(0, xr.size, ROW_BLOCK):
            xs = xr[start : start + ROW_BLOCK]
            gs = gr[start : start + ROW_BLOCK]
            ws = w_row[start : start + ROW_BLOCK]
            ps = part_dy[start : start + ROW_BLOCK]
            pxs = part_dyx[start : start + ROW_BLOCK]
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
        if (first_row + o - o0 + 1) % SLAB_PARTIAL_ROWS == 0:
            _flush_partials(part, param_dy, param_dyx)
    return m, s_g, s_gd - delta * s_g, deviations, count


@jit(inline=True)
def _segments_gradient(
    dy4, x4, b, o0, o1, c, m, r, w_row, refine, group_h, param_dy, param_dyx, mask4
):
    """:func:`_elements_gradient` with a weight per segment of ``R`` elements.

    The group's sums of ``dy`` per weight go to ``group_h`` (scratch) and
    the parameter sums are completed once the mean is known, so refining
    costs no pass: where the rows are the whole group and ``refine`` asks
    for it the mean is always refined.
    """
    W = w_row.size
    R = x4.shape[3] // W
    count = 0
    pivot = x4.dtype.type(m)
    zero = x4.dtype.type(0)
    delta = m - np.float64(pivot)
    s_g = 0.0
    s_gd = 0.0
    s_x = 0.0
    for wi in range(W):
        group_h[wi] = 0.0
    for o in range(o0, o1):
        xr = x4[b, o, c]
        gr = dy4[b, o, c]
        for wi in range(W):
            h = 0.0
            hd = 0.0
            for start in range(wi * R, (wi + 1) * R, ROW_BLOCK):
                xs = xr[start : min(start + ROW_BLOCK, (wi + 1) * R)]
                gs = gr[start : min(start + ROW_BLOCK, (wi + 1) * R)]
                selection = _mask_run(mask4, b, o, c, start, start + xs.size)
                count += _n_selected(selection, xs.size)
                block_h = zero
                block_hd = zero
                block_x = zero
                for k in range(xs.size):
                    xd = xs[k] - pivot
                    block_h += gs[k]
                    block_hd += gs[k] * xd
                    block_x += _pick(selection, k, xd, zero)
                h += block_h
                hd += block_hd
                s_x += block_x
            s_g += h * w_row[wi]
            s_gd += hd * w_row[wi]
            group_h[wi] += h
            param_dyx[wi] += hd * r
    if refine and o1 - o0 == x4.shape[1] and count:
        delta = s_x / count
        m = np.float64(pivot) + delta
    for wi in range(W):
        param_dy[wi] += group_h[wi]
        param_dyx[wi] -= delta * group_h[wi] * r
    return m, s_g, s_gd - delta * s_g, s_x - count * delta, count


# The tasks of the row kernels (see the kernels of the same name).


@jit(helper=True)
def _rows_moments_task(t, x4, centered, tiling, part_mean, part_m2, mask4, part_count):
    b0, b1, o0, o1, c0, c1, _ = _task_bounds(t, x4.shape, tiling)
    j = o0 // tiling[1]
    for c in range(c0, c1):
        for b in range(b0, b1):
            n, part_mean[b, j, c], part_m2[b, j, c] = _rows_moments(
                x4, b, o0, o1, c, centered, mask4
            )
            if part_count is not None:
                part_count[b, j, c] = n


@jit(helper=True)
def _rows_normalize_task(
    t, segments, x4, centered, eps, tiling, mean, var, rstd, weight2, bias2, out4, mask4, count
):
    b0, b1, o0, o1, c0, c1, _ = _task_bounds(t, x4.shape, tiling)
    coef = np.empty((4, 1 if segments is None else weight2.shape[1]), x4.dtype)
    for c in range(c0, c1):
        w_row = weight2[c]
        bias_row = bias2[c]
        for b in range(b0, b1):
            if var is not None:
                n, mean[b, c], m2 = _rows_moments(x4, b, o0, o1, c, centered, mask4)
                var[b, c], rstd[b, c] = _variance_rstd(n, m2, eps)
                if count is not None:
                    count[b, c] = n
            _rows_affine(
                x4,
                None,
                segments,
                b,
                o0,
                o1,
                c,
                (mean[b, c], rstd[b, c], 0.0, 0.0, 0.0),
                w_row,
                bias_row,
                coef,
                out4,
                None,
            )


@jit(helper=True)
def _rows_gradient_sums_task(
    t,
    segments,
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    refine,
    tiling,
    part_g,
    part_gx,
    part_d,
    param_dy,
    param_dyx,
    mask4,
    part_count,
):
    b0, b1, o0, o1, c0, c1, q = _task_bounds(t, x4.shape, tiling)
    j = o0 // tiling[1]
    W = weight2.shape[1]
    part = np.zeros((2, W), x4.dtype)
    group_h = np.empty((1, W), np.float64)[0]
    for c in range(c0, c1):
        for b in range(b0, b1):
            _, part_g[b, j, c], part_gx[b, j, c], part_d[b, j, c], n = _rows_gradient(
                dy4,
                x4,
                segments,
                b,
                o0,
                o1,
                c,
                mean[b, c],
                rstd[b, c],
                weight2[c],
                refine,
                part,
                (b - b0) * (o1 - o0),
                group_h,
                param_dy[q, c],
                param_dyx[q, c],
                mask4,
            )
            if part_count is not None:
                part_count[b, j, c] = n
        _flush_partials(part, param_dy[q, c], param_dyx[q, c])


@jit(helper=True)
def _rows_input_gradient_task(
    t,
    segments,
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_g,
    group_gx,
    param_dy,
    param_dyx,
    dx4,
    mask4,
    counts,
):
    b0, b1, o0, o1, c0, c1, q = _task_bounds(t, x4.shape, tiling)
    W = weight2.shape[1]
    tiny = FLOAT32_TINY if x4.itemsize < 8 else FLOAT64_TINY
    coef = np.empty((4, 1 if segments is None else W), x4.dtype)
    part = np.zeros((2, W), x4.dtype)
    group_h = np.empty((1, W), np.float64)[0]
    for c in range(c0, c1):
        for b in range(b0, b1):
            m = mean[b, c]
            selected = _group_count(count, counts, b, c)
            if param_dy is not None:
                m, group_g[b, c], group_gx[b, c], _, selected = _rows_gradient(
                    dy4,
                    x4,
                    segments,
                    b,
                    o0,
                    o1,
                    c,
                    m,
                    rstd[b, c],
                    weight2[c],
                    refine,
                    part,
                    (b - b0) * (o1 - o0),
                    group_h,
                    param_dy[q, c],
                    param_dyx[q, c],
                    mask4,
                )
            shift, offset = _input_grad_coefficients(
                group_g[b, c], group_gx[b, c], rstd[b, c], selected, from_input, centered, tiny
            )
            _rows_affine(
                x4,
                dy4,
                segments,
                b,
                o0,
                o1,
                c,
                (m, 0.0, shift, offset, rstd[b, c]),
                weight2[c],
                None,
                coef,
                dx4,
                mask4,
            )
        if param_dy is not None:
            _flush_partials(part, param_dy[q, c], param_dyx[q, c])


# ----------------------------------------------------------------------------
# Slab regime: every c of a block, slabs x3[b, o, k0:k1] for o in [o0, o1)


@jit(helper=True)
def _slab_scratch(x3, width):
    """Per-task scratch of the slab helpers for slabs ``width`` elements wide.

    Partial sums (rows 0-2), pivots (row 3) and selected counts (row 4) in
    the input's precision; float64 totals (rows 0-2), running statistics
    (rows 3-4) and selected counts (row 5).
    """
    return np.empty((5, width), x3.dtype), np.empty((6, width), np.float64)


@jit(helper=True)
def _slab_chosen(mask4, width):
    """Scratch for one slab's selection (see :func:`_slab_selection`), None without a mask."""
    if mask4 is None:
        return None
    return np.empty(width, np.bool_)


@jit(inline=True)
def _slab_selection(mask4, b, o, k0, k1, chosen):
    """The selection of the slab ``x3[b, o, k0:k1]``, None without a mask.

    ``mask4`` is ``(B, O, 1, C * I)`` where its channels and elements merge
    (see ``_engine.kernel_mask``): the selection is then a view of it; else
    ``(B, O, C, I)``, whose slab is gathered into ``chosen`` so that the
    slab's loops read it contiguously.
    """
    if mask4 is None:
        return None
    slab = mask4[b, o]
    if slab.shape[0] == 1:
        return _unit_stride(slab[0, k0:k1])
    I = slab.shape[1]
    channels = slab[k0 // I : k1 // I]
    if channels.strides[0] == 0 and channels.strides[1] == 0:
        return _UNIFORM_RUNS[1 if channels[0, 0] else 0, : k1 - k0]
    for c in range(channels.shape[0]):
        for i in range(I):
            chosen[c * I + i] = channels[c, i]
    return chosen[: k1 - k0]


@jit(helper=True)
def _slab_gradient_sums(
    x3, dy3, b, o0, o1, k0, k1, pivot_k, deviations, part, total, mask4, chosen
):
    """Per-element sums over the slabs ``x3[b, o0:o1, k0:k1]`` into ``total`` (float64).

    ``total[0] = sum(dy)`` and ``total[1] = sum(dy * (x - p))`` with pivots
    ``p = pivot_k``, and with ``deviations`` (None or True) ``total[2] =
    sum(x - p)`` over the elements ``mask4`` selects; with a mask
    ``total[5]`` counts them.  Summed in the input's precision over
    ``SLAB_PARTIAL_ROWS`` slabs at a time (``part``: scratch), then in
    float64.
    """
    total[:3] = 0.0
    total[5] = 0.0
    zero = x3.dtype.type(0)
    part0 = part[0]
    part1 = part[1]
    part2 = part[2]
    part_n = part[4]
    for start in range(o0, o1, SLAB_PARTIAL_ROWS):
        part[:3] = 0
        part_n[:] = 0
        for o in range(start, min(o1, start + SLAB_PARTIAL_ROWS)):
            xs = x3[b, o, k0:k1]
            gs = dy3[b, o, k0:k1]
            selection = _slab_selection(mask4, b, o, k0, k1, chosen)
            if selection is not None:
                for k in range(xs.size):
                    part_n[k] += selection[k]
            if deviations is None:
                for k in range(xs.size):
                    part0[k] += gs[k]
                    part1[k] += gs[k] * (xs[k] - pivot_k[k])
            else:
                for k in range(xs.size):
                    d = xs[k] - pivot_k[k]
                    part0[k] += gs[k]
                    part1[k] += gs[k] * d
                    part2[k] += _pick(selection, k, d, zero)
        for n in range(3):
            for k in range(k1 - k0):
                total[n, k] += part[n, k]
        if mask4 is not None:
            for k in range(k1 - k0):
                total[5, k] += part_n[k]


@jit(inline=True)
def _slab_kind(mask4, b, o, k0, k1):
    """:func:`_run_kind` of the slab ``x3[b, o, k0:k1]`` (see :func:`_slab_selection`).

    Only a mask that repeats one value over each whole slab (a padding mask
    of channels-last data) tells all or none: one load per slab.
    """
    if mask4 is None:
        return _ALL_SELECTED
    if mask4.strides[3] == 0 and (mask4.shape[2] == 1 or mask4.strides[2] == 0):
        return _ALL_SELECTED if mask4[b, o, 0, 0] else _NONE_SELECTED
    return _SOME_SELECTED


@jit(inline=True)
def _slab_selected_sums(xs, selection, part, pivot_k, squares, count):
    """Add one slab's selected elements to ``part``: their deviations from ``pivot_k``
    (``part[0]``) and, with ``squares``, squared (``part[1]``), else the elements
    themselves (``part[0]``); with ``count`` (True, not None), their number
    (``part[4]``)."""
    zero = xs.dtype.type(0)
    one = xs.dtype.type(1)
    part0 = part[0]
    part1 = part[1]
    part_n = part[4]
    for k in range(xs.size):
        if squares:
            d = _pick(selection, k, xs[k] - pivot_k[k], zero)
            part0[k] += d
            part1[k] += d * d
        else:
            part0[k] += _pick(selection, k, xs[k], zero)
        if count is not None:
            part_n[k] += _pick(selection, k, one, zero)


@jit(inline=True)
def _merge_selected_block(k, n_block, pivot_k, part0, part1, n_k, mean_k, m2_k):
    """:func:`_merge_block` of a block of ``n_block`` selected elements, 0 included.

    Without branches, so that the loop over a slab's elements vectorizes: a
    block with none selected has zero sums and a zero weight.
    """
    n_block = np.float64(n_block)
    n = n_k[k] + n_block
    s1 = np.float64(part0[k])
    shift = s1 / (n_block if n_block > 0 else 1.0)
    delta = np.float64(pivot_k[k]) + shift - mean_k[k]
    frac = n_block / (n if n > 0 else 1.0)
    mean_k[k] += delta * frac
    m2_k[k] += np.float64(part1[k]) - s1 * shift + delta * delta * n_k[k] * frac
    n_k[k] = n


@jit(inline=True)
def _merge_block(k, n_block, n, pivot_k, part0, part1, mean_k, m2_k):
    """Merge element ``k``'s block of ``n_block`` (sums around ``pivot_k``) into its
    running mean and M2, which then cover ``n`` elements (Chan's formula)."""
    s1 = np.float64(part0[k])
    shift = s1 / n_block
    delta = np.float64(pivot_k[k]) + shift - mean_k[k]
    frac = n_block / n
    mean_k[k] += delta * frac
    m2_k[k] += np.float64(part1[k]) - s1 * shift + delta * delta * (n - n_block) * frac


@jit(helper=True)
def _slab_moments(
    x3, b, o0, o1, k0, k1, C, centered, part, total, mean_c, m2_c, mask4, chosen, count_c
):
    """Mean and M2 of the ``C`` channels of ``x3[b, o0:o1, k0:k1]``, in one pass.

    Each block of ``SLAB_PARTIAL_ROWS`` slabs is summed in the input's
    precision around a pivot per element: the mean of the slabs before it,
    rounded to that precision (for the first block, its own mean, which
    costs that block a second read, from cache).  As in
    :func:`_rows_moments`, the pivot removes any offset before squaring and
    the sum of the deviations corrects for its rounding; each block's mean
    and M2 are merged into running ones per element (float64, Chan's
    formula), and the elements of each channel at the end.  Where the data
    drift along ``O`` the pivot lags, but the drift then dominates the
    variance.  With a mask only the selected elements count, and
    ``count_c`` receives their number per channel.  ``part``, ``total`` and
    ``chosen`` are scratch (see :func:`_slab_scratch`, :func:`_slab_chosen`).
    """
    width = k1 - k0
    I = width // C
    zero = x3.dtype.type(0)
    part0 = part[0]
    part1 = part[1]
    pivot_k = part[3]
    part_n = part[4]
    mean_k = total[3]
    m2_k = total[4]
    n_k = total[5]
    pivot_k[:] = 0
    mean_k[:] = 0.0
    m2_k[:] = 0.0
    n_k[:] = 0.0
    n = 0
    for start in range(o0, o1, SLAB_PARTIAL_ROWS):
        stop = min(o1, start + SLAB_PARTIAL_ROWS)
        n_block = stop - start
        part[:2] = 0
        part_n[:] = 0
        counted = False
        if centered and start == o0:
            whole_slabs = 0  # slabs the mask selects all of: counted together
            for o in range(start, stop):
                xs = x3[b, o, k0:k1]
                if mask4 is None:
                    _slab_selected_sums(xs, None, part, pivot_k, False, None)
                    continue
                kind = _slab_kind(mask4, b, o, k0, k1)
                if kind == _ALL_SELECTED:
                    _slab_selected_sums(xs, None, part, pivot_k, False, None)
                    whole_slabs += 1
                elif kind == _SOME_SELECTED:
                    selection = _slab_selection(mask4, b, o, k0, k1, chosen)
                    _slab_selected_sums(xs, selection, part, pivot_k, False, True)
            if mask4 is not None:
                for k in range(width):
                    part_n[k] += whole_slabs
            counted = True
            for k in range(width):
                size = n_block if mask4 is None else part_n[k]
                pivot_k[k] = part0[k] / size if size else zero
                part0[k] = 0
        elif centered:
            for k in range(width):
                pivot_k[k] = mean_k[k]
        whole_slabs = 0
        for o in range(start, stop):
            xs = x3[b, o, k0:k1]
            if mask4 is None:
                _slab_selected_sums(xs, None, part, pivot_k, True, None)
                continue
            kind = _slab_kind(mask4, b, o, k0, k1)
            if kind == _ALL_SELECTED:
                _slab_selected_sums(xs, None, part, pivot_k, True, None)
                whole_slabs += 1
            elif kind == _SOME_SELECTED:
                selection = _slab_selection(mask4, b, o, k0, k1, chosen)
                if counted:
                    _slab_selected_sums(xs, selection, part, pivot_k, True, None)
                else:
                    _slab_selected_sums(xs, selection, part, pivot_k, True, True)
        if mask4 is not None and not counted:
            for k in range(width):
                part_n[k] += whole_slabs
        if mask4 is None:
            n += n_block
            for k in range(width):
                _merge_block(k, n_block, n, pivot_k, part0, part1, mean_k, m2_k)
        else:
            for k in range(width):
                _merge_selected_block(k, part_n[k], pivot_k, part0, part1, n_k, mean_k, m2_k)
    for c in range(C):
        if mask4 is None:
            mean = mean_k[c * I : (c + 1) * I].sum() / I if centered else 0.0
            m2 = 0.0
            for k in range(c * I, (c + 1) * I):
                delta = mean_k[k] - mean
                m2 += m2_k[k] + n * delta * delta
        else:
            selected = n_k[c * I : (c + 1) * I].sum()
            mean = 0.0
            if centered and selected:
                mean = (n_k[c * I : (c + 1) * I] * mean_k[c * I : (c + 1) * I]).sum() / selected
            m2 = 0.0
            for k in range(c * I, (c + 1) * I):
                delta = mean_k[k] - mean
                m2 += m2_k[k] + n_k[k] * delta * delta
            count_c[c] = selected
        mean_c[c] = mean
        m2_c[c] = m2


@jit(helper=True)
def _slab_affine(x3, dy3, b, o0, o1, k0, k1, groups, weight2, bias2, coef_k, out3, mask4, chosen):
    """The elementwise pass (see :func:`_pivoted`) over the slabs ``x3[b, o0:o1, k0:k1]``.

    ``groups[:, c]`` is ``(mean, scale, shift, offset, dy_scale)`` of each
    channel of the slabs; ``coef_k`` (scratch) receives the coefficients
    ``(p, a, t, u)`` of every element, which the slabs share.  In the input
    gradient (``dy3`` given) the terms fed back through the statistics reach
    the elements ``mask4`` selects only.
    """
    C, W = weight2.shape
    I = (k1 - k0) // C
    R = I // W
    zero = x3.dtype.type(0)
    for c in range(C):
        pivot, scale, shift, t0, ds, dy_scale = _pivoted(
            (groups[0, c], groups[1, c], groups[2, c], groups[3, c], groups[4, c]), x3
        )
        bias_row = None if bias2 is None else bias2[c]
        for i in range(I):
            k = c * I + i
            coef_k[0, k] = pivot
            coef_k[1, k], coef_k[2, k], coef_k[3, k] = _coefficient(
                weight2[c], bias_row, i // R, scale, shift, t0, ds, dy_scale
            )
    p = coef_k[0]
    a = coef_k[1]
    t = coef_k[2]
    u = coef_k[3]
    for o in range(o0, o1):
        xs = x3[b, o, k0:k1]
        ys = out3[b, o, k0:k1]
        if dy3 is None:
            for k in range(xs.size):
                ys[k] = (xs[k] - p[k]) * a[k] + t[k]
        else:
            dys = dy3[b, o, k0:k1]
            selection = _slab_selection(mask4, b, o, k0, k1, chosen)
            for k in range(xs.size):
                ys[k] = dys[k] * u[k] + _pick(selection, k, (xs[k] - p[k]) * a[k] + t[k], zero)


@jit(helper=True)
def _slab_gradient(
    dy3,
    x3,
    b,
    o0,
    o1,
    k0,
    k1,
    mean_c,
    rstd_c,
    weight2,
    part,
    total,
    refine,
    used_mean_c,
    g_c,
    gx_c,
    d_c,
    param_dy,
    param_dyx,
    mask4,
    chosen,
    count_c,
):
    """:func:`_segments_gradient` for every c at once (``part``, ``total``, ``chosen``: scratch).

    ``count_c`` (or None) receives each channel's count of the elements
    ``mask4`` selects.

    With ``refine`` the mean is to be refined from ``x`` (see
    :func:`_rows_mean`), where its rounding counts (:func:`_rounding_counts`
    for some channel): the slabs' sums of ``x - mean`` over the elements
    ``mask4`` selects are then taken too.  Slabs that hold whole groups
    (all of ``O``) refine it here; otherwise ``d_c`` receives ``sum(x -
    mean)`` for the caller to refine it (0 where not summed).  The sums are
    around ``used_mean_c``, the mean used.
    """
    C, W = weight2.shape
    I = (k1 - k0) // C
    R = I // W
    count = (o1 - o0) * I
    pivot_k = part[3]
    deviations = False
    for c in range(C):
        pivot_k[c * I : (c + 1) * I] = mean_c[c]
        deviations = deviations or (refine and _rounding_counts(mean_c[c], rstd_c[c]))
    if deviations:
        _slab_gradient_sums(x3, dy3, b, o0, o1, k0, k1, pivot_k, True, part, total, mask4, chosen)
    else:
        _slab_gradient_sums(x3, dy3, b, o0, o1, k0, k1, pivot_k, None, part, total, mask4, chosen)
    for c in range(C):
        pivot = np.float64(pivot_k[c * I])
        s_x = total[2, c * I : (c + 1) * I].sum() if deviations else 0.0
        if mask4 is not None:
            count = total[5, c * I : (c + 1) * I].sum()
        if count_c is not None:
            count_c[c] = count
        whole = deviations and o1 - o0 == x3.shape[1] and count
        delta = s_x / count if whole else mean_c[c] - pivot
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


# The tasks of the slab kernels (see the kernels of the same name).


@jit(helper=True)
def _slab_moments_task(t, x4, centered, tiling, part_mean, part_m2, mask4, part_count):
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    b0, b1, o0, o1, c0, c1, _ = _task_bounds(t, x4.shape, tiling)
    j = o0 // tiling[1]
    part, total = _slab_scratch(x3, (c1 - c0) * I)
    chosen = _slab_chosen(mask4, (c1 - c0) * I)
    for b in range(b0, b1):
        _slab_moments(
            x3,
            b,
            o0,
            o1,
            c0 * I,
            c1 * I,
            c1 - c0,
            centered,
            part,
            total,
            part_mean[b, j, c0:c1],
            part_m2[b, j, c0:c1],
            mask4,
            chosen,
            None if part_count is None else part_count[b, j, c0:c1],
        )


@jit(helper=True)
def _slab_normalize_task(
    t, x4, centered, eps, tiling, mean, var, rstd, weight2, bias2, out4, mask4, count
):
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    out3 = out4.reshape((B, O, C * I))
    b0, b1, o0, o1, c0, c1, _ = _task_bounds(t, x4.shape, tiling)
    part, total = _slab_scratch(x3, (c1 - c0) * I)
    chosen = _slab_chosen(mask4, (c1 - c0) * I)
    coef_k = np.empty((4, (c1 - c0) * I), x4.dtype)
    groups = np.zeros((5, c1 - c0), np.float64)
    for b in range(b0, b1):
        if var is not None:
            _slab_moments(
                x3,
                b,
                o0,
                o1,
                c0 * I,
                c1 * I,
                c1 - c0,
                centered,
                part,
                total,
                mean[b, c0:c1],
                var[b, c0:c1],
                mask4,
                chosen,
                None if count is None else count[b, c0:c1],
            )
        for c in range(c0, c1):
            if var is not None:
                n = O * I if count is None else count[b, c]
                var[b, c], rstd[b, c] = _variance_rstd(n, var[b, c], eps)
            groups[0, c - c0] = mean[b, c]
            groups[1, c - c0] = rstd[b, c]
        _slab_affine(
            x3,
            None,
            b,
            o0,
            o1,
            c0 * I,
            c1 * I,
            groups,
            weight2[c0:c1],
            bias2[c0:c1],
            coef_k,
            out3,
            None,
            None,
        )


@jit(helper=True)
def _slab_gradient_sums_task(
    t,
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    refine,
    tiling,
    part_g,
    part_gx,
    part_d,
    param_dy,
    param_dyx,
    mask4,
    part_count,
):
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    b0, b1, o0, o1, c0, c1, q = _task_bounds(t, x4.shape, tiling)
    j = o0 // tiling[1]
    part, total = _slab_scratch(x3, (c1 - c0) * I)
    chosen = _slab_chosen(mask4, (c1 - c0) * I)
    used_mean = np.empty((1, c1 - c0), np.float64)
    for b in range(b0, b1):
        _slab_gradient(
            dy3,
            x3,
            b,
            o0,
            o1,
            c0 * I,
            c1 * I,
            mean[b, c0:c1],
            rstd[b, c0:c1],
            weight2[c0:c1],
            part,
            total,
            refine,
            used_mean[0],
            part_g[b, j, c0:c1],
            part_gx[b, j, c0:c1],
            part_d[b, j, c0:c1],
            param_dy[q, c0:c1],
            param_dyx[q, c0:c1],
            mask4,
            chosen,
            None if part_count is None else part_count[b, j, c0:c1],
        )


@jit(helper=True)
def _slab_input_gradient_task(
    t,
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_g,
    group_gx,
    param_dy,
    param_dyx,
    dx4,
    mask4,
    counts,
):
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    dx3 = dx4.reshape((B, O, C * I))
    b0, b1, o0, o1, c0, c1, q = _task_bounds(t, x4.shape, tiling)
    tiny = FLOAT32_TINY if x4.itemsize < 8 else FLOAT64_TINY
    part, total = _slab_scratch(x3, (c1 - c0) * I)
    chosen = _slab_chosen(mask4, (c1 - c0) * I)
    coef_k = np.empty((4, (c1 - c0) * I), x4.dtype)
    groups = np.zeros((5, c1 - c0), np.float64)
    # Sums of x - mean, which whole groups need not return, and counts of selected elements.
    deviation_sums = np.empty((1, c1 - c0), np.float64)
    selected = np.empty((1, c1 - c0), np.float64)
    for b in range(b0, b1):
        if param_dy is not None:
            _slab_gradient(
                dy3,
                x3,
                b,
                o0,
                o1,
                c0 * I,
                c1 * I,
                mean[b, c0:c1],
                rstd[b, c0:c1],
                weight2[c0:c1],
                part,
                total,
                refine,
                groups[0],
                group_g[b, c0:c1],
                group_gx[b, c0:c1],
                deviation_sums[0],
                param_dy[q, c0:c1],
                param_dyx[q, c0:c1],
                mask4,
                chosen,
                selected[0],
            )
        for c in range(c0, c1):
            if param_dy is None:
                groups[0, c - c0] = mean[b, c]
            groups[2, c - c0], groups[3, c - c0] = _input_grad_coefficients(
                group_g[b, c],
                group_gx[b, c],
                rstd[b, c],
                _group_count(count, counts, b, c) if param_dy is None else selected[0, c - c0],
                from_input,
                centered,
                tiny,
            )
            groups[4, c - c0] = rstd[b, c]
        _slab_affine(
            x3,
            dy3,
            b,
            o0,
            o1,
            c0 * I,
            c1 * I,
            groups,
            weight2[c0:c1],
            None,
            coef_k,
            dx3,
            mask4,
            chosen,
        )


# ----------------------------------------------------------------------------
# Kernels: a parallel loop over the tasks of one regime.  The task index is
# passed as int64, the type of the serial variant's loop index: a prange
# index is unsigned, which would compile each task a second time.


@jit(parallel=True)
def rows_moments(x4, centered, tiling, part_mean, part_m2, mask4, part_count):
    """Mean and M2 of each o-chunk ``j`` of every ``(b, c)`` group into ``part_*[b, j, c]``.

    ``centered=False`` gives a zero mean and the sum of squares (RMS norm).
    With a mask ``mask4`` (None: every element) only the elements it selects
    count, and ``part_count`` receives their number.  Returns the number of
    M2 that are not finite (see :func:`_n_nonfinite`).
    """
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_moments_task(np.int64(t), x4, centered, tiling, part_mean, part_m2, mask4, part_count)
    return _n_nonfinite(part_m2)


@jit(parallel=True)
def slab_moments(x4, centered, tiling, part_mean, part_m2, mask4, part_count):
    """:func:`rows_moments` in the slab regime."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _slab_moments_task(np.int64(t), x4, centered, tiling, part_mean, part_m2, mask4, part_count)
    return _n_nonfinite(part_m2)


@jit(parallel=True)
def count_selected(mask4, counts):
    """``counts[b, c]``: how many elements of group ``(b, c)`` the mask ``mask4`` selects.

    Each task counts a share of ``O`` in memory order into counts per
    channel, merged at the end: a task per group would read a channels-last
    mask one byte per cache line.
    """
    B, O, C, I = mask4.shape
    chunks = max(1, min(O, MAX_BLOCKS))
    per_chunk = -(-O // chunks)
    partial = np.zeros((B, chunks, C), np.int64)
    for t in prange(B * chunks):
        b = t // chunks
        j = t - b * chunks
        for o in range(j * per_chunk, min(O, (j + 1) * per_chunk)):
            slab = mask4[b, o]
            if I == 1:
                for c in range(C):
                    partial[b, j, c] += 1 if slab[c, 0] else 0
            else:
                for c in range(C):
                    partial[b, j, c] += _n_selected(slab[c], I)
    for b in range(B):
        for c in range(C):
            counts[b, c] = partial[b, :, c].sum()


@jit
def merge_moments(part_mean, part_m2, part_count, O, o_chunk, I, mean, m2, count):
    """Merge the o-chunks' ``(mean, M2)`` of every group (Chan's formula) into ``(B, C)`` arrays.

    ``part_count`` holds the chunks' counts of a masked input (None: whole
    chunks), and ``count`` then receives the groups'.  Returns the number of
    M2 that are not finite.
    """
    B, n_o, C = part_mean.shape
    for b in range(B):
        for c in range(C):
            n = 0.0
            group_mean = 0.0
            group_m2 = 0.0
            for j in range(n_o):
                n_j = (min(O, (j + 1) * o_chunk) - j * o_chunk) * I
                if part_count is not None:
                    n_j = part_count[b, j, c]
                n, group_mean, group_m2 = _chan_merge(
                    n, group_mean, group_m2, n_j, part_mean[b, j, c], part_m2[b, j, c]
                )
            mean[b, c] = group_mean
            m2[b, c] = group_m2
            if count is not None:
                count[b, c] = n
    return _n_nonfinite(m2)


def fold_into_running(running_mean, running_var, mean, var, momentum, unbias, c):
    """``running = (1 - momentum)*running + momentum*stat`` for channel ``c``.

    ``mean`` and ``var`` are ``(B, C)``, averaged over ``B`` (instance norm's
    samples); the variance is multiplied by ``unbias``.  Plain Python,
    compiled for the CPU here and for the GPU in ``_cuda_elementwise``.
    """
    B = mean.shape[0]
    m = 0.0
    v = 0.0
    for b in range(B):
        m += mean[b, c]
        v += var[b, c]
    running_mean[c] = (1 - momentum) * running_mean[c] + momentum * (m / B)
    running_var[c] = (1 - momentum) * running_var[c] + momentum * (v / B * unbias)


_fold_into_running = jit(inline=True)(fold_into_running)


@jit
def update_running(running_mean, running_var, mean, var, momentum, unbias):
    """:func:`fold_into_running` for every channel, in one compiled call: the NumPy
    expressions cost a small batch norm more than its kernel."""
    for c in range(mean.shape[1]):
        _fold_into_running(running_mean, running_var, mean, var, momentum, unbias, c)


@jit(parallel=True)
def rows_normalize(x4, centered, eps, tiling, mean, var, rstd, weight2, bias2, out4, mask4, count):
    """``out = (x - mean) * rstd * w + bias``, a weight per segment of the rows.

    With an array ``var`` (tasks must own whole groups: ``o_chunk == O``)
    each task first computes its groups' statistics into ``mean``, ``var``
    and ``rstd``, and normalizes them while they are still in cache; with
    ``var=None``, ``mean`` and ``rstd`` are given, and the statistics'
    code is not compiled.  With a mask ``mask4`` (None: every element) the
    statistics cover the elements it selects, and ``count`` receives their
    number per group.  Returns the number of groups whose computed variance
    is not finite.
    """
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_normalize_task(
            np.int64(t),
            True,
            x4,
            centered,
            eps,
            tiling,
            mean,
            var,
            rstd,
            weight2,
            bias2,
            out4,
            mask4,
            count,
        )
    return 0 if var is None else _n_nonfinite(var)


@jit(parallel=True)
def elements_normalize(
    x4, centered, eps, tiling, mean, var, rstd, weight2, bias2, out4, mask4, count
):
    """:func:`rows_normalize` with a weight per element of the rows."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_normalize_task(
            np.int64(t),
            None,
            x4,
            centered,
            eps,
            tiling,
            mean,
            var,
            rstd,
            weight2,
            bias2,
            out4,
            mask4,
            count,
        )
    return 0 if var is None else _n_nonfinite(var)


@jit(parallel=True)
def slab_normalize(x4, centered, eps, tiling, mean, var, rstd, weight2, bias2, out4, mask4, count):
    """:func:`rows_normalize` in the slab regime."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _slab_normalize_task(
            np.int64(t),
            x4,
            centered,
            eps,
            tiling,
            mean,
            var,
            rstd,
            weight2,
            bias2,
            out4,
            mask4,
            count,
        )
    return 0 if var is None else _n_nonfinite(var)


@jit(parallel=True)
def rows_gradient_sums(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    refine,
    tiling,
    part_g,
    part_gx,
    part_d,
    param_dy,
    param_dyx,
    mask4,
    part_count,
):
    """The reductions of the backward pass, per o-chunk of each group; a weight per segment.

    For o-chunk ``j`` of group ``(b, c)``: ``part_g[b, j, c] = sum(dy*w)``,
    ``part_gx = sum(dy*w*(x - mean))``, and ``part_d = sum(x - mean)`` for
    the caller to refine the mean where ``refine`` asks it to (see
    :func:`_elements_gradient`).  Per task block ``q`` and parameter
    ``(c, wi)``: ``param_dy[q] += sum(dy)``, ``param_dyx[q] +=
    sum(dy*(x - mean)*rstd)``; the caller sums over ``q`` in a fixed order.
    ``part_d`` covers the elements ``mask4`` selects (None: every element),
    and ``part_count`` (None without a mask) receives their number.
    """
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_gradient_sums_task(
            np.int64(t),
            True,
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            refine,
            tiling,
            part_g,
            part_gx,
            part_d,
            param_dy,
            param_dyx,
            mask4,
            part_count,
        )


@jit(parallel=True)
def elements_gradient_sums(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    refine,
    tiling,
    part_g,
    part_gx,
    part_d,
    param_dy,
    param_dyx,
    mask4,
    part_count,
):
    """:func:`rows_gradient_sums` with a weight per element of the rows."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_gradient_sums_task(
            np.int64(t),
            None,
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            refine,
            tiling,
            part_g,
            part_gx,
            part_d,
            param_dy,
            param_dyx,
            mask4,
            part_count,
        )


@jit(parallel=True)
def slab_gradient_sums(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    refine,
    tiling,
    part_g,
    part_gx,
    part_d,
    param_dy,
    param_dyx,
    mask4,
    part_count,
):
    """:func:`rows_gradient_sums` in the slab regime (see :func:`_slab_gradient`)."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _slab_gradient_sums_task(
            np.int64(t),
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            refine,
            tiling,
            part_g,
            part_gx,
            part_d,
            param_dy,
            param_dyx,
            mask4,
            part_count,
        )


@jit(parallel=True)
def rows_input_gradient(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_g,
    group_gx,
    param_dy,
    param_dyx,
    dx4,
    mask4,
    counts,
):
    """``dx``, and with arrays ``param_dy``/``param_dyx`` the reductions of
    :func:`rows_gradient_sums` too; a weight per segment of the rows.

    With the parameter sums (tasks must own whole groups) each task reduces
    its groups and writes their ``dx`` while they are still in cache, and
    with ``refine`` the mean is taken as an approximation and refined from
    ``x`` (see :func:`_elements_gradient`; ``_engine.refines_mean`` says
    when).  With ``param_dy=param_dyx=None``, ``group_g`` and ``group_gx``
    are given, and the reductions' code is not compiled.  ``count`` is the
    number of elements each group's statistics came from: ``O * I``, or
    more when the groups span other processes and the given sums are
    theirs too.  With a mask ``mask4`` (None: every element) the statistics
    came from the elements it selects, ``counts[b, c]`` of them, and the
    terms fed back through the statistics reach those elements only.
    """
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_input_gradient_task(
            np.int64(t),
            True,
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            from_input,
            centered,
            refine,
            count,
            tiling,
            group_g,
            group_gx,
            param_dy,
            param_dyx,
            dx4,
            mask4,
            counts,
        )


@jit(parallel=True)
def elements_input_gradient(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_g,
    group_gx,
    param_dy,
    param_dyx,
    dx4,
    mask4,
    counts,
):
    """:func:`rows_input_gradient` with a weight per element of the rows."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _rows_input_gradient_task(
            np.int64(t),
            None,
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            from_input,
            centered,
            refine,
            count,
            tiling,
            group_g,
            group_gx,
            param_dy,
            param_dyx,
            dx4,
            mask4,
            counts,
        )


@jit(parallel=True)
def slab_input_gradient(
    dy4,
    x4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_g,
    group_gx,
    param_dy,
    param_dyx,
    dx4,
    mask4,
    counts,
):
    """:func:`rows_input_gradient` in the slab regime (see :func:`_slab_gradient`)."""
    for t in prange(_n_tasks(x4.shape, tiling)):
        _slab_input_gradient_task(
            np.int64(t),
            dy4,
            x4,
            mean,
            rstd,
            weight2,
            from_input,
            centered,
            refine,
            count,
            tiling,
            group_g,
            group_gx,
            param_dy,
            param_dyx,
            dx4,
            mask4,
            counts,
        )


Regime = collections.namedtuple("Regime", "moments normalize gradient_sums input_gradient")
ROWS = Regime(rows_moments, rows_normalize, rows_gradient_sums, rows_input_gradient)
ELEMENTS = Regime(rows_moments, elements_normalize, elements_gradient_sums, elements_input_gradient)
SLAB = Regime(slab_moments, slab_normalize, slab_gradient_sums, slab_input_gradient)


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


SERIAL = {kernel: _serial_variant(kernel) for kernel in {*ROWS, *ELEMENTS, *SLAB}}
