"""``numbanorm.moments``: mean and variance in one stable pass."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import axes_tuple
from ._backends import backend_for
from ._driver import checked_where


def moments(
    x: ArrayLike,
    axis: int | tuple[int, ...] | None = None,
    *,
    ddof: int = 0,
    keepdims: bool = False,
    where: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """Mean and variance, as ``np.mean`` and ``np.var``, in one stable pass.

    Statistics are accumulated per block (count, mean, M2) in float64 and the
    blocks are merged with Chan's formula, so that data with a large offset
    keeps its variance (unlike ``E[x**2] - E[x]**2``).

    Parameters
    ----------
    x : array_like
        Real input.  Integer and boolean input is computed in float64.
    axis : None or int or tuple of ints, optional
        Axes to reduce; None reduces all of them.
    ddof : int, optional
        Delta degrees of freedom of the variance (divisor ``n - ddof``).
    keepdims : bool, optional
        Keep the reduced axes with size one.
    where : array_like of bool, optional
        The elements to include, broadcastable to ``x`` (as in ``np.mean``).
        A slice with none gives NaN and NumPy's ``RuntimeWarning``.

    Returns
    -------
    mean, var : ndarray or scalar
        NumPy's result dtype: float16 for float16 input, float32 for float32,
        float64 otherwise.  A full reduction without ``keepdims`` gives NumPy
        scalars.
    """
    backend = backend_for(x, where)
    xc, result_dtype, _ = backend.input(x)
    axes = tuple(range(xc.ndim)) if axis is None else axes_tuple(axis, xc.ndim, allow_empty=True)
    where = checked_where(where, xc.shape, backend)
    mean, var, count = backend.moments(xc, axes, ddof, keepdims, result_dtype, where)
    count = np.asarray(count)
    if (count == 0).any():
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=2)
    if ((count - ddof <= 0) & (count > 0)).any():
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    return mean, var
