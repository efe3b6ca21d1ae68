"""Synchronized batch normalization: one batch split across MPI processes.

In data-parallel training each process (rank) holds part of the batch.
These functions normalize every part with the statistics of the whole batch,
as if it had been concatenated in one process, and compute the gradients of
that normalization.  ``comm`` is an mpi4py communicator: the "mpi" extra
brings mpi4py and an MPI library, MPICH (``pip install ".[mpi]"`` in a
numbanorm clone).  Every rank of it must make the same calls, with the
same number of channels, in the same order, as with any MPI collective.

The forward gathers each rank's Welford state ``(count, mean, M2)`` per
channel from every rank (``Allgather``, ``3 C + 1`` values per rank with the
number of elements) and merges the states in rank order with Chan's formula
in float64.  The merge is exact for any split of the batch, including ranks
with no samples or none selected by ``where``, keeps the variance of data
with a large offset, and gives bit-identical statistics on every rank,
whatever algorithm the MPI library uses.  The backward sums the per-channel
counts, ``sum(dy)`` and ``sum(dy * x_hat)`` over the ranks (``Allreduce``,
``3 C`` values).  See ``docs/distributed.md``.

``where`` selects, on each rank, the elements of its part that the
statistics cover (the valid frames of padded sequences, say), as in
:func:`numbanorm.batch_norm_forward`: the statistics are those of the
selected elements of the whole batch.  A rank may pass None (all of its
elements) while others pass a mask, or a mask selecting nothing.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from . import _driver
from ._accumulator import merged_state
from ._engine import refines_mean
from ._layers import BatchNorm, layer_doc
from ._norms import batch_norm_forward
from ._specs import BATCH_NORM, ChannelLayout

__all__ = ["SyncBatchNorm", "sync_batch_norm_backward", "sync_batch_norm_forward"]


def sync_batch_norm_forward(
    x: ArrayLike,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    comm: Any,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
) -> tuple[Any, Any, Any]:
    """Batch normalization of a batch split across the ranks of ``comm``.

    Each rank passes its own part of the batch; the parts may have different
    sizes, including none at all.  Arguments and results are those of
    :func:`numbanorm.batch_norm_forward`; in training mode the statistics are
    those of the whole batch, identical on every rank, and so are the
    updated running statistics: each rank's ``y`` is its part of batch norm
    of the concatenated batch in one process, up to rounding.  In
    evaluation mode (``training=False``) nothing is communicated: each rank
    normalizes with the running statistics.  Every rank of ``comm`` must
    make the call, in the same mode.

    Parameters
    ----------
    x : array_like
        This rank's part of the batch, at least two dimensions: a NumPy
        array, or a device array for the GPU backend (only the per-channel
        states then travel through host memory).  The sample axes may
        differ in size between ranks; the channel axis may not.
    running_mean, running_var : ndarray, optional
        ``(C,)`` running statistics, updated in place in training mode with
        the whole batch's mean and unbiased variance.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters, the same on every rank.
    comm : mpi4py.MPI.Comm
        The ranks sharing the batch.
    training : bool, optional
        Normalize with the whole batch's statistics (True) or the running ones.
    momentum, eps : float, optional
        As in :func:`numbanorm.batch_norm_forward`.
    axis : int, optional
        Channel axis: 1 for NCHW-style data, -1 for channels-last.
    where : array_like of bool, optional
        The elements of this rank's ``x`` that the statistics come from,
        broadcastable to ``x`` (``(N, 1, T)`` for padded ``(N, C, T)``
        sequences, say); None selects all of them.  The statistics are
        those of the selected elements of every rank; ``y`` is computed for
        every element, and a channel with none selected on any rank has
        ``mean = rstd = 0`` and gives the bias.  With running statistics,
        which take the unbiased variance over the selected count of the
        whole batch, a channel with fewer than 2 selected raises.  Ignored
        in evaluation mode.

    Returns
    -------
    y : ndarray
        This rank's part of the normalized batch (a device array for
        device input).
    mean, rstd : ndarray
        ``(C,)`` statistics of the whole batch (the running ones in
        evaluation mode), as :func:`sync_batch_norm_backward` takes them.

    Raises
    ------
    ValueError
        If an argument has a shape that does not fit ``x``, or in training
        the whole batch has a single value per channel (with running
        statistics, fewer than 2 selected in a channel): raised on every
        rank alike, since these counts are those of the whole batch.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean.

    See Also
    --------
    sync_batch_norm_backward : Its gradients.
    SyncBatchNorm : The layer that calls it.
    numbanorm.batch_norm_forward : The same in one process.

    Notes
    -----
    Each rank computes the per-channel Welford states ``(count, mean, M2)``
    of its part, gathers every rank's (``Allgather``, ``3 C + 1`` float64
    values per rank) and merges them in rank order with Chan's formula, so
    every rank gets the same bits, with any MPI library.  Then::

        y = (x - mean) / sqrt(M2 / count + eps) * weight + bias

    and the running statistics take ``M2 / (count - 1)`` as the batch
    variance.

    Examples
    --------
    With one process (``MPI.COMM_SELF``; under ``mpiexec``, ``COMM_WORLD``
    and each rank's part), the result is that of batch norm:

    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import numbanorm as nn
    >>> from numbanorm.distributed import sync_batch_norm_forward
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    >>> y, mean, rstd = sync_batch_norm_forward(x, comm=MPI.COMM_SELF)
    >>> mean
    array([ 3., 20.])
    >>> np.allclose(y, nn.batch_norm(x))
    True
    """
    if not training:
        return batch_norm_forward(
            x,
            running_mean,
            running_var,
            weight,
            bias,
            training=False,
            momentum=momentum,
            eps=eps,
            axis=axis,
            where=where,
        )
    args = _driver.forward_arguments(
        BATCH_NORM,
        x,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        momentum=momentum,
        eps=eps,
        axis=axis,
        where=where,
        what="sync_batch_norm",
    )
    backend, layout = args.backend, cast(ChannelLayout, args.layout)
    n_elements, (count, mean, m2) = _batch_state(comm, backend, args.x, layout.axis, args.where)
    if n_elements <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got {n_elements} over all ranks"
        )
    if args.running_mean is not None and count.min() < 2:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got "
            f"{int(count.min())} selected in a channel over all ranks"
        )
    selected = count > 0
    mean = backend.from_host(np.where(selected, mean, 0.0)[None])
    # An infinite variance gives rstd = 0: a channel with nothing selected is
    # normalized to its bias, as batch_norm_forward does.
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(selected, m2 / count, np.inf)
    y, canon, _, _, rstd, _ = _driver.normalized(
        args, (backend.reshaped(mean, (layout.channels,)), backend.from_host(var))
    )
    if args.running_mean is not None:
        backend.update_running(
            args.running_mean,
            args.running_var,
            mean,
            backend.from_host((m2 / (count - 1))[None]),
            args.momentum,
            1.0,
        )
    return (y, *_driver.statistics_out(args, canon, mean, rstd))


def _batch_state(comm, backend, xc, channel_axis, where):
    """``(elements, (count, mean, M2))``: the whole batch's number of elements per
    channel and per-channel Welford state of the selected ones, over every rank of ``comm``.

    Every rank merges the same states in the same (rank) order, so every
    rank gets the same bits.  The states travel through host memory (``3 C
    + 1`` values), also for device arrays.
    """
    reduced = tuple(a for a in range(xc.ndim) if a != channel_axis)
    count, mean, m2 = backend.welford_state(xc, reduced, where)
    C = mean.size
    elements = math.prod(xc.shape[a] for a in reduced)
    gathered = np.empty((comm.Get_size(), 3 * C + 1))
    comm.Allgather(np.concatenate(([elements], np.broadcast_to(count, C), mean, m2)), gathered)
    states = (
        (state[1 : C + 1], state[C + 1 : 2 * C + 1], state[2 * C + 1 :]) for state in gathered
    )
    batch = next(states)
    for state in states:
        batch = merged_state(batch, state)
    return int(gathered[:, 0].sum()), batch


def sync_batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    comm: Any,
    axis: int = 1,
    where: ArrayLike | None = None,
) -> tuple[Any, Any, Any]:
    """Compute the gradients of :func:`sync_batch_norm_forward` in training mode.

    Each rank passes its part of the upstream gradient and of the
    forward's input, with the statistics the forward returned; the result
    is its part of the gradient of batch norm of the concatenated batch in
    one process, up to rounding.  The per-channel sums that the input
    gradient needs are summed over the ranks, so every rank of ``comm``
    must make the call.

    Parameters
    ----------
    dy, x : array_like
        This rank's upstream gradient and its part of the forward's input.
    mean, rstd : array_like
        ``(C,)`` statistics returned by :func:`sync_batch_norm_forward`.
    weight : array_like, optional
        ``(C,)`` weight used in the forward.
    comm : mpi4py.MPI.Comm
        The communicator of the forward.
    axis : int, optional
        Channel axis.
    where : array_like of bool, optional
        This rank's ``where`` of the forward: the gradient through the
        statistics reaches the selected elements only.

    Returns
    -------
    dx : ndarray
        Gradient with respect to this rank's ``x``.
    dweight, dbias : ndarray
        ``(C,)`` gradients summed over every rank's part of the batch,
        identical on every rank: the gradients of the sum of the ranks'
        losses.  An optimizer that averages the other gradients over the
        ranks applies the gradient of their mean: divide these by the number
        of ranks to match.

    Raises
    ------
    ValueError
        If ``dy`` does not have the shape of ``x``, or a statistic or
        ``weight`` another shape than ``(C,)``.
    TypeError
        If an array is not real numbers or ``where`` is not boolean.

    See Also
    --------
    sync_batch_norm_forward : The forward it differentiates.
    numbanorm.batch_norm_backward : The same in one process, and the
        gradient in evaluation mode.

    Notes
    -----
    Each rank reduces its ``sum(dy)`` and ``sum(dy * x_hat)`` per channel
    (its ``dbias`` and ``dweight``), and the ranks sum them and the
    per-channel counts (``Allreduce``, ``3 C`` values).  Then, with the
    whole batch's count ``N`` of each channel::

        dx = weight * rstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N)

    For evaluation mode, where the statistics are constants and nothing is
    communicated, use :func:`numbanorm.batch_norm_backward` with
    ``training=False``.

    float32 statistics round the batch mean by up to half an ulp of the
    data's offset.  For float32 and float16 input each rank measures that
    rounding on its part of ``x`` (one more read of it, ``C`` more values
    in the reduction), and the gradients are those of the exact batch mean,
    as :func:`numbanorm.batch_norm_backward` gives on one process.

    Examples
    --------
    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import numbanorm as nn
    >>> from numbanorm.distributed import sync_batch_norm_backward, sync_batch_norm_forward
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    >>> dy = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    >>> y, mean, rstd = sync_batch_norm_forward(x, comm=MPI.COMM_SELF)
    >>> dx, dweight, dbias = sync_batch_norm_backward(dy, x, mean, rstd, comm=MPI.COMM_SELF)
    >>> dbias
    array([1., 2.])
    >>> np.allclose(dx, nn.batch_norm_backward(dy, x, mean, rstd)[0])
    True
    """
    args = _driver.backward_arguments(
        BATCH_NORM,
        dy,
        x,
        (mean, rstd),
        weight,
        axis=axis,
        where=where,
        what="sync_batch_norm_backward",
    )
    backend, layout, canon = args.backend, cast(ChannelLayout, args.layout), args.canon
    mean2, rstd2, weight2 = args.mean, args.rstd, args.weight2
    C = layout.channels
    mask = _driver.mask_of(backend, canon, args.where, layout.shape)
    local_counts = (
        np.full(C, float(layout.count)) if mask is None else backend.group_counts(mask)[0]
    )
    dweight2, dbias2 = backend.parameter_sums(canon, args.dy4, mean2, rstd2, weight2)
    local: list[Any] = [local_counts, dbias2[:, 0], dweight2[:, 0]]
    refine = refines_mean(args.stat_dtype, True, True)
    if refine:  # the ranks' sums of x - mean measure the rounding of the given mean
        reduced = tuple(a for a in range(args.x.ndim) if a != layout.axis)
        local_count, local_mean, _ = backend.welford_state(args.x, reduced, args.where)
        given_mean = backend.to_host(mean2)[0]
        # A channel with nothing selected here has a NaN mean and adds nothing.
        local.append(np.where(local_count > 0, local_count * (local_mean - given_mean), 0.0))
    sums = np.concatenate(local)
    total = np.empty_like(sums)
    comm.Allreduce(sums, total)  # mpi4py's default operation is the sum
    counts = total[:C]
    dbias, dweight = total[C : 2 * C], total[2 * C : 3 * C]
    if refine:
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(counts > 0, total[3 * C :] / counts, 0.0)
        dweight = dweight - delta * backend.to_host(rstd2)[0] * dbias
        mean2 = backend.from_host((given_mean + delta)[None])
    if mask is None and (counts == counts[0]).all():
        count: Any = int(counts[0])
    else:
        if mask is None:  # other ranks selected: this one selects every element
            every = backend.from_host(np.ones((1,) * len(layout.shape), np.bool_))
            mask = backend.mask(canon, every, layout.shape)
        count = counts[None]
    # With one weight per channel the group sums of the input gradient follow
    # from the parameter gradients: sum(dy*w) = w*dbias, sum(dy*w*x̂) = w*dweight.
    w = 1.0 if args.weight is None else backend.to_host(args.weight).astype(np.float64)
    dx = backend.input_gradient(
        canon,
        args.dy4,
        mean2,
        rstd2,
        weight2,
        (w * dbias)[None],
        (w * dweight)[None],
        count,
        mask,
    )
    dx = backend.deliver(dx, None, None, layout.shape, args.result_dtype)
    return (dx, *args.gradients_out(*(backend.from_host(g[:, None]) for g in (dweight, dbias))))


@layer_doc
class SyncBatchNorm(BatchNorm):
    """A :class:`numbanorm.BatchNorm` whose training statistics span every rank of ``comm``.

    In training mode the forward and backward are
    :func:`sync_batch_norm_forward` and :func:`sync_batch_norm_backward`:
    every rank must call the layer, and its backward, together.  The running
    statistics, ``num_batches_tracked`` and the gradients of ``weight`` and
    ``bias`` (the sums over every rank's part of the batch, see
    :func:`sync_batch_norm_backward`) come out identical on every rank.  In
    evaluation mode each rank normalizes its own data alone, as with
    :class:`~numbanorm.BatchNorm` (also without running statistics, where
    that means its own batch's statistics), as PyTorch's and Horovod's
    ``SyncBatchNorm`` do.  The backward follows the mode of its forward.
    The layer holds NumPy arrays and runs on the host.

    Parameters
    ----------
    num_features : int
        Number of channels ``C``.
    comm : mpi4py.MPI.Comm
        The ranks sharing each batch; ``comm.Split`` makes groups of ranks
        with statistics of their own.
    {running_stats_options}

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
        The communicator given.
    {layer_attributes}
    {running_stats_attributes}

    Raises
    ------
    {running_stats_raises}

    See Also
    --------
    numbanorm.BatchNorm : The layer in one process, whose methods it has.
    sync_batch_norm_forward : The function of its forward pass in training.

    Examples
    --------
    One process (``MPI.COMM_SELF``) holds the whole batch; under
    ``mpiexec``, with ``MPI.COMM_WORLD``, each rank holds a part of it:

    >>> import numpy as np
    >>> from mpi4py import MPI
    >>> import numbanorm as nn
    >>> from numbanorm.distributed import SyncBatchNorm
    >>> bn = SyncBatchNorm(2, comm=MPI.COMM_SELF)
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    >>> np.allclose(bn(x), nn.BatchNorm(2)(x))
    True
    >>> bn.running_mean, bn.running_var
    (array([0.2, 2. ], dtype=float32), array([ 1.1, 20.9], dtype=float32))
    """

    def __init__(
        self,
        num_features,
        *,
        comm,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        axis=1,
        dtype=np.float32,
    ):
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            axis=axis,
            dtype=dtype,
        )
        self.comm = comm
        self._synchronized = False

    def _forward(self, x, where):
        # The backward follows the mode of its forward, even if the mode is
        # switched between the two.
        self._synchronized = self.training
        return super()._forward(x, where)

    def _normalize(self, x, input_stats, momentum, where):
        if not self._synchronized:
            return super()._normalize(x, input_stats, momentum, where)
        return sync_batch_norm_forward(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            comm=self.comm,
            momentum=momentum,
            eps=self.eps,
            axis=self.axis,
            where=where,
        )

    def _backward(self, dy, x, stats, input_stats, where):
        if not self._synchronized:
            return super()._backward(dy, x, stats, input_stats, where)
        return sync_batch_norm_backward(
            dy, x, *stats, self.weight, comm=self.comm, axis=self.axis, where=where
        )
