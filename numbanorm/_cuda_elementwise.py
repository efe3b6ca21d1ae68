"""GPU kernels outside the two regimes: layout copies, fills, running statistics and
the last step of masked moments.

They are grid-stride loops over a 1-D launch, typed by their arguments
alone (no accumulation dtype).
"""

import math

import numpy as np
from numba import cuda

from ._cuda_shared import reciprocal_sqrt
from ._kernels import fold_into_running


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
def strided_fill(flat, shape, strides, value):
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
        rstd[t // C, c] = reciprocal_sqrt(np.float64(running_var[c]) + eps)


_fold_into_running = cuda.jit(device=True)(fold_into_running)


@cuda.jit(device=True)
def fold_running(update, mean, var):
    """One block: every channel's :func:`numbanorm._kernels.fold_into_running`.

    ``update = (fold, running_mean, running_var, momentum, unbias)``; the
    grid's last block of a statistics kernel calls it once every group's
    ``(B, C)`` ``mean`` and ``var`` are written, and :func:`update_running`
    on its own.
    """
    _, running_mean, running_var, momentum, unbias = update
    threads = cuda.blockDim.x * cuda.blockDim.y
    c = cuda.threadIdx.x + cuda.threadIdx.y * cuda.blockDim.x
    while c < mean.shape[1]:
        _fold_into_running(running_mean, running_var, mean, var, momentum, unbias, c)
        c += threads


@cuda.jit
def update_running(update, mean, var):
    """:func:`fold_running` as a kernel of one block."""
    fold_running(update, mean, var)


@cuda.jit
def selected_moments(mean, var, count, ddof):
    """``numbanorm.moments``' statistics from those of selected elements, in place.

    ``(B, C)`` ``mean`` and ``var`` (divisor ``count``) of groups of
    ``count`` selected elements become the mean and the variance of divisor
    ``count - ddof`` (inf or NaN where that is not positive), NaN for a
    group without any.
    """
    B, C = mean.shape
    for t in range(cuda.grid(1), B * C, cuda.gridsize(1)):
        b = t // C
        c = t - b * C
        n = np.float64(count[b, c])
        if n == 0.0:
            mean[b, c] = math.nan
            var[b, c] = math.nan
        else:
            var[b, c] = np.float64(var[b, c]) * n / max(n - ddof, 0.0)
