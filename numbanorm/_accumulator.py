"""Mergeable mean/variance accumulator and exact population statistics for layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._arrays import axes_tuple, host_input
from ._backends import backend_for
from ._host import welford_state


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
        total = self._count + count
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + delta * delta * (self._count * count / total)
        self._mean = self._mean + delta * (count / total)
        self._count = total
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

    Parameters
    ----------
    layer : BatchNorm or InstanceNorm
        A layer with ``track_running_stats=True``; its running statistics are
        overwritten in place.
    batches : iterable
        Batches of the layer's input, or of ``forward``'s input; iterated
        once, so a generator works.
    forward : callable, optional
        Maps a batch to the layer's input (for example the part of the network
        before the layer).

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
    stats = Moments()
    n_batches = 0
    for batch in batches:
        x = np.asarray(batch if forward is None else forward(batch))
        layer.check_input(x)
        channel_axis = layer.axis % x.ndim
        if per_instance:
            stats.update(_instance_moments(x, channel_axis), axis=0)
        else:
            stats.update(x, axis=tuple(a for a in range(x.ndim) if a != channel_axis))
        n_batches += 1
    if n_batches == 0:
        raise ValueError("recompute_stats got no batches")
    mean, var = stats.mean.T if per_instance else (stats.mean, stats.var(ddof=1))
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    layer.num_batches_tracked[...] = n_batches
    return layer


def _instance_moments(x, channel_axis):
    """Each instance's mean and unbiased variance, ``(N, C, 2)`` float64."""
    sample_axis = 1 if channel_axis == 0 else 0
    spatial = tuple(a for a in range(x.ndim) if a not in (channel_axis, sample_axis))
    if math.prod(x.shape[a] for a in spatial) <= 1:
        raise ValueError(
            f"the variance of an instance needs more than 1 spatial element, "
            f"got input of shape {x.shape}"
        )
    count, mean, m2 = welford_state(host_input(x)[0], spatial)
    stats = np.stack([mean, m2 / (count - 1)], axis=-1)
    # The kept sample and channel axes are in the order they have in x.
    return stats if sample_axis < channel_axis else stats.swapaxes(0, 1)
