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

    The state is Welford's ``(count, mean, M2)`` in float64, with ``M2`` the
    sum of squared deviations from the mean.  Two states combine with Chan's
    formula, so the result does not depend on how the data was split (up to
    rounding) and stays accurate for data with a large offset.

    Examples
    --------
    >>> acc = Moments()
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
        """A ``Moments`` holding a state computed elsewhere (another process, a chunk).

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
        """Number of elements reduced into each entry of :attr:`mean` so far."""
        return self._count

    @property
    def mean(self) -> Any:
        """Mean of everything seen so far, float64 (a scalar for full reductions)."""
        self._require_data()
        return self._mean[()] if self._mean.ndim == 0 else self._mean.copy()

    @property
    def state(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(count, mean, M2)``, float64 arrays: what :meth:`from_state` takes."""
        self._require_data()
        return self._count, self._mean.copy(), self._m2.copy()

    def var(self, ddof: int = 0) -> np.ndarray:
        """Variance with divisor ``count - ddof``, float64, as ``np.var``."""
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
            ``self``.
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
        """Add everything ``other`` has seen (``other`` is left unchanged).

        Returns
        -------
        Moments
            ``self``.
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
    M2)`` with Chan's formula in float64, so the result is exact up to
    rounding for any number and size of batches.  The layer's forward is not
    run and its mode is unchanged.

    For :class:`BatchNorm`, ``running_mean`` and ``running_var`` become the
    mean and unbiased variance of each channel over the whole data set.  For
    :class:`InstanceNorm`, whose running statistics average per-instance
    statistics, they become the mean over all instances of each instance's
    mean and unbiased variance.  ``num_batches_tracked`` becomes the number
    of batches.  In a network with several such layers, recompute them from
    the input side on, with the network in evaluation mode in ``forward``.

    A batch given as a ``(x, where)`` tuple counts only the elements of
    ``x`` that the boolean ``where`` selects, as the layer's forward with
    ``where`` does: batch norm takes the mean and unbiased variance of the
    selected elements of each channel, instance norm averages over the
    instances with at least 2 selected elements.

    Parameters
    ----------
    layer : BatchNorm or InstanceNorm
        A layer with ``track_running_stats=True``; its running statistics are
        overwritten in place.
    batches : iterable
        Batches of the layer's input, or of ``forward``'s input; iterated
        once, so a generator works.  Each is ``x`` or a tuple ``(x,
        where)``, ``where`` broadcastable to the layer's input (a batch that
        is itself a tuple of two samples must be passed as an array).
    forward : callable, optional
        Maps a batch's ``x`` to the layer's input (for example the part of
        the network before the layer).

    Returns
    -------
    layer
        The same layer.
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
