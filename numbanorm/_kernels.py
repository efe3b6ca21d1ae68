"""Numba CPU kernels shared by every norm.

Every kernel works on a C-contiguous *canonical view* ``x4`` of shape
``(B, O, C, I)``: statistics are computed for each ``(b, c)`` group over the
``O`` and ``I`` axes.  Affine parameters ``weight2``/``bias2`` have shape
``(C, W)`` with ``I == W * R``: element ``i`` of a row uses parameter
``i // R``.  All statistics, coefficients and accumulators are float64 arrays;
``x4`` and the outputs are float32 or float64.

Work is split into tasks by :func:`plan_tasks`.  In the *row* regime (``I``
long enough to vectorize) a task is ``(b-block, o-chunk, c)`` and loops over
contiguous rows of length ``I``; in the *column* regime (short ``I``) a task
is ``(b-block, o-chunk)`` and vectorizes over the ``C * I`` contiguous
elements of each ``(b, o)`` slab.  The partition depends only on the shape,
never on the thread count, so results are bit-identical between runs.
"""

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorize the reductions; 'nnan' and 'ninf' are left
# out on purpose so that NaN and Inf propagate into their own groups.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}

ROW_MIN_LENGTH = 32
TARGET_TASKS = 64
SLAB_BLOCK = 32768
ROW_BLOCK = 4096


def plan_tasks(B, O, C, I):
    """Split a ``(B, O, C, I)`` view into parallel tasks.

    Returns ``(rows, b_block, o_chunk)``: whether the row regime is used, how
    many consecutive ``b`` each task covers and how many consecutive ``o``.
    """
    rows = I >= ROW_MIN_LENGTH or O == 1
    groups = B * C if rows else B
    if groups >= TARGET_TASKS or O == 1:
        o_chunk = O
        n_b_blocks = min(B, -(-TARGET_TASKS // (C if rows else 1)))
    else:
        n_o_chunks = min(O, -(-TARGET_TASKS // max(groups, 1)))
        o_chunk = -(-O // n_o_chunks)
        if not rows:
            slab_rows = max(1, SLAB_BLOCK // max(C * I, 1))
            o_chunk = max(min(o_chunk, slab_rows), -(-O // TARGET_TASKS))
        n_b_blocks = B
    b_block = -(-B // max(n_b_blocks, 1))
    return rows, max(b_block, 1), max(o_chunk, 1)


@njit(cache=True, inline="always")
def _task_bounds(t, B, O, C, rows, b_block, o_chunk):
    n_o = -(-O // o_chunk)
    n_c = C if rows else 1
    c = t % n_c
    j = (t // n_c) % n_o
    bb = t // (n_c * n_o)
    return (bb * b_block, min(B, (bb + 1) * b_block), j * o_chunk,
            min(O, (j + 1) * o_chunk), c, bb * n_o + j)


@njit(cache=True, inline="always")
def _n_tasks(B, O, C, rows, b_block, o_chunk):
    return -(-B // b_block) * -(-O // o_chunk) * (C if rows else 1)


@njit(cache=True, inline="always")
def _chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    delta = mean_b - mean_a
    frac = n_b / n
    return n, mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac


@njit(fastmath=FASTMATH, cache=True)
def _row_moments(row, centered):
    """(count, mean, M2) of a contiguous row, blockwise two-pass + Chan merge."""
    n_total = 0
    mean = 0.0
    m2 = 0.0
    for start in range(0, row.size, ROW_BLOCK):
        stop = min(row.size, start + ROW_BLOCK)
        s = 0.0
        q = 0.0
        if centered:
            for i in range(start, stop):
                s += row[i]
            block_mean = s / (stop - start)
            for i in range(start, stop):
                d = row[i] - block_mean
                q += d * d
        else:
            block_mean = 0.0
            for i in range(start, stop):
                q += row[i] * row[i]
        n_total, mean, m2 = _chan_merge(n_total, mean, m2, stop - start, block_mean, q)
    return n_total, mean, m2


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def group_moments(x4, centered, rows, b_block, o_chunk, mean_out, m2_out):
    """Mean and M2 of every ``(b, c)`` group of ``x4`` into ``(B, C)`` arrays.

    With ``centered=False`` the mean is taken as zero and M2 is the sum of
    squares (RMS norm).
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    n_o = -(-O // o_chunk)
    part_mean = np.empty((B, n_o, C))
    part_m2 = np.empty((B, n_o, C))
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk)):
        b0, b1, o0, o1, c_task, _ = _task_bounds(t, B, O, C, rows, b_block, o_chunk)
        j = o0 // o_chunk
        if rows:
            for b in range(b0, b1):
                n = 0
                mean = 0.0
                m2 = 0.0
                for o in range(o0, o1):
                    n_r, mean_r, m2_r = _row_moments(x4[b, o, c_task], centered)
                    n, mean, m2 = _chan_merge(n, mean, m2, n_r, mean_r, m2_r)
                part_mean[b, j, c_task] = mean
                part_m2[b, j, c_task] = m2
        else:
            acc = np.empty(C * I)
            mean_k = np.empty(C * I)
            count = (o1 - o0) * I
            for b in range(b0, b1):
                acc[:] = 0.0
                if centered:
                    for o in range(o0, o1):
                        slab = x3[b, o]
                        for k in range(C * I):
                            acc[k] += slab[k]
                    for c in range(C):
                        s = 0.0
                        for i in range(I):
                            s += acc[c * I + i]
                        part_mean[b, j, c] = s / count
                        for i in range(I):
                            mean_k[c * I + i] = s / count
                    acc[:] = 0.0
                    for o in range(o0, o1):
                        slab = x3[b, o]
                        for k in range(C * I):
                            d = slab[k] - mean_k[k]
                            acc[k] += d * d
                else:
                    for o in range(o0, o1):
                        slab = x3[b, o]
                        for k in range(C * I):
                            acc[k] += slab[k] * slab[k]
                for c in range(C):
                    if not centered:
                        part_mean[b, j, c] = 0.0
                    q = 0.0
                    for i in range(I):
                        q += acc[c * I + i]
                    part_m2[b, j, c] = q
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


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def affine_combine(x4, dy4, use_dy, mean, scale, shift, offset, dy_scale, weight2, bias2,
                   rows, b_block, o_chunk, out4):
    """Elementwise pass shared by the forward and the input gradient.

    ``out = (x - mean) * (scale * w + shift) + (bias + offset) + [dy * dy_scale * w]``
    with ``mean``, ``scale``, ``shift``, ``offset`` and ``dy_scale`` per
    ``(b, c)`` group and ``w``, ``bias`` per ``(c, i // R)``.  The forward
    passes ``scale = rstd`` and zeros; the input gradient passes ``bias = 0``
    and its own coefficients (see ``_engine.py``).  ``dy4`` is read only when
    ``use_dy``.
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    out3 = out4.reshape((B, O, C * I))
    W = weight2.shape[1]
    R = I // W
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk)):
        b0, b1, o0, o1, c_task, _ = _task_bounds(t, B, O, C, rows, b_block, o_chunk)
        if rows:
            c = c_task
            w_row = weight2[c]
            bias_row = bias2[c]
            for b in range(b0, b1):
                m = mean[b, c]
                p = scale[b, c]
                q = shift[b, c]
                f = offset[b, c]
                u = dy_scale[b, c]
                for o in range(o0, o1):
                    xr = x4[b, o, c]
                    yr = out4[b, o, c]
                    gr = dy4[b, o, c]
                    if R == 1:
                        if use_dy:
                            for i in range(I):
                                yr[i] = ((xr[i] - m) * (p * w_row[i] + q) + (bias_row[i] + f)
                                         + gr[i] * (u * w_row[i]))
                        else:
                            for i in range(I):
                                yr[i] = (xr[i] - m) * (p * w_row[i] + q) + (bias_row[i] + f)
                    else:
                        for wi in range(W):
                            a = p * w_row[wi] + q
                            sh = bias_row[wi] + f
                            v = u * w_row[wi]
                            base = wi * R
                            if use_dy:
                                for k in range(base, base + R):
                                    yr[k] = (xr[k] - m) * a + sh + gr[k] * v
                            else:
                                for k in range(base, base + R):
                                    yr[k] = (xr[k] - m) * a + sh
        else:
            CI = C * I
            m_k = np.empty(CI)
            a_k = np.empty(CI)
            t_k = np.empty(CI)
            u_k = np.empty(CI)
            for b in range(b0, b1):
                for c in range(C):
                    for i in range(I):
                        k = c * I + i
                        wi = i // R
                        m_k[k] = mean[b, c]
                        a_k[k] = scale[b, c] * weight2[c, wi] + shift[b, c]
                        t_k[k] = bias2[c, wi] + offset[b, c]
                        u_k[k] = dy_scale[b, c] * weight2[c, wi]
                for o in range(o0, o1):
                    xs = x3[b, o]
                    ys = out3[b, o]
                    gs = dy3[b, o]
                    if use_dy:
                        for k in range(CI):
                            ys[k] = (xs[k] - m_k[k]) * a_k[k] + t_k[k] + gs[k] * u_k[k]
                    else:
                        for k in range(CI):
                            ys[k] = (xs[k] - m_k[k]) * a_k[k] + t_k[k]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def gradient_sums(dy4, x4, mean, rstd, weight2, rows, b_block, o_chunk,
                  group_g, group_gx, param_dy, param_dyx):
    """Reductions of the backward pass.

    Per ``(b, c)`` group: ``group_g = sum(dy * w)`` and
    ``group_gx = sum(dy * w * (x - mean))``.  Per task block ``q`` and
    parameter ``(c, wi)``: ``param_dy[q] = sum(dy)`` and
    ``param_dyx[q] = sum(dy * (x - mean) * rstd)``; the caller sums over ``q``
    (a fixed order, so the result does not depend on threads).
    """
    B, O, C, I = x4.shape
    x3 = x4.reshape((B, O, C * I))
    dy3 = dy4.reshape((B, O, C * I))
    W = weight2.shape[1]
    R = I // W
    n_o = -(-O // o_chunk)
    part_g = np.empty((B, n_o, C))
    part_gx = np.empty((B, n_o, C))
    param_dy[:] = 0.0
    param_dyx[:] = 0.0
    for t in prange(_n_tasks(B, O, C, rows, b_block, o_chunk)):
        b0, b1, o0, o1, c_task, q_index = _task_bounds(t, B, O, C, rows, b_block, o_chunk)
        j = o0 // o_chunk
        if rows:
            c = c_task
            w_row = weight2[c]
            pd = param_dy[q_index, c]
            px = param_dyx[q_index, c]
            for b in range(b0, b1):
                m = mean[b, c]
                r = rstd[b, c]
                s_g = 0.0
                s_gx = 0.0
                for o in range(o0, o1):
                    xr = x4[b, o, c]
                    gr = dy4[b, o, c]
                    if R == 1:
                        for i in range(I):
                            d = gr[i]
                            xm = xr[i] - m
                            s_g += d * w_row[i]
                            s_gx += d * w_row[i] * xm
                            pd[i] += d
                            px[i] += d * xm * r
                    else:
                        for wi in range(W):
                            h = 0.0
                            hx = 0.0
                            for k in range(wi * R, (wi + 1) * R):
                                d = gr[k]
                                h += d
                                hx += d * (xr[k] - m)
                            s_g += h * w_row[wi]
                            s_gx += hx * w_row[wi]
                            pd[wi] += h
                            px[wi] += hx * r
                part_g[b, j, c] = s_g
                part_gx[b, j, c] = s_gx
        else:
            CI = C * I
            h = np.empty(CI)
            hx = np.empty(CI)
            m_k = np.empty(CI)
            for b in range(b0, b1):
                h[:] = 0.0
                hx[:] = 0.0
                for c in range(C):
                    for i in range(I):
                        m_k[c * I + i] = mean[b, c]
                for o in range(o0, o1):
                    xs = x3[b, o]
                    gs = dy3[b, o]
                    for k in range(CI):
                        h[k] += gs[k]
                        hx[k] += gs[k] * (xs[k] - m_k[k])
                for c in range(C):
                    r = rstd[b, c]
                    s_g = 0.0
                    s_gx = 0.0
                    for i in range(I):
                        k = c * I + i
                        wi = i // R
                        s_g += h[k] * weight2[c, wi]
                        s_gx += hx[k] * weight2[c, wi]
                        param_dy[q_index, c, wi] += h[k]
                        param_dyx[q_index, c, wi] += hx[k] * r
                    part_g[b, j, c] = s_g
                    part_gx[b, j, c] = s_gx
    for g in prange(B * C):
        b = g // C
        c = g % C
        s_g = 0.0
        s_gx = 0.0
        for j in range(n_o):
            s_g += part_g[b, j, c]
            s_gx += part_gx[b, j, c]
        group_g[b, c] = s_g
        group_gx[b, c] = s_gx
