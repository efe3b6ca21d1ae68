"""``numbanorm.moments``: mean and variance in one stable pass."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import axes_tuple, real_number
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
    r"""Mean and variance, as ``np.mean`` and ``np.var``, in one stable pass.

    Statistics are accumulated per block (count, mean, M2) in float64 and
    the blocks are merged with Chan's formula, so that data with a large
    offset keeps its variance (unlike ``E[x**2] - E[x]**2``), and ``x`` is
    read from memory once.

    Parameters
    ----------
    x : array_like
        Real input: float16, float32, float64, integer or boolean (integer
        and boolean input is computed in float64).  Any array NumPy can
        view is accepted, except masked arrays.
    axis : None or int or tuple of ints, optional
        Axes to reduce; None (the default) reduces all of them, ``()``
        none.
    ddof : int, optional
        Delta degrees of freedom of the variance, whose divisor is
        ``n - ddof`` for ``n`` elements.
    keepdims : bool, optional
        Keep the reduced axes, with size one.
    where : array_like of bool, optional
        The elements to include, broadcastable to ``x`` (as in
        ``np.mean``); every element by default.

    Returns
    -------
    mean : ndarray or scalar
        The mean, of the shape of ``x`` without the reduced axes (with size
        one with ``keepdims``), in NumPy's result dtype: float16 for float16
        input, float32 for float32, float64 otherwise.  A full reduction
        without ``keepdims`` gives a NumPy scalar.
    var : ndarray or scalar
        The variance, of the mean's shape and dtype.

    Raises
    ------
    TypeError
        If ``x`` is not of a real dtype or is a masked array, ``where`` is
        not boolean, ``axis`` is not None, an integer or a tuple of
        integers, or ``ddof`` is not a real number.
    ValueError
        If ``axis`` is out of range or repeats an axis, or ``where`` does
        not broadcast to ``x``.

    Warns
    -----
    RuntimeWarning
        As NumPy: a slice with no element (selected by ``where``) gives a
        NaN mean and variance and warns "Mean of empty slice"; one with
        ``n <= ddof`` elements gives an infinite or NaN variance and warns
        "Degrees of freedom <= 0 for slice".

    See Also
    --------
    numpy.mean, numpy.var : The same statistics, in two passes.
    Moments : An accumulator of the same statistics over batches.

    Notes
    -----
    Two blocks :math:`a` and :math:`b` of counts :math:`n_a, n_b`, means
    :math:`\bar{x}_a, \bar{x}_b` and sums of squared deviations
    :math:`M_a, M_b` merge into

    .. math::

        n = n_a + n_b, \qquad
        \bar{x} = \bar{x}_a + \delta \, \frac{n_b}{n}, \qquad
        M = M_a + M_b + \delta^2 \, \frac{n_a n_b}{n}, \qquad
        \delta = \bar{x}_b - \bar{x}_a,

    and the variance is :math:`M / (n - \mathrm{ddof})`.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> mean, var = numbanorm.moments(x, axis=1)
    >>> print(mean, np.round(var, 4))
    [1. 4.] [0.6667 0.6667]
    >>> mean, var = numbanorm.moments(x, axis=1, where=x != 5)  # without x[1, 2]
    >>> print(mean, np.round(var, 4))
    [1.  3.5] [0.6667 0.25  ]

    Far from zero, where ``E[x**2] - E[x]**2`` would cancel:

    >>> mean, var = numbanorm.moments(1e9 + np.arange(4.0))
    >>> print(var)
    1.25
    """
    backend = backend_for(x, where)
    xc, result_dtype, _ = backend.input(x)
    axes = tuple(range(xc.ndim)) if axis is None else axes_tuple(axis, xc.ndim, allow_empty=True)
    real_number(ddof, "ddof")  # checked, and used as given: an int stays an int
    where = checked_where(where, xc.shape, backend)
    mean, var, count = backend.moments(xc, axes, ddof, keepdims, result_dtype, where)
    count = np.asarray(count)
    if (count == 0).any():
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=2)
    if ((count - ddof <= 0) & (count > 0)).any():
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    return mean, var
