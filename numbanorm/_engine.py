"""Norm-independent forward and backward passes over a canonical view.

Every norm is: group statistics of the canonical view, an elementwise
normalize-and-affine pass, and a backward made of one reduction and one
elementwise pass.  Everything here works on ``(B, C)`` float64 statistics and
``(C, W)`` float64 affine parameters; the public functions in ``_api.py``
translate shapes, dtypes and modes.
"""

import threading
from contextlib import nullcontext

import numba
import numpy as np

from . import _kernels


class _LaunchGuard:
    """Serializes kernel launches only under Numba's 'workqueue' layer.

    The workqueue threading layer aborts the process when two Python threads
    run parallel kernels at once; the OpenMP and TBB layers do not.  The layer
    is known only after the first parallel launch, so launches are serialized
    until then.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._needed = True

    def __call__(self):
        return self._lock if self._needed else nullcontext()

    def launched(self):
        if self._needed:
            self._needed = numba.threading_layer() == "workqueue"


_guard = _LaunchGuard()


def _launch(kernel, *args):
    with _guard():
        kernel(*args)
    _guard.launched()


def group_moments(canon, centered=True):
    """``(mean, m2)`` of every group, ``(B, C)`` float64.

    ``centered=False`` gives a zero mean and the sum of squares in ``m2``.
    """
    B, O, C, I = canon.shape4
    mean = np.zeros((B, C))
    m2 = np.zeros((B, C))
    if B * C and O * I:
        _launch(_kernels.group_moments, canon.x4, centered,
                *_kernels.plan_tasks(*canon.shape4), mean, m2)
    return mean, m2


def normalize(canon, mean, rstd, weight2, bias2, out=None):
    """``(x - mean) * rstd * weight + bias``, shaped and laid out like ``x``."""
    full, out4 = canon.output(out)
    if out4.size:
        zeros = np.zeros_like(mean)
        _launch(_kernels.affine_combine, canon.x4, canon.x4, False, mean, rstd, zeros,
                zeros, zeros, weight2, bias2, *_kernels.plan_tasks(*canon.shape4), out4)
    return full


def backward(canon, dy, mean, rstd, weight2, stats_from_input, centered=True):
    """Gradients of :func:`normalize` with respect to x, weight and bias.

    Parameters
    ----------
    canon : CanonicalView
        View of ``x``.
    dy : ndarray
        Upstream gradient, shaped like ``x``.
    mean, rstd : ndarray
        ``(B, C)`` float64 statistics the forward used.
    weight2 : ndarray
        ``(C, W)`` float64 weight (ones when the norm has none).
    stats_from_input : bool
        Whether ``mean`` and ``rstd`` were computed from ``x`` (training) or
        are constants (evaluation with running statistics).
    centered : bool
        False for RMS norm, whose statistic does not subtract a mean.

    Returns
    -------
    dx : ndarray
        Shaped and laid out like ``x``.
    dweight2, dbias2 : ndarray
        ``(C, W)`` float64.
    """
    B, O, C, I = canon.shape4
    W = weight2.shape[1]
    plan = _kernels.plan_tasks(B, O, C, I)
    dy4 = canon.view(dy)
    n_blocks = -(-B // plan[1]) * -(-O // plan[2])
    group_g = np.zeros((B, C))
    group_gx = np.zeros((B, C))
    param_dy = np.zeros((n_blocks, C, W))
    param_dyx = np.zeros((n_blocks, C, W))
    dx, dx4 = canon.output()
    if dx4.size:
        _launch(_kernels.gradient_sums, dy4, canon.x4, mean, rstd, weight2, *plan,
                group_g, group_gx, param_dy, param_dyx)
        zeros = np.zeros_like(mean)
        if stats_from_input:
            n = O * I
            mean_g = group_g / n if centered else zeros
            shift = -(rstd ** 3) * group_gx / n
            offset = -rstd * mean_g
        else:
            shift = offset = zeros
        _launch(_kernels.affine_combine, canon.x4, dy4, True, mean, zeros, shift, offset,
                rstd, weight2, np.zeros_like(weight2), *plan, dx4)
    return dx, param_dyx.sum(axis=0), param_dy.sum(axis=0)
