"""The generic driver: any norm's forward and backward from its specification.

The public functions (``_norms.py``) are thin wrappers of :func:`forward`
and :func:`backward`; the synchronized batch norm uses their halves
(:func:`forward_arguments`, :func:`normalized`, :func:`backward_arguments`,
then the backend's ``parameter_sums`` and ``input_gradient``).  All array
work goes through a :class:`~numbanorm._backends.Backend`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from . import _engine, _overlap, _pool
from ._arrays import check_eps, check_momentum, flag, gradient_dtype, machine_epsilon
from ._backends import Backend, backend_for
from ._host import HOST
from ._layout import CanonicalView, geometry, stats_view
from ._specs import ChannelLayout, Layout, Norm

# ----------------------------------------------------------------------------
# Checked arguments


def _checked_param(value: Any, shape: tuple[int, ...], name: str, backend: Backend) -> Any:
    """An optional real array argument of the given shape (or None)."""
    if value is None:
        return None
    arr = backend.array(value, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def _checked_running_stats(running_mean, running_var, n_channels, updating, backend):
    """Validated running statistics, or ``(None, None)``."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if running_mean is None:
        return None, None
    stats = []
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if updating:
            backend.check_updatable(value, name)
        stats.append(_checked_param(value, (n_channels,), name, backend))
    return tuple(stats)


def _checked_out(out, shape, dtype, backend):
    """``out`` checked: an array of the backend's kind, shape and dtype, writable."""
    if out is None:
        return None
    arr = backend.out_array(out)
    if arr.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {arr.shape}")
    if arr.dtype != dtype and arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {arr.dtype}")
    if not backend.writeable(arr):
        raise ValueError("out must be writable")
    return out


def checked_where(where: Any, shape: tuple[int, ...], backend: Backend) -> Any:
    """``where`` as a boolean array of the backend that broadcasts to ``shape``, or None."""
    if where is None:
        return None
    mask = backend.array(where, "where")
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {mask.dtype}")
    try:
        broadcasts = np.broadcast_shapes(mask.shape, shape) == tuple(shape)
    except ValueError:
        broadcasts = False
    if not broadcasts:
        raise ValueError(
            f"where of shape {tuple(mask.shape)} does not broadcast to the shape of x, "
            f"{tuple(shape)}"
        )
    return mask


def _required_stat(value, shape, name, backend):
    if value is None:
        raise ValueError(f"{name} is required")
    return _checked_param(value, shape, name, backend)


def _direct_target(backend, out, target, inputs):
    """``target`` for the kernels to write, or None when ``out`` overlaps one of ``inputs``.

    The kernels then write a new array, which is copied into ``out``: the
    result is that of separate arrays, as with NumPy's ufuncs.  ``out`` that
    is exactly one of the inputs (the same elements) is written in place.
    """
    if out is not None and _overlap.overlaps_partially(backend.out_array(out), inputs):
        return None
    return target


# ----------------------------------------------------------------------------
# Forward


@dataclasses.dataclass
class ForwardArguments:
    """A forward's arguments, checked, on their backend."""

    norm: Norm
    backend: Backend
    layout: Layout
    x: Any
    result_dtype: np.dtype
    stat_dtype: np.dtype
    weight: Any
    bias: Any
    running_mean: Any
    running_var: Any
    eps: float
    momentum: float
    out: Any
    where: Any = None


def forward_arguments(
    norm: Norm,
    x: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    axis: Any,
    eps: Any,
    num_groups: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    input_stats: bool = True,
    momentum: Any = 0.1,
    out: Any = None,
    where: Any = None,
    what: str | None = None,
) -> ForwardArguments:
    """Check a forward's arguments, in the order and with the messages of every norm."""
    backend = backend_for(x, running_mean, running_var, weight, bias, out, where)
    xc, result_dtype, stat_dtype = backend.input(x)
    layout = norm.layout(xc.shape, axis, num_groups, what=what)
    if norm.mode_argument:
        input_stats = flag(input_stats, norm.mode_argument)
    weight = _checked_param(weight, layout.weight_shape, "weight", backend)
    bias = _checked_param(bias, layout.weight_shape, "bias", backend)
    if eps is None and norm.default_eps is None:
        eps = np.finfo(result_dtype).eps
    eps = check_eps(eps)
    if norm.running_stats:
        momentum = check_momentum(momentum)
        running_mean, running_var = _checked_running_stats(
            running_mean, running_var, layout.weight_shape[0], input_stats, backend
        )
    out = _checked_out(out, xc.shape, result_dtype, backend)
    where = checked_where(where, xc.shape, backend)
    return ForwardArguments(
        norm,
        backend,
        layout,
        xc,
        result_dtype,
        stat_dtype,
        weight,
        bias,
        running_mean,
        running_var,
        eps,
        momentum,
        out,
        where,
    )


def normalized(
    args: ForwardArguments,
    running: tuple[Any, Any] | None = None,
    update: tuple[Any, Any, float, float] | None = None,
    canon: CanonicalView | None = None,
    mask: Any = None,
) -> tuple[Any, CanonicalView, Any, Any, Any, Any]:
    """Normalize ``args.x``: ``(y, canon, mean, var, rstd, count)``.

    ``running``, when given, is ``(mean, var)`` to normalize with instead of
    the statistics of the input; ``var`` is then None.  ``update`` (see
    :func:`_running_update`) folds the statistics into running ones.
    ``mask``, the canonical view of ``args.where`` (see :func:`mask_of`),
    selects the elements of the statistics; ``count`` is then their number
    per group, else None.  The statistics are ``(B, C)`` arrays of the
    backend.
    """
    backend, layout, out = args.backend, args.layout, args.out
    if canon is None:
        canon = backend.view(args.x, layout.split_shape, layout.roles)
    stats = (
        None if running is None else backend.running_groups(running, canon.shape4[::2], args.eps)
    )
    target = None if out is None else backend.reshaped(out, canon.shape)
    affine = args.weight is not None or args.bias is not None
    inputs = (args.x, args.weight, args.bias, args.where, *(running or ()))
    y, mean, var, rstd, count = backend.normalize(
        canon,
        _param2(backend, layout, args.weight, 1.0, affine),
        _param2(backend, layout, args.bias, 0.0, affine),
        _direct_target(backend, out, target, inputs),
        eps=args.eps,
        centered=args.norm.centered,
        stats=stats,
        update=update,
        mask=None if running is not None else mask,
    )
    y = backend.deliver(y, target, out, layout.shape, args.result_dtype)
    return y, canon, mean, var, rstd, count


def mask_of(backend: Backend, canon: CanonicalView, where: Any, shape: tuple[int, ...]) -> Any:
    """The canonical ``(B, O, C, I)`` view of a checked ``where`` (None: no mask)."""
    return None if where is None else backend.mask(canon, where, shape)


def _param2(backend, layout, value, fill, full=True):
    """A parameter as the kernels' ``(C, W)`` array; without ``full``, None gives ``(C, 1)``."""
    shape2 = layout.param_shape2 if full else (layout.param_shape2[0], 1)
    return backend.param2(value, shape2, fill)


def statistics_out(args: ForwardArguments, canon: CanonicalView, *stats: Any) -> tuple[Any, ...]:
    """``(B, C)`` statistics as the public arrays of the norm's statistics shape."""
    return tuple(
        args.backend.stats_out(canon, s, args.layout.stat_axes, args.stat_dtype) for s in stats
    )


def forward(
    norm: Norm,
    x: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    axis: Any,
    eps: Any,
    num_groups: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    input_stats: bool = True,
    momentum: Any = 0.1,
    out: Any = None,
    stats: bool = True,
    where: Any = None,
) -> tuple[Any, ...]:
    """Any norm's forward: ``(y, *statistics)``, or ``(y,)`` without ``stats``.

    ``input_stats`` normalizes with the input's statistics (and updates the
    running statistics, when given); otherwise with the running ones.
    ``where`` selects the elements the input's statistics cover.
    """
    if where is None:
        fast = _plain_forward(
            norm,
            x,
            weight,
            bias,
            axis,
            eps,
            num_groups,
            running_mean,
            running_var,
            input_stats,
            momentum,
            out,
            stats,
        )
        if fast is not None:
            return fast
    args = forward_arguments(
        norm,
        x,
        weight,
        bias,
        axis=axis,
        eps=eps,
        num_groups=num_groups,
        running_mean=running_mean,
        running_var=running_var,
        input_stats=input_stats,
        momentum=momentum,
        out=out,
        where=where,
    )
    layout = args.layout
    norm.check_statistics(layout, input_stats, args.running_mean is not None)
    if norm.running_stats and input_stats:
        _overlap.check_disjoint(
            (
                ("out", None if args.out is None else args.backend.out_array(args.out)),
                ("running_mean", args.running_mean),
                ("running_var", args.running_var),
            )
        )
    use_running = norm.running_stats and not input_stats
    updates = isinstance(layout, ChannelLayout) and input_stats and args.running_mean is not None
    backend = args.backend
    canon = backend.view(args.x, layout.split_shape, layout.roles)
    mask = None if use_running else mask_of(backend, canon, args.where, layout.shape)
    masked_update = None
    if updates and mask is not None:
        masked_update = _masked_running_statistics(norm, layout, backend.group_counts(mask))
    y, canon, mean, var, rstd, count = normalized(
        args,
        (args.running_mean, args.running_var) if use_running else None,
        _running_update(layout, args.running_mean, args.running_var, args.momentum)
        if updates and mask is None
        else None,
        canon,
        mask,
    )
    if masked_update is not None:
        masked_update(backend, args.running_mean, args.running_var, mean, var, args.momentum)
    if not stats:
        return (y,)
    return (y, *statistics_out(args, canon, *((mean, rstd) if norm.centered else (rstd,))))


def _running_update(layout, running_mean, running_var, momentum):
    """``(running_mean, running_var, momentum, unbias)``: a training forward's fold of
    its statistics into the running ones, with the unbiased variance; None for an
    input without samples, which leaves them as they are."""
    if not layout.n_samples:
        return None
    return running_mean, running_var, momentum, layout.count / (layout.count - 1)


def _masked_running_statistics(norm, layout, counts):
    """The fold of a masked training forward's statistics into the running ones.

    ``counts`` are the ``(B, C)`` selected counts, on the host.  Each
    channel's statistic is the sample average, over the groups with at
    least 2 selected elements, of the mean and the unbiased variance
    (``var * n / (n - 1)``).  A channel without such a group raises
    PyTorch's training error before anything is written.  Returns a
    function of ``(backend, running_mean, running_var, mean, var,
    momentum)``.
    """
    counted = counts >= 2
    if not counted.any(axis=0).all():
        layout.check_training(norm.per_sample, selected=True)
    n_counted = counted.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        unbias = np.where(counted, counts / (counts - 1), 0.0)

    def fold(backend, running_mean, running_var, mean, var, momentum):
        mean, var = backend.to_host(mean), backend.to_host(var)
        batch_mean = np.where(counted, mean, 0.0).sum(axis=0, keepdims=True) / n_counted
        batch_var = np.where(counted, var * unbias, 0.0).sum(axis=0, keepdims=True) / n_counted
        backend.update_running(
            running_mean,
            running_var,
            backend.from_host(batch_mean),
            backend.from_host(batch_var),
            momentum,
            1.0,
        )

    return fold


def _update_running(backend, layout, running_mean, running_var, mean, var, momentum):
    """Fold a training forward's ``(B, C)`` statistics into the running ones."""
    update = _running_update(layout, running_mean, running_var, momentum)
    if update is not None:
        backend.update_running(*update[:2], mean, var, *update[2:])


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _plain_operand(a, dtype, shape):
    """Whether ``a`` is None or a writable C-contiguous ndarray of ``dtype`` and ``shape``."""
    if a is None:
        return True
    if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.writeable


def _plain_statistic(a, channels):
    """Whether ``a`` is a running statistic the fast path may read and update in place."""
    return (
        type(a) is np.ndarray
        and a.dtype in _NATIVE_FLOATS
        and _plain_operand(a, a.dtype, (channels,))
    )


@functools.lru_cache(maxsize=64)
def _default_params(shape2, dtype):
    """Ones and zeros of the kernels' parameter shape: the weight and bias a norm is
    called without.  Shared between calls and never handed out: the kernels only read them."""
    return np.ones(shape2, dtype), np.zeros(shape2, dtype)


@dataclasses.dataclass(frozen=True)
class _PlainPlan:
    """What a forward on a C-contiguous input needs that depends on its shape alone."""

    axis: Any  # the argument the plan was made for
    layout: Layout
    shape4: tuple[int, int, int, int]
    stat_view: tuple[int, ...]
    stat_order: tuple[int, ...] | None
    kernel_plan: Any  # ``_engine.plan_kernels`` with the norm's parameters
    unweighted_kernel_plan: Any  # and without them

    def statistic(self, stat, dtype):
        """A ``(B, C)`` statistic as its public array (see ``_layout.stats_view``)."""
        public = stat.reshape(self.stat_view)
        if self.stat_order is not None:
            public = public.transpose(self.stat_order)
        return public.astype(dtype)


@functools.lru_cache(maxsize=256)
def _plain_plan(norm, shape, itemsize, axis, num_groups):
    """The :class:`_PlainPlan` of a C-contiguous input, or None.

    None where the general path must decide: arguments it refuses (with
    its messages), or axis roles whose canonical view is not a reshape.
    Arguments of a wrong type raise ``TypeError``, which is not cached.
    """
    try:
        layout = norm.layout(shape, axis, num_groups)
    except ValueError:
        return None
    split = layout.split_shape
    strides = tuple(itemsize * math.prod(split[a + 1 :]) for a in range(len(split)))
    perm, _, shape4, stat_axes = geometry(split, strides, itemsize, layout.roles)
    moved = [a for a in perm if split[a] != 1]
    if moved != sorted(moved):  # the view would be a copy: the general path makes it
        return None
    return _PlainPlan(
        axis,
        layout,
        shape4,
        *stats_view(split, stat_axes, layout.stat_axes),
        _engine.plan_kernels(shape4, layout.param_shape2[1]),
        _engine.plan_kernels(shape4, 1),
    )


def _exact_axis(axis):
    """Whether ``axis`` is an int or a tuple of ints, of exactly these types.

    Floats and bools equal to the ints of a cached plan's axis find its
    entry, but the general path refuses them.  A call passing the plan's
    own axis object, as a small int or a literal tuple in a loop does,
    needs no check.
    """
    return type(axis) is int or (type(axis) is tuple and all(type(a) is int for a in axis))


def _plain_forward(
    norm,
    x,
    weight,
    bias,
    axis,
    eps,
    num_groups,
    running_mean,
    running_var,
    input_stats,
    momentum,
    out,
    stats,
):
    """The forward of plain NumPy arguments, or None.

    The common case in a framework's loop (a C-contiguous float32/float64
    array, parameters and ``out`` of its dtype, C-contiguous running
    statistics) needs none of the general path's checks and conversions,
    whose Python costs more than the kernels on small arrays: its layout,
    canonical shape and statistics' shape are looked up by the input's
    shape.  Anything else returns None and takes the general path, which
    computes the same with the same kernels.
    """
    if type(x) is not np.ndarray or x.dtype not in _NATIVE_FLOATS or not x.size:
        return None
    flags = x.flags
    if not (flags.c_contiguous and flags.writeable):
        return None
    if not (num_groups is None or type(num_groups) is int):
        return None
    try:
        plan = _plain_plan(norm, x.shape, x.dtype.itemsize, axis, num_groups)
    except TypeError:  # an unhashable axis, or one of a wrong type
        return None
    if plan is None or (axis is not plan.axis and not _exact_axis(axis)):
        return None
    layout = plan.layout
    dtype = x.dtype
    if not (
        _plain_operand(weight, dtype, layout.weight_shape)
        and _plain_operand(bias, dtype, layout.weight_shape)
        and _plain_operand(out, dtype, x.shape)
    ):
        return None
    running = running_mean is not None or running_var is not None
    if running and not (
        norm.running_stats
        and _plain_statistic(running_mean, layout.weight_shape[0])
        and _plain_statistic(running_var, layout.weight_shape[0])
        and not np.may_share_memory(running_mean, running_var)
    ):
        return None
    if norm.running_stats and not (
        type(input_stats) is bool and type(momentum) in (float, int) and 0 <= momentum <= 1
    ):
        return None
    if eps is None and norm.default_eps is None:
        eps = machine_epsilon(dtype)
    elif type(eps) is not float or not eps >= 0:
        return None
    if out is not None and any(
        a is not None and (a is not x or out is not x) and np.may_share_memory(out, a)
        for a in (x, weight, bias, running_mean, running_var)
    ):
        return None  # the general path tells exact aliasing from overlap
    norm.check_statistics(layout, input_stats, running)
    shape2 = layout.param_shape2
    kernel_plan = plan.kernel_plan
    if weight is None and bias is None:
        weight2, bias2 = _default_params((shape2[0], 1), dtype)
        kernel_plan = plan.unweighted_kernel_plan
    else:
        ones, zeros = _default_params(shape2, dtype)
        weight2 = ones if weight is None else weight.reshape(shape2)
        bias2 = zeros if bias is None else bias.reshape(shape2)
    y = _pool.empty(x.shape, dtype) if out is None else out
    given = None
    if running and not input_stats:
        given = HOST.running_groups(
            (running_mean, running_var), (plan.shape4[0], plan.shape4[2]), eps
        )
    mean, var, rstd, _ = _engine.normalize(
        x.reshape(plan.shape4),
        weight2,
        bias2,
        y.reshape(plan.shape4),
        eps=eps,
        centered=norm.centered,
        stats=given,
        plan=kernel_plan,
    )
    if running and input_stats:
        _update_running(HOST, layout, running_mean, running_var, mean, var, float(momentum))
    if not stats:
        return (y,)
    return (y, *(plan.statistic(s, dtype) for s in ((mean, rstd) if norm.centered else (rstd,))))


# ----------------------------------------------------------------------------
# Backward


@dataclasses.dataclass
class BackwardArguments:
    """A backward's arguments, checked, with the canonical view and ``(B, C)`` statistics."""

    norm: Norm
    backend: Backend
    layout: Layout
    canon: CanonicalView
    x: Any
    dy: Any
    dy4: Any
    mean: Any
    rstd: Any
    weight: Any
    weight2: Any
    result_dtype: np.dtype
    stat_dtype: np.dtype
    out: Any
    target: Any
    stats: tuple[Any, ...]
    where: Any = None

    @property
    def gradient_dtype(self) -> np.dtype:
        """The dtype of the public parameter gradients."""
        return gradient_dtype(self.weight, self.stat_dtype)

    def gradients_out(self, dweight2: Any, dbias2: Any) -> tuple[Any, ...]:
        """The parameter gradients as public arrays: ``(dweight, dbias)`` or ``(dweight,)``."""
        grads = (dweight2, dbias2) if self.norm.bias else (dweight2,)
        return tuple(
            self.backend.gradient_out(g, self.layout.weight_shape, self.gradient_dtype)
            for g in grads
        )


def backward_arguments(
    norm: Norm,
    dy: Any,
    x: Any,
    stats: tuple[Any, ...],
    weight: Any = None,
    *,
    axis: Any,
    num_groups: Any = None,
    out: Any = None,
    where: Any = None,
    what: str | None = None,
) -> BackwardArguments:
    """Check a backward's arguments; ``stats`` are the forward's, by ``norm.statistics``."""
    backend = backend_for(x, dy, *stats, weight, out, where)
    xc, result_dtype, stat_dtype = backend.input(x)
    layout = norm.layout(xc.shape, axis, num_groups, what=what or norm.name + "_backward")
    weight = _checked_param(weight, layout.weight_shape, "weight", backend)
    out = _checked_out(out, xc.shape, result_dtype, backend)
    dy = backend.array(dy, "dy")
    if dy.shape != xc.shape:
        raise ValueError(f"dy must have shape {xc.shape}, got {dy.shape}")
    if dy.dtype.kind not in "fiub":
        raise TypeError(f"dy must be a real array, got dtype {dy.dtype}")
    where = checked_where(where, xc.shape, backend)
    stats = tuple(
        _required_stat(value, layout.stat_shape, name, backend)
        for value, name in zip(stats, norm.statistics)
    )
    canon = backend.view(xc, layout.split_shape, layout.roles)
    rstd2 = canon.stats_from_axes(stats[-1], layout.stat_axes)
    mean2 = (
        canon.stats_from_axes(stats[0], layout.stat_axes)
        if norm.centered
        else backend.group_zeros(canon)
    )
    target = None if out is None else backend.reshaped(out, canon.shape)
    # A weight of ones the size of the parameters, also without one: dweight
    # and dbias have one entry per parameter.
    weight2 = _param2(backend, layout, weight, 1.0)
    return BackwardArguments(
        norm,
        backend,
        layout,
        canon,
        xc,
        dy,
        backend.reshaped(dy, canon.shape),
        mean2,
        rstd2,
        weight,
        weight2,
        result_dtype,
        stat_dtype,
        out,
        target,
        stats,
        where,
    )


def backward(
    norm: Norm,
    dy: Any,
    x: Any,
    stats: tuple[Any, ...],
    weight: Any = None,
    *,
    axis: Any,
    num_groups: Any = None,
    input_stats: bool = True,
    out: Any = None,
    where: Any = None,
) -> tuple[Any, ...]:
    """Any norm's backward: ``(dx, dweight, dbias)``, or ``(dx, dweight)`` without a bias.

    ``input_stats`` says whether the forward's statistics came from ``x``
    (and are differentiated through) or were constants; ``where`` is the
    forward's selection of the elements they came from.
    """
    args = backward_arguments(
        norm, dy, x, stats, weight, axis=axis, num_groups=num_groups, out=out, where=where
    )
    if norm.mode_argument:
        input_stats = flag(input_stats, norm.mode_argument)
    backend = args.backend
    direct = _direct_target(
        backend, args.out, args.target, (args.x, args.dy, *args.stats, args.weight, args.where)
    )
    dx, dweight2, dbias2 = backend.backward(
        args.canon,
        args.dy4,
        args.mean,
        args.rstd,
        args.weight2,
        input_stats,
        norm.centered,
        out=direct,
        gradients=(args.layout.weight_shape, args.gradient_dtype, norm.bias),
        mask=mask_of(backend, args.canon, args.where, args.layout.shape) if input_stats else None,
    )
    dx = backend.deliver(dx, args.target, args.out, args.layout.shape, args.result_dtype)
    return (dx, *args.gradients_out(dweight2, dbias2))
