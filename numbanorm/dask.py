"""Mean and variance of chunked ``dask.array`` data with numbanorm's kernels.

Needs Dask: the "dask" extra brings ``dask[array]`` and ``distributed``
(``pip install ".[dask]"`` in a numbanorm clone).  Each chunk is reduced to its Welford
state ``(count, mean, M2)`` in float64 by the same kernels as
:func:`numbanorm.moments`, and the states are merged with Chan's formula in
a tree (``dask.array.reduction``), so a data set larger than memory, on any
Dask scheduler, gets the statistics :func:`numbanorm.moments` would give for
it in one piece, large offsets included.  With ``where`` each chunk counts
its selected elements per output element, and the counts merge with the
states.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

try:
    import dask.array as da
    from dask.core import flatten
except ModuleNotFoundError as error:
    if error.name is None or error.name.partition(".")[0] != "dask":
        raise
    raise ModuleNotFoundError(
        'numbanorm.dask needs Dask: install the "dask" extra (pip install ".[dask]" in a '
        'numbanorm clone: dask[array] and distributed) or pip install "dask[array]"',
        name=error.name,
    ) from error

from ._accumulator import merged_state
from ._arrays import axes_tuple, host_input
from ._driver import checked_where
from ._engine import group_counts
from ._host import HOST, welford_state
from ._layout import _kernel_input, c_strides, geometry, mask_view

__all__ = ["moments"]

# The merged statistics of each output element, before rounding.
_STATE_DTYPE = np.dtype([("count", np.int64), ("mean", np.float64), ("m2", np.float64)])


def moments(
    darr: Any,
    axis: int | tuple[int, ...] | None = None,
    *,
    ddof: int = 0,
    keepdims: bool = False,
    split_every: Any = None,
    where: Any = None,
) -> tuple[Any, Any]:
    """Lazy mean and variance of a dask array, as :func:`numbanorm.moments`.

    Each chunk is reduced to its Welford state ``(count, mean, M2)`` in
    float64 by numbanorm's kernels, and the states are merged with Chan's
    formula in Dask's tree reduction (``dask.array.reduction``), on any
    scheduler: the statistics :func:`numbanorm.moments` would give for the
    array in one piece, up to rounding, for data larger than memory and
    with large offsets.  With ``axis`` every axis but the channel axis and
    ``ddof=1``, they are a :class:`~numbanorm.BatchNorm` layer's population
    statistics, the out-of-core counterpart of
    :func:`numbanorm.recompute_stats`.

    Parameters
    ----------
    darr : dask.array.Array or array_like
        Real data; other array-likes are wrapped with ``dask.array.asarray``.
    axis : None or int or tuple of ints, optional
        Axes to reduce; None reduces all of them.
    ddof : int, optional
        Delta degrees of freedom of the variance (divisor ``n - ddof``).
    keepdims : bool, optional
        Keep the reduced axes with size one.
    split_every : int or dict, optional
        Fan-in of the tree reduction, as in dask's own reductions.
    where : dask.array.Array or array_like of bool, optional
        The elements to include, as in ``np.mean``: a boolean dask array
        that broadcasts to ``darr`` (rechunked like it where it is not), or
        an array that broadcasts to it.  A slice with none selected gives
        NaN with NumPy's ``RuntimeWarning``, and fewer than ``ddof + 1``
        a NaN or infinite variance with its warning: raised here for an
        array ``where``, and when computed (by the process that computes
        the result) for a dask one, whose counts are not known before.

    Returns
    -------
    mean : dask.array.Array
        The lazy mean, of :func:`numbanorm.moments`' dtype and shape (0-d
        for a full reduction without ``keepdims``).
    var : dask.array.Array
        The lazy variance, likewise.  It shares one reduction with
        ``mean``: compute them together (``dask.compute(mean, var)``).

    Raises
    ------
    TypeError
        If ``darr`` is not real numbers or ``where`` is not boolean.
    ValueError
        If ``axis`` is out of range or ``where`` does not broadcast to
        ``darr``.

    Warns
    -----
    RuntimeWarning
        ``Mean of empty slice`` and ``Degrees of freedom <= 0 for slice``,
        as NumPy, for the slices with no element or at most ``ddof``.

    See Also
    --------
    numbanorm.moments : The same statistics of an array in memory.
    numbanorm.Moments : The same merge, one batch at a time.

    Notes
    -----
    Two states ``(n_a, mean_a, M2_a)`` and ``(n_b, mean_b, M2_b)`` merge
    into ``n = n_a + n_b``, ``mean = mean_a + delta * n_b / n`` and ``M2 =
    M2_a + M2_b + delta**2 * n_a * n_b / n`` with ``delta = mean_b -
    mean_a``, which has no cancellation, unlike ``E[x**2] - E[x]**2``; the
    variance is ``M2 / (n - ddof)``.

    Examples
    --------
    The population statistics of a BatchNorm layer's input (channel axis 1)
    over a whole data set, as its ``running_mean`` and ``running_var``:

    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> from numbanorm.dask import moments
    >>> images = 1e4 + da.arange(2 * 3 * 40, dtype=np.float32).reshape(40, 3, 2) % 7
    >>> images = images.rechunk((10, 3, 2))  # four chunks of 10 samples
    >>> layer = nn.BatchNorm(3)
    >>> mean, var = moments(images, axis=(0, 2), ddof=1)  # lazy: nothing computed yet
    >>> layer.running_mean[...], layer.running_var[...] = dask.compute(mean, var)
    >>> exact = images.compute().astype(np.float64)
    >>> np.allclose(layer.running_var, exact.var(axis=(0, 2), ddof=1))
    True
    """
    darr = da.asarray(darr)
    result_dtype = host_input(np.empty(0, darr.dtype))[1]
    axes = (
        tuple(range(darr.ndim)) if axis is None else axes_tuple(axis, darr.ndim, allow_empty=True)
    )
    lazy_counts = isinstance(where, da.Array)
    if where is None:
        count = math.prod(darr.shape[a] for a in axes)
        # With chunks of unknown size the count is NaN and known only when computed.
        empty, few = count == 0, count and count - ddof <= 0
    elif lazy_counts:
        empty = few = False
    else:
        where = checked_where(where, darr.shape, HOST)
        counts = _slice_counts(where, darr.shape, axes)
        empty, few = (counts == 0).any(), (counts - ddof <= 0).any()
    if empty:
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=2)
    if few:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    out_ndim = darr.ndim if keepdims else darr.ndim - len(axes)
    if where is None:
        source, chunk_state = darr, _chunk_state
    else:
        source, chunk_state = _masked_chunk_states(darr, _dask_where(where, darr), axes)
    state = da.reduction(
        source,
        chunk_state,
        _state_array,
        combine=_merged_state,
        axis=axes,
        keepdims=keepdims,
        dtype=_STATE_DTYPE,
        split_every=split_every,
        concatenate=False,
        meta=np.empty((0,) * out_ndim, _STATE_DTYPE),
        name="numbanorm-moments",
    )
    meta = np.empty((0,) * out_ndim, result_dtype)
    mean = state.map_blocks(_mean, result_dtype, lazy_counts, dtype=result_dtype, meta=meta)
    var = state.map_blocks(
        _variance, ddof, result_dtype, lazy_counts, dtype=result_dtype, meta=meta
    )
    return mean, var


def _dask_where(where, darr):
    """A checked ``where`` as a boolean dask array of ``darr``'s shape and chunks."""
    if isinstance(where, da.Array):
        # The checks read the dtype and shape alone, on a stand-in of no memory.
        checked_where(np.broadcast_to(np.empty((), where.dtype), where.shape), darr.shape, HOST)
    else:
        where = da.from_array(where, chunks=-1)
    return da.broadcast_to(where, darr.shape).rechunk(darr.chunks)


def _masked_chunk_states(darr, where, axes):
    """Each chunk's state over ``axes`` as an array of :data:`_STATE_DTYPE`, the reduced
    axes kept with size 1, and the reduction's chunk step that reads it back."""
    state_chunks = tuple(
        (1,) * len(chunks) if a in axes else chunks for a, chunks in enumerate(darr.chunks)
    )
    states = da.map_blocks(
        _masked_state_block,
        darr,
        where,
        axes,
        chunks=state_chunks,
        dtype=_STATE_DTYPE,
        meta=np.empty((0,) * darr.ndim, _STATE_DTYPE),
    )
    return states, _state_of_block


def _masked_state_block(chunk, where, axes):
    """The state of the elements of ``chunk`` that ``where`` selects, as a block."""
    count, mean, m2 = welford_state(host_input(chunk)[0], axes, where)
    block = np.empty(np.shape(mean), _STATE_DTYPE)
    block["count"], block["mean"], block["m2"] = count, mean, m2
    return np.expand_dims(block, axes)


def _state_of_block(block, axis, keepdims, computing_meta=False):
    """``(count, mean, M2)`` of state blocks over ``axis``, merged, the kept axes in order."""
    if computing_meta:
        return block
    kept = tuple(a for a in range(block.ndim) if a not in axis)
    # The reduced axes to the front, each state a row, merged in order.
    rows = block.transpose(axis + kept).reshape((-1,) + tuple(block.shape[a] for a in kept))
    return _merged_state([(row["count"], row["mean"], row["m2"]) for row in rows])


# Each step takes ``computing_meta``: dask then passes an empty array standing
# for an input and asks for one standing for the step's output.  moments()
# gives dask the output's up front; the intermediate states are not arrays,
# and an empty state array stands for them.


def _chunk_state(chunk, axis, keepdims, computing_meta=False):
    """``(count, mean, M2)`` of one chunk over ``axis``, the kept axes in order.

    The state keeps no reduced axes, whatever ``keepdims``; the last step
    restores them.
    """
    if computing_meta:
        return chunk
    return welford_state(host_input(chunk)[0], axis)


def _merged_state(states, axis=None, keepdims=None, computing_meta=False):
    """One state of the states in a (nested) list, merged in order with Chan's formula.

    ``axis`` and ``keepdims``, which dask passes to a combine step, are implied
    by the states.
    """
    if computing_meta:
        return np.empty((0,), _STATE_DTYPE)
    states = [states] if isinstance(states, tuple) else list(flatten(states))
    merged = states[0]
    for state in states[1:]:
        merged = merged_state(merged, state)
    return merged


def _state_array(states, axis, keepdims, computing_meta=False):
    """The merged state as an array of :data:`_STATE_DTYPE`, shaped as the output block."""
    if computing_meta:
        return states
    count, mean, m2 = _merged_state(states)
    merged = np.empty(np.shape(mean), _STATE_DTYPE)
    merged["count"] = count
    merged["mean"] = mean
    merged["m2"] = m2
    return np.expand_dims(merged, axis) if keepdims else merged


def _mean(state, dtype, warn):
    if warn and (state["count"] == 0).any():
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=2)
    return _result(state["mean"], dtype)


def _variance(state, ddof, dtype, warn):
    if warn and (state["count"] - ddof <= 0).any():
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _result(state["m2"] / np.maximum(state["count"] - ddof, 0), dtype)


def _result(stat, dtype):
    """``stat`` in the result dtype; a NumPy scalar when 0-d, as numbanorm.moments gives."""
    stat = np.asarray(stat, dtype)
    return stat[()] if stat.ndim == 0 else stat


def _slice_counts(where: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """How many elements ``where`` selects in each slice over ``axes`` of an array of ``shape``.

    Counted over the canonical view of ``where`` alone, whose broadcast axes
    multiply the count instead of being read.
    """
    roles = "".join("R" if a in axes else "K" for a in range(len(shape)))
    perm, _, shape4, _ = geometry(shape, c_strides(shape, 1), 1, roles)
    return group_counts(_kernel_input(mask_view(np.broadcast_to(where, shape), perm, shape4)))
