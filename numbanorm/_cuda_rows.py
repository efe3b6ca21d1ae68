"""The rows regime of the GPU kernels: one thread block per ``(b, c)`` group.

Per-thread sums of deviations from the group's first element over strided,
coalesced loads of the group's rows, a block merge of the sums, then the
elementwise pass over the same rows (a second read, mostly from L2).  For
groups that have long contiguous rows and are many, or small; the launch
is ``[B * C, threads]`` with a power-of-two number of threads of at most
``BLOCK_THREADS``.

Each factory builds one kernel (or device function) for an accumulation
dtype, float32 or float64, and caches it.
"""

import functools

import numpy as np
from numba import cuda

from ._cuda_shared import (
    BLOCK_THREADS,
    block_reduce,
    deviation_sums,
    input_gradient_coefficients,
    mean_parts,
    moments_of_sums,
    pivot_of,
    reciprocal_sqrt,
)


@cuda.jit(device=True)
def row_split(W, R):
    """``(w_first, w_step, r_first, r_step)``: a block's threads over a row seen as ``(W, R)``.

    Element ``i = w*R + r`` uses parameter ``w``.  The threads stride over
    ``w`` when ``R`` is 1 (layer norm) and over ``r`` otherwise, so that loads
    stay coalesced and no element needs a division to find its parameter.
    """
    if R == 1:
        return cuda.threadIdx.x, cuda.blockDim.x, 0, 1
    return 0, 1, cuda.threadIdx.x, cuda.blockDim.x


@functools.cache
def affine_row(acc_dtype):
    """The device function writing one group's elementwise pass, in ``acc_dtype``.

    ``affine(x4, dy4, use_dy, b, c, mean, a, s, p, q, z, weight2, bias2,
    out4)`` writes ``out = (x - mean)*(a*w + s) + q*bias + z`` (plus
    ``dy*p*w`` with ``use_dy``) over group ``(b, c)``: the forward's ``y``
    and the backward's ``dx`` are both of this form.  ``mean`` is float64.
    """
    acc = np.dtype(acc_dtype).type
    parts = mean_parts(acc_dtype)

    @cuda.jit(device=True)
    def affine(x4, dy4, use_dy, b, c, mean, a, s, p, q, z, weight2, bias2, out4):
        O = x4.shape[1]
        W = weight2.shape[1]
        R = x4.shape[3] // W
        mean_high, mean_low = parts(mean)
        w_first, w_step, r_first, r_step = row_split(W, R)
        for o in range(O):
            for k in range(w_first, W, w_step):
                w = acc(weight2[c, k])
                scale = a * w + s
                shift = q * acc(bias2[c, k]) + z
                dy_scale = p * w
                for r in range(r_first, R, r_step):
                    i = k * R + r
                    value = ((acc(x4[b, o, c, i]) - mean_high) - mean_low) * scale + shift
                    if use_dy:
                        value += acc(dy4[b, o, c, i]) * dy_scale
                    out4[b, o, c, i] = value

    return affine


@functools.cache
def rows_forward(acc_dtype):
    """The forward kernel of the rows regime, per-thread arithmetic in ``acc_dtype``.

    ``rows_forward(x4, centered, input_stats, write_output, eps, mean, var,
    rstd, weight2, bias2, out4)``: with ``input_stats``, the group's
    statistics from ``x4`` into the ``(B, C)`` arrays ``mean``, ``var`` and
    ``rstd`` (otherwise ``mean`` and ``rstd`` are given and ``var`` is not
    touched); with ``write_output``, ``out4 = x̂*w + bias``.
    """
    acc = np.dtype(acc_dtype).type
    affine = affine_row(acc_dtype)

    @cuda.jit
    def kernel(x4, centered, input_stats, write_output, eps, mean, var, rstd, weight2, bias2, out4):
        O = x4.shape[1]
        C = x4.shape[2]
        I = x4.shape[3]
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        if input_stats:
            shared = cuda.shared.array((2, BLOCK_THREADS), np.float64)
            pivot = pivot_of(x4[b, 0, c, 0], centered)
            s1 = 0.0
            s2 = 0.0
            for o in range(O):
                for i in range(cuda.threadIdx.x, I, cuda.blockDim.x):
                    s1, s2 = deviation_sums(s1, s2, x4[b, o, c, i], pivot)
            s1, s2 = block_reduce(s1, s2, shared)
            group_mean, m2 = moments_of_sums(O * I, pivot, s1, s2, centered)
            variance = m2 / (O * I)
            group_rstd = reciprocal_sqrt(variance + eps)
            if cuda.threadIdx.x == 0:
                mean[b, c] = group_mean
                var[b, c] = variance
                rstd[b, c] = group_rstd
        else:
            group_mean = np.float64(mean[b, c])
            group_rstd = np.float64(rstd[b, c])
        if write_output:
            zero = acc(0)
            affine(
                x4,
                x4,
                False,
                b,
                c,
                group_mean,
                acc(group_rstd),
                zero,
                zero,
                acc(1),
                zero,
                weight2,
                bias2,
                out4,
            )

    return kernel


@functools.cache
def rows_backward(acc_dtype):
    """The backward's ``dx`` kernel of the rows regime, per-thread arithmetic in ``acc_dtype``.

    ``rows_backward(dy4, x4, mean, rstd, weight2, input_stats, centered,
    dx4)``: with ``input_stats``, the group's ``sum(dy*w)`` and
    ``sum(dy*w*(x - mean))``; then ``dx`` with the coefficients of
    :func:`~numbanorm._cuda_shared.input_gradient_coefficients`.
    """
    acc = np.dtype(acc_dtype).type
    tiny = float(np.finfo(acc_dtype).tiny)
    affine = affine_row(acc_dtype)
    parts = mean_parts(acc_dtype)

    @cuda.jit
    def kernel(dy4, x4, mean, rstd, weight2, input_stats, centered, dx4):
        O = x4.shape[1]
        C = x4.shape[2]
        I = x4.shape[3]
        W = weight2.shape[1]
        R = I // W
        b = cuda.blockIdx.x // C
        c = cuda.blockIdx.x % C
        m = np.float64(mean[b, c])
        mean_high, mean_low = parts(m)
        r = rstd[b, c]
        total_g = 0.0
        total_gx = 0.0
        if input_stats:
            shared = cuda.shared.array((2, BLOCK_THREADS), np.float64)
            sum_g = 0.0
            sum_gx = 0.0
            w_first, w_step, r_first, r_step = row_split(W, R)
            for o in range(O):
                for k in range(w_first, W, w_step):
                    w = acc(weight2[c, k])
                    for i in range(k * R + r_first, (k + 1) * R, r_step):
                        g = acc(dy4[b, o, c, i]) * w
                        sum_g += np.float64(g)
                        sum_gx += np.float64(g * ((acc(x4[b, o, c, i]) - mean_high) - mean_low))
            total_g, total_gx = block_reduce(sum_g, sum_gx, shared)
        shift, offset = input_gradient_coefficients(
            total_g, total_gx, r, O * I, input_stats, centered, tiny
        )
        zero = acc(0)
        affine(
            x4,
            dy4,
            True,
            b,
            c,
            m,
            zero,
            acc(shift),
            acc(r),
            zero,
            acc(offset),
            weight2,
            weight2,
            dx4,
        )

    return kernel
