"""The generic driver: any norm's forward and backward from its specification.

The public functions (``_norms.py``) are thin wrappers of :func:`forward`
and :func:`backward`; the synchronized batch norm uses their halves
(:func:`forward_arguments`, :func:`normalized`, :func:`backward_arguments`,
then the backend's ``parameter_sums`` and ``input_gradient``).  All array
work goes through a :class:`~numbanorm._backends.Backend`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import _engine, _overlap
from ._arrays import check_eps, check_momentum, gradient_dtype, machine_epsilon
from ._backends import Backend, backend_for
from ._layout import CanonicalView
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
    what: str | None = None,
) -> ForwardArguments:
    """Check a forward's arguments, in the order and with the messages of every norm."""
    backend = backend_for(x, running_mean, running_var, weight, bias, out)
    xc, result_dtype, stat_dtype = backend.input(x)
    layout = norm.layout(xc.shape, axis, num_groups, what=what)
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
    )


def normalized(
    args: ForwardArguments,
    running: tuple[Any, Any] | None = None,
) -> tuple[Any, CanonicalView, Any, Any, Any]:
    """Normalize ``args.x``: ``(y, canon, mean, var, rstd)``.

    ``running``, when given, is ``(mean, var)`` to normalize with instead of
    the statistics of the input; ``var`` is then None.  The statistics are
    ``(B, C)`` arrays of the backend.
    """
    backend, layout, out = args.backend, args.layout, args.out
    canon = backend.view(args.x, layout.split_shape, layout.roles)
    stats = (
        None if running is None else backend.running_groups(running, canon.shape4[::2], args.eps)
    )
    target = None if out is None else backend.reshaped(out, canon.shape)
    affine = args.weight is not None or args.bias is not None
    inputs = (args.x, args.weight, args.bias, *(running or ()))
    y, mean, var, rstd = backend.normalize(
        canon,
        _param2(backend, layout, args.weight, 1.0, affine),
        _param2(backend, layout, args.bias, 0.0, affine),
        _direct_target(backend, out, target, inputs),
        eps=args.eps,
        centered=args.norm.centered,
        stats=stats,
    )
    y = backend.deliver(y, target, out, layout.shape, args.result_dtype)
    return y, canon, mean, var, rstd


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
) -> tuple[Any, ...]:
    """Any norm's forward: ``(y, *statistics)``, or ``(y,)`` without ``stats``.

    ``input_stats`` normalizes with the input's statistics (and updates the
    running statistics, when given); otherwise with the running ones.
    """
    if not norm.per_channel:
        fast = _trailing_rows_forward(norm, x, weight, bias, axis, eps, out, stats)
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
    y, canon, mean, var, rstd = normalized(
        args, (args.running_mean, args.running_var) if use_running else None
    )
    if (
        isinstance(layout, ChannelLayout)
        and input_stats
        and args.running_mean is not None
        and layout.n_samples
    ):
        args.backend.update_running(
            args.running_mean,
            args.running_var,
            mean,
            var,
            args.momentum,
            layout.count / (layout.count - 1),
        )
    if not stats:
        return (y,)
    return (y, *statistics_out(args, canon, *((mean, rstd) if norm.centered else (rstd,))))


# The weight and bias of a norm without them: one parameter, which the kernels
# apply to the whole row.  Shared between calls, never handed out: the kernels
# only read them.
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_NO_AFFINE = {dtype: (np.ones((1, 1), dtype), np.zeros((1, 1), dtype)) for dtype in _NATIVE_FLOATS}


def _plain_operand(a, dtype, shape):
    """Whether ``a`` is None or a writable C-contiguous ndarray of ``dtype`` and ``shape``."""
    return a is None or (
        type(a) is np.ndarray
        and a.dtype == dtype
        and a.shape == shape
        and a.flags.c_contiguous
        and a.flags.writeable
    )


def _trailing_rows_forward(norm, x, weight, bias, axis, eps, out, stats):
    """Layer or RMS norm over the last axis of a plain array, or None.

    The common case in a framework's loop, a C-contiguous float32/float64
    array normalized over its last axis with parameters and ``out`` of its
    dtype, needs none of the general path's checks and conversions, whose
    Python costs more than the kernel on small arrays.  Anything else
    returns None and takes the general path, which computes the same.
    """
    if not (
        type(x) is np.ndarray
        and x.dtype in _NATIVE_FLOATS
        and x.size
        and x.ndim
        and type(axis) is int
        and (axis == -1 or axis == x.ndim - 1)
        and x.flags.c_contiguous
        and x.flags.writeable
    ):
        return None
    count = x.shape[-1]
    if not (
        _plain_operand(weight, x.dtype, (count,))
        and _plain_operand(bias, x.dtype, (count,))
        and _plain_operand(out, x.dtype, x.shape)
    ):
        return None
    if out is not None and (
        (out is not x and np.may_share_memory(out, x))
        or (weight is not None and np.may_share_memory(out, weight))
        or (bias is not None and np.may_share_memory(out, bias))
    ):
        return None  # the general path tells exact aliasing from overlap
    if eps is None:
        eps = machine_epsilon(x.dtype)
    elif type(eps) is not float or not eps >= 0:
        return None
    if weight is None and bias is None:
        weight2, bias2 = _NO_AFFINE[x.dtype]
    else:
        weight2 = np.ones((1, count), x.dtype) if weight is None else weight.reshape(1, count)
        bias2 = np.zeros((1, count), x.dtype) if bias is None else bias.reshape(1, count)
    y = np.empty_like(x) if out is None else out
    mean, rstd = _engine.normalize_rows(
        x.reshape(-1, count), weight2, bias2, y.reshape(-1, count), eps, norm.centered
    )
    if not stats:
        return (y,)
    return (
        y,
        *(
            s.reshape(x.shape[:-1]).astype(x.dtype)
            for s in ((mean, rstd) if norm.centered else (rstd,))
        ),
    )


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

    def gradients_out(self, dweight2: Any, dbias2: Any) -> tuple[Any, ...]:
        """The parameter gradients as public arrays: ``(dweight, dbias)`` or ``(dweight,)``."""
        dtype = gradient_dtype(self.weight, self.stat_dtype)
        grads = (dweight2, dbias2) if self.norm.bias else (dweight2,)
        return tuple(self.backend.gradient_out(g, self.layout.weight_shape, dtype) for g in grads)


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
    what: str | None = None,
) -> BackwardArguments:
    """Check a backward's arguments; ``stats`` are the forward's, by ``norm.statistics``."""
    backend = backend_for(x, dy, *stats, weight, out)
    xc, result_dtype, stat_dtype = backend.input(x)
    layout = norm.layout(xc.shape, axis, num_groups, what=what or norm.name + "_backward")
    weight = _checked_param(weight, layout.weight_shape, "weight", backend)
    out = _checked_out(out, xc.shape, result_dtype, backend)
    dy = backend.array(dy, "dy")
    if dy.shape != xc.shape:
        raise ValueError(f"dy must have shape {xc.shape}, got {dy.shape}")
    if dy.dtype.kind not in "fiub":
        raise TypeError(f"dy must be a real array, got dtype {dy.dtype}")
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
) -> tuple[Any, ...]:
    """Any norm's backward: ``(dx, dweight, dbias)``, or ``(dx, dweight)`` without a bias.

    ``input_stats`` says whether the forward's statistics came from ``x``
    (and are differentiated through) or were constants.
    """
    args = backward_arguments(norm, dy, x, stats, weight, axis=axis, num_groups=num_groups, out=out)
    backend = args.backend
    direct = _direct_target(
        backend, args.out, args.target, (args.x, args.dy, *args.stats, args.weight)
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
    )
    dx = backend.deliver(dx, args.target, args.out, args.layout.shape, args.result_dtype)
    return (dx, *args.gradients_out(dweight2, dbias2))
