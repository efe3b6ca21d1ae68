"""Mergeable mean/variance accumulator and exact population statistics for layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._arrays import axes_tuple, host_input
from ._backends import backend_for
from ._driver import checked_where
from ._host import HOST, welford_state


def merged_state(first: tuple[Any, Any, Any], second: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """Chan's combination of two Welford states ``(count, mean, M2)``, entry by entry.

    The counts are numbers or arrays of the statistics' shape (the
    per-entry counts of a ``where`` selection).  An entry counted 0 holds
    nothing: its mean and ``M2`` (NaN, as :func:`welford_state` gives them)
    are ignored, and an entry counted 0 in both states stays NaN.  Merging
    states in the same order gives the same bits.
    """
    count_a, mean_a, m2_a = first
    count_b, mean_b, m2_b = second
    total = count_a + count_b
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = mean_b - mean_a
        m2 = m2_a + m2_b + delta * delta * (count_a * count_b / total)
        mean = mean_a + delta * (count_b / total)
    if np.any(count_a == 0) or np.any(count_b == 0):
        mean = np.where(count_a == 0, mean_b, np.where(count_b == 0, mean_a, mean))
        m2 = np.where(count_a == 0, m2_b, np.where(count_b == 0, m2_a, m2))
    return total, mean, m2


class Moments:
    """Mean and variance of data seen in pieces, merged exactly.

    An accumulator starts empty; :meth:`update` adds the elements of an
    array, reduced over ``axis`` as ``np.mean`` reduces it, and
    :meth:`merge` adds everything another accumulator has seen, from
    another batch, worker or process (:meth:`state` and
    :meth:`from_state` carry it there).  The state is Welford's ``(count,
    mean, M2)`` in float64, ``M2`` being the sum of squared deviations from
    the mean.  The result does not depend on how the data was split, up to
    rounding, and stays accurate for data with a large offset, where
    ``E[x**2] - E[x]**2`` cancels.

    See Also
    --------
    numbanorm.moments : The mean and variance of one array.
    numbanorm.recompute_stats : A layer's running statistics from batches.
    numbanorm.dask.moments : The same merge in a Dask reduction.

    Notes
    -----
    Two states ``(n_a, mean_a, M2_a)`` and ``(n_b, mean_b, M2_b)`` combine
    with Chan's formula::

        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

    which has no cancellation whatever the offset of the data and the
    sizes of the parts.  The variance is ``M2 / (n - ddof)``.  Each update
    computes its batch's state with numbanorm's kernels (float64 statistics
    of blocks, merged the same way) and merges it into the accumulator.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> acc = nn.Moments()
    >>> for batch in np.split(np.arange(12.0).reshape(6, 2), 3):
    ...     acc = acc.update(batch, axis=0)
    >>> acc.count, acc.mean, acc.var(ddof=1)
    (6, array([5., 6.]), array([14., 14.]))
    """

    def __init__(self):
        self._count = 0
        self._mean = None
        self._m2 = None

    @classmethod
    def from_state(cls, count: int, mean: Any, m2: Any) -> Moments:
        """Make an accumulator holding a state computed elsewhere.

        The counterpart of :attr:`state`: a state sent by another process
        (over MPI, say) or computed from a chunk becomes an accumulator
        that merges with others.  The arrays are copied as float64.

        Parameters
        ----------
        count : int
            Number of elements reduced into each entry of ``mean``; 0 gives
            an empty ``Moments`` (``mean`` and ``m2`` are then ignored).
        mean, m2 : array_like
            Mean and sum of squared deviations from it, of one shape.

        Returns
        -------
        Moments
            A new accumulator with that state.

        Raises
        ------
        ValueError
            If ``mean`` and ``m2`` have different shapes.

        See Also
        --------
        state : The state of an accumulator.
        merge : Combine two accumulators.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> part = nn.Moments().update(np.array([1.0, 2.0, 3.0]))
        >>> part.state
        (3, array(2.), array(2.))
        >>> received = nn.Moments.from_state(*part.state)
        >>> float(received.merge(nn.Moments().update(np.array([4.0, 5.0]))).mean)
        3.0
        """
        mean = np.asarray(mean, np.float64)
        m2 = np.asarray(m2, np.float64)
        if mean.shape != m2.shape:
            raise ValueError(f"mean and m2 must have one shape, got {mean.shape} and {m2.shape}")
        moments = cls()
        if count:
            moments._merge_state(int(count), mean, m2)
        return moments

    @property
    def count(self) -> int:
        """Number of elements reduced into each entry of :attr:`mean` so far.

        An int: every update reduces the same number of elements into each
        entry.  0 for an accumulator that has seen no data.

        See Also
        --------
        mean : The mean of those elements.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> acc = nn.Moments()
        >>> acc.count
        0
        >>> acc.update(np.ones((4, 3, 5)), axis=(0, 2)).count
        20
        """
        return self._count

    @property
    def mean(self) -> Any:
        """Mean of everything seen so far, float64 (a scalar for full reductions).

        An array of the shape the reductions left (a copy), or a NumPy
        float64 scalar when every axis was reduced.  Reading it before any
        data is a ``ValueError``.

        See Also
        --------
        var : The variance of the same elements.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> acc = nn.Moments().update(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0)
        >>> acc.mean
        array([2., 4.])
        """
        self._require_data()
        return self._mean[()] if self._mean.ndim == 0 else self._mean.copy()

    @property
    def state(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The Welford state ``(count, mean, M2)``: what :meth:`from_state` takes.

        ``count`` is an int, ``mean`` and ``M2`` (the sum of squared
        deviations from the mean) are float64 arrays, copies, 0-d for a
        full reduction: what to send to another process.  Reading it before
        any data is a ``ValueError``.

        See Also
        --------
        from_state : An accumulator from a state.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> nn.Moments().update(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0).state
        (2, array([2., 4.]), array([2., 8.]))
        """
        self._require_data()
        return self._count, self._mean.copy(), self._m2.copy()

    def var(self, ddof: int = 0) -> np.ndarray:
        """Variance of everything seen so far, with divisor ``count - ddof``, as ``np.var``.

        ``ddof=1`` gives the unbiased estimate that running statistics
        keep.  The result is float64, computed from the state's ``M2``.

        Parameters
        ----------
        ddof : int, optional
            Delta degrees of freedom.

        Returns
        -------
        ndarray or numpy.float64
            ``M2 / (count - ddof)``, a scalar when every axis was reduced.

        Raises
        ------
        ValueError
            If no data has been seen, or ``count - ddof`` is not positive.

        See Also
        --------
        mean : The mean of the same elements.
        numbanorm.moments : Mean and variance of one array.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> acc = nn.Moments().update(np.array([1.0, 2.0, 4.0, 5.0]))
        >>> float(acc.var()), float(acc.var(ddof=1))
        (2.5, 3.3333333333333335)
        >>> acc.var(ddof=4)
        Traceback (most recent call last):
            ...
        ValueError: variance with ddof=4 needs more than 4 elements, got 4
        """
        self._require_data()
        dof = self._count - ddof
        if dof <= 0:
            raise ValueError(
                f"variance with ddof={ddof} needs more than {ddof} elements, got {self._count}"
            )
        var = self._m2 / dof
        return var[()] if var.ndim == 0 else var

    def update(self, x: Any, axis: int | tuple[int, ...] | None = None) -> Moments:
        """Add the elements of ``x``, reduced over ``axis`` as in ``np.mean``.

        The batch's Welford state is computed with numbanorm's kernels and
        merged into the accumulator in place.  An empty batch changes
        nothing.

        Parameters
        ----------
        x : array_like
            Real data, on the host or a device array (the reduction then runs
            on the GPU; the state stays in host memory).  Every update must
            leave the same shape once ``axis`` is removed.
        axis : None or int or tuple of ints, optional
            Axes reduced; None reduces all of them.

        Returns
        -------
        Moments
            The accumulator itself, so that calls chain.

        Raises
        ------
        ValueError
            If the shape left after the reduction differs from that of the
            earlier updates, or ``axis`` is out of range.
        TypeError
            If ``x`` is not real numbers.

        See Also
        --------
        merge : Add another accumulator's data.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> acc = nn.Moments().update(np.array([[0.0, 2.0], [2.0, 4.0]]), axis=1)
        >>> acc.update(np.array([[4.0], [6.0]]), axis=1).mean
        array([2., 4.])
        >>> acc.count
        3
        """
        backend = backend_for(x)
        x = backend.input(x)[0]
        axes = tuple(range(x.ndim)) if axis is None else axes_tuple(axis, x.ndim, allow_empty=True)
        kept_shape = tuple(n for a, n in enumerate(x.shape) if a not in axes)
        self._check_shape(kept_shape)
        if math.prod(x.shape[a] for a in axes) == 0:
            return self
        count, mean, m2 = backend.welford_state(x, axes)
        return self._merge_state(count, np.array(mean), np.array(m2))

    def merge(self, other: Moments) -> Moments:
        """Add everything ``other`` has seen, leaving ``other`` unchanged.

        The two states combine with Chan's formula (see the class's
        notes), as if this accumulator had been updated with ``other``'s
        data too (up to rounding).  Merging an empty accumulator changes nothing.

        Parameters
        ----------
        other : Moments
            Statistics of the same shape, from other data.

        Returns
        -------
        Moments
            The accumulator itself, now holding both.

        Raises
        ------
        TypeError
            If ``other`` is not a ``Moments``.
        ValueError
            If ``other``'s statistics have another shape.

        See Also
        --------
        update : Add the elements of an array.
        from_state : An accumulator from another process's state.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> x = np.arange(12.0).reshape(6, 2)
        >>> acc = nn.Moments().update(x[:2], axis=0)
        >>> acc.merge(nn.Moments().update(x[2:], axis=0)).var()
        array([11.66666667, 11.66666667])
        >>> np.allclose(acc.var(), x.var(axis=0))
        True
        """
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge another Moments, got {type(other).__name__}")
        if other._count == 0:
            return self
        self._check_shape(other._mean.shape)
        return self._merge_state(other._count, other._mean, other._m2)

    def _merge_state(self, count, mean, m2):
        """Chan's pairwise combination of ``self`` with ``(count, mean, m2)``."""
        if self._count == 0:
            self._count, self._mean, self._m2 = count, mean.copy(), m2.copy()
            return self
        self._count, self._mean, self._m2 = merged_state(
            (self._count, self._mean, self._m2), (count, mean, m2)
        )
        return self

    def _check_shape(self, kept_shape):
        if self._mean is not None and self._mean.shape != kept_shape:
            raise ValueError(
                f"statistics of shape {kept_shape} cannot be merged into statistics of "
                f"shape {self._mean.shape}"
            )

    def _require_data(self):
        if self._count == 0:
            raise ValueError("Moments has seen no data yet: call update() or merge() first")

    def __repr__(self):
        shape = None if self._mean is None else self._mean.shape
        return f"Moments(count={self._count}, shape={shape})"


def recompute_stats(
    layer: Any, batches: Iterable[Any], forward: Callable[[Any], Any] | None = None
) -> Any:
    """Set a layer's running statistics to the exact statistics of a data set.

    Running averages only estimate the statistics of the data; this computes
    them in one pass over ``batches``, merging each batch's ``(count, mean,
    M2)`` with Chan's formula in float64 (as :class:`Moments` does), so the
    result is exact up to rounding for any number and size of batches.  The
    layer's forward is not run and its mode is unchanged.

    Parameters
    ----------
    layer : BatchNorm or InstanceNorm
        A layer with ``track_running_stats=True``; its running statistics are
        overwritten in place.
    batches : iterable
        Batches of the layer's input, or of ``forward``'s input; iterated
        once, so a generator works.  Each is ``x`` or a tuple ``(x,
        where)``, ``where`` a boolean array broadcastable to the layer's
        input (a batch that is itself a tuple of two samples must be passed
        as an array).
    forward : callable, optional
        Maps a batch's ``x`` to the layer's input (for example the part of
        the network before the layer, in evaluation mode).

    Returns
    -------
    layer
        The same layer.

    Raises
    ------
    TypeError
        If ``layer`` has no running statistics (a layer other than batch or
        instance norm, or ``track_running_stats=False``).
    ValueError
        If there are no batches, a batch does not fit the layer (see
        ``layer.check_input``), or a channel has fewer than 2 elements in
        all (for instance norm: no instance with more than 1).  The running
        statistics are then unchanged.

    See Also
    --------
    Moments : The accumulator of the same merge.
    numbanorm.dask.moments : Statistics of a data set larger than memory.
    BatchNorm.reset_running_stats : Back to the initial running statistics.

    Notes
    -----
    For :class:`BatchNorm`, ``running_mean`` and ``running_var`` become the
    mean and unbiased variance of each channel over the whole data set.  For
    :class:`InstanceNorm`, whose running statistics average per-instance
    statistics, they become the mean over all instances of each instance's
    mean and unbiased variance.  ``num_batches_tracked`` becomes the number
    of batches.  In a network with several such layers, recompute them from
    the input side on, with the network before each layer as ``forward``.

    A batch given as ``(x, where)`` counts only the elements of ``x`` that
    ``where`` selects, as the layer's forward with ``where`` does: batch
    norm takes the mean and unbiased variance of the selected elements of
    each channel, instance norm averages over the instances with at least
    2 selected elements.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> rng = np.random.default_rng(0)
    >>> data = 1e4 + rng.standard_normal((100, 3, 4), dtype=np.float32)  # (N, C, L)
    >>> bn = nn.recompute_stats(nn.BatchNorm(3), (data[i : i + 32] for i in range(0, 100, 32)))
    >>> int(bn.num_batches_tracked)
    4
    >>> exact = data.astype(np.float64).var(axis=(0, 2), ddof=1)
    >>> np.allclose(bn.running_var, exact, rtol=1e-6)
    True
    """
    if not getattr(layer, "track_running_stats", False):
        raise TypeError(
            f"recompute_stats needs a BatchNorm or InstanceNorm layer with "
            f"track_running_stats=True, got {layer!r}"
        )
    per_instance = layer.norm.per_sample
    # Batch norm: the data itself.  Instance norm: each instance's (mean, var).
    state: tuple[Any, Any, Any] | None = None
    n_batches = 0
    for batch in batches:
        x, where = batch if isinstance(batch, tuple) and len(batch) == 2 else (batch, None)
        x = np.asarray(x if forward is None else forward(x))
        layer.check_input(x)
        where = checked_where(where, x.shape, HOST)
        channel_axis = layer.axis % x.ndim
        if per_instance:
            instance_stats, counted = _instance_moments(x, channel_axis, where)
            batch_state = welford_state(instance_stats, (0,), counted)
        else:
            axes = tuple(a for a in range(x.ndim) if a != channel_axis)
            batch_state = welford_state(host_input(x)[0], axes, where)
        state = batch_state if state is None else merged_state(state, batch_state)
        n_batches += 1
    if state is None:
        raise ValueError("recompute_stats got no batches")
    count, mean, m2 = state
    fewest = int(np.min(count))
    if per_instance:
        if fewest == 0:
            raise ValueError(
                "recompute_stats needs, in every channel, an instance with more than 1 "
                "selected element"
            )
        mean, var = mean.T
    else:
        if fewest <= 1:
            raise ValueError(
                f"variance with ddof=1 needs more than 1 elements, got {fewest} in a channel"
            )
        var = m2 / (count - 1)
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    layer.num_batches_tracked[...] = n_batches
    return layer


def _instance_moments(x, channel_axis, where):
    """Each instance's mean and unbiased variance, ``(N, C, 2)`` float64, and which count.

    The second result is None (every instance), or with ``where`` an
    ``(N, C, 1)`` boolean array selecting the instances with at least 2
    selected elements.
    """
    sample_axis = 1 if channel_axis == 0 else 0
    spatial = tuple(a for a in range(x.ndim) if a not in (channel_axis, sample_axis))
    if math.prod(x.shape[a] for a in spatial) <= 1:
        raise ValueError(
            f"the variance of an instance needs more than 1 spatial element, "
            f"got input of shape {x.shape}"
        )
    count, mean, m2 = welford_state(host_input(x)[0], spatial, where)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = np.stack([mean, m2 / (count - 1)], axis=-1)
    counted = None if where is None else (np.asarray(count) >= 2)[..., None]
    # The kept sample and channel axes are in the order they have in x.
    if sample_axis > channel_axis:
        stats = stats.swapaxes(0, 1)
        counted = None if counted is None else counted.swapaxes(0, 1)
    return stats, counted
