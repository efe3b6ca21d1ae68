"""Public functions: argument checking, axes, dtypes and modes.

The numerical work is in ``_engine.py``; each norm here only says which axes
are kept, reduced or carry the affine parameters, and how its statistics and
running averages are defined.
"""

import functools
import math
import numbers
import warnings

import numpy as np

from . import _engine, _overlap
from ._layout import CanonicalView

# ----------------------------------------------------------------------------
# Argument checking


def _host_array(value, name="x"):
    """A NumPy view of a CPU array of any library, without a copy where it can be.

    NumPy arrays pass through, and subclasses as plain arrays (``np.matrix``,
    ``np.memmap``), as ``np.asarray`` gives them, except masked arrays, whose
    mask the kernels would ignore.  Objects exporting DLPack (PyTorch CPU
    tensors, array-API arrays) are viewed with ``np.from_dlpack``; anything
    else goes through ``np.asarray`` (``__array__``, the buffer protocol,
    sequences).  ``name`` is the argument's name in error messages.
    """
    if type(value) is np.ndarray:
        return value
    if isinstance(value, np.ndarray):
        if isinstance(value, np.ma.MaskedArray):
            raise TypeError(
                f"{name} is a masked array, which numbanorm does not support: pass "
                f"{name}.filled(value) or {name}.data to choose what the masked elements hold")
        return value.view(np.ndarray)
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, TypeError, RuntimeError):
            pass  # a device or dtype NumPy cannot read (bfloat16), or an old protocol version
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{name} cannot be read as a NumPy array: {error}") from error


def _as_input(x):
    """Return ``(x in compute dtype, result dtype, statistics dtype)``."""
    x = _host_array(x)
    kind = x.dtype.kind
    if kind == "f":
        if x.dtype.type is np.float16:
            return x.astype(np.float32), np.dtype(np.float16), np.dtype(np.float32)
        if x.dtype.type is np.float32:
            return x.astype(np.float32, copy=False), np.dtype(np.float32), np.dtype(np.float32)
        return x.astype(np.float64, copy=False), np.dtype(np.float64), np.dtype(np.float64)
    if kind in "iub":
        return x.astype(np.float64), np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"x must be a real floating, integer or boolean array, got dtype {x.dtype}")


def _is_device_array(value):
    """Whether ``value`` is a GPU array (CUDA array interface, or the CUDA simulator's)."""
    kind = type(value)
    if kind is np.ndarray or value is None:
        return False
    if getattr(kind, "__cuda_ndarray__", False):
        return True
    if kind.__module__.startswith("torch"):
        return bool(getattr(value, "is_cuda", False))
    return hasattr(value, "__cuda_array_interface__")


def _backend(x, *arrays):
    """The array operations for ``x``: the host's, or the GPU's for a device array.

    The other (optional) array arguments must live where ``x`` does.
    """
    on_device = _is_device_array(x)
    for value in arrays:
        if value is not None and _is_device_array(value) != on_device:
            where = ("device", "host") if on_device else ("host", "device")
            raise TypeError(
                f"cannot mix host and device arrays in one call: x is a {where[0]} array, "
                f"another argument is a {where[1]} array")
    if not on_device:
        return _HOST
    from . import _cuda
    return _cuda.Device(x)


def cuda_available():
    """Whether the GPU backend can run: a CUDA GPU and driver, or the Numba CUDA simulator.

    Device arrays (CuPy, PyTorch CUDA tensors, Numba device arrays) passed to
    any public function then run on the GPU; the backend needs the
    ``numbanorm[cuda]`` extra (``numba-cuda``) or Numba's own CUDA target.
    """
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # no CUDA target installed, or no usable driver
        return False


def _axis_index(axis, ndim, name="axis"):
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(
            f"{name} {axis} is out of bounds for array of dimension {ndim}")
    return int(axis) % ndim


def _axes_tuple(axis, ndim, name="axis", allow_empty=False):
    """Sorted tuple of non-negative axes from an int or a tuple of ints."""
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if not axes and not allow_empty:
        raise ValueError(f"{name} must name at least one axis, got ()")
    axes = tuple(_axis_index(a, ndim, name) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {name} argument: {axis!r}")
    return tuple(sorted(axes))


def _check_rank(x, min_ndim, what):
    if x.ndim < min_ndim:
        raise ValueError(
            f"{what} expects x with at least {min_ndim} dimensions, got shape {x.shape}")


def _check_eps(eps):
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    return float(eps)


def _check_momentum(momentum):
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return float(momentum)


def _array(value, name, backend=None):
    """``value`` as an array of the backend; on the host, ``name`` is used in errors."""
    if backend is None or backend is _HOST:
        return _host_array(value, name)
    return backend.array(value)


def _param(value, shape, name, backend=None):
    """An optional float parameter array of the given shape (or None)."""
    if value is None:
        return None
    arr = _array(value, name, backend)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def _running_stats(running_mean, running_var, n_channels, updating, backend=None):
    """Validated running statistics, or ``(None, None)``."""
    backend = backend or _HOST
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if running_mean is None:
        return None, None
    stats = []
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if updating:
            backend.check_updatable(value, name)
        stats.append(_param(value, (n_channels,), name, backend))
    return tuple(stats)


def _check_out(out, shape, dtype, backend=None):
    """``out`` checked: an array of the backend's kind, shape and dtype, writable."""
    if out is None:
        return None
    arr = (backend or _HOST).out_array(out)
    if arr.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {arr.shape}")
    if arr.dtype != dtype and arr.dtype.newbyteorder("=") != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {arr.dtype}")
    if not (backend or _HOST).writeable(arr):
        raise ValueError("out must be writable")
    return out


def _check_stat(value, shape, name, backend=None):
    if value is None:
        raise ValueError(f"{name} is required")
    return _param(value, shape, name, backend)


def _run_forward(spec, xc, weight, bias, out, result_dtype, *, eps, centered=True,
                 running=None):
    """Normalize ``xc`` as ``spec`` says.

    ``running``, when given, is ``(running_mean, running_var)`` to normalize
    with instead of the statistics of ``xc``.  Returns ``(y, canon, mean,
    var, rstd)``: ``y`` is ``out`` or a new array of the result dtype, the
    statistics are ``(B, C)`` float64 (``var`` is None with ``running``).
    """
    backend = spec.backend
    canon = spec.view(xc)
    stats = None if running is None else backend.running_groups(running, canon.shape4[::2], eps)
    target = None if out is None else backend.reshaped(out, canon.shape)
    affine = weight is not None or bias is not None
    y, mean, var, rstd = backend.normalize(
        canon, spec.param2(weight, 1.0, affine), spec.param2(bias, 0.0, affine),
        _direct_target(backend, out, target, (xc, weight, bias, *(running or ()))), eps=eps,
        centered=centered, stats=stats, dtype=result_dtype)
    return (backend.deliver(y, target, out, spec.shape, result_dtype), canon, mean, var,
            rstd)


def _direct_target(backend, out, target, inputs):
    """``target`` for the kernels to write, or None when ``out`` overlaps one of ``inputs``.

    The kernels then write a new array, which is copied into ``out``: the
    result is that of separate arrays, as with NumPy's ufuncs.  ``out`` that
    is exactly one of the inputs (the same elements) is written in place.
    """
    if out is not None and _overlap.overlaps_partially(backend.out_array(out), inputs):
        return None
    return target


def _delivered(result, target, out, shape, result_dtype):
    """``result`` shaped ``shape`` in the result dtype, or ``out`` holding it.

    ``target`` is ``out`` as the engine saw it; the engine wrote into it
    unless its layout did not allow that.
    """
    if out is None:
        return result.reshape(shape).astype(result_dtype, copy=False)
    if result is not target:
        target[...] = result
    return out


def _stats_out(spec, canon, stat_dtype, *stats):
    """``(B, C)`` statistics as the public arrays of the norm's statistic shape."""
    return tuple(spec.backend.stats_out(canon, s, spec.stat_axes, stat_dtype) for s in stats)


def _param2(value, shape2, fill):
    """An affine parameter as the kernels' ``(C, W)`` array (a copy): float64 where given.

    None gives ``fill`` everywhere, in float32, which holds it exactly and
    spares a float32 input the cast of a full-size parameter; ``shape2`` may
    then be ``(C, 1)``.
    """
    if value is None:
        return np.full(shape2, fill, np.float32)
    return np.array(value, dtype=np.float64, order="C").reshape(shape2)


# ----------------------------------------------------------------------------
# Axis roles of each norm


class _ChannelAxes:
    """Axis roles of batch, instance and group norm.

    ``x`` is viewed with its channel axis split into ``(groups, channels per
    group)``; batch and instance norm have one channel per group.  Statistics
    are per group (batch norm) or per (sample, group) (``per_sample``).
    """

    def __init__(self, x, axis, *, per_sample, min_ndim, what, num_groups=None, backend=None):
        _check_rank(x, min_ndim, what)
        self.backend = backend or _HOST
        self.shape = x.shape
        self.axis = _axis_index(axis, x.ndim)
        self.channels = x.shape[self.axis]
        if num_groups is None:
            num_groups = self.channels
        elif (not isinstance(num_groups, numbers.Integral) or num_groups < 1
              or self.channels % num_groups):
            raise ValueError(
                f"num_groups must be a positive integer dividing the number of channels "
                f"({self.channels}), got {num_groups!r}")
        self.groups = int(num_groups)
        self.per_group = self.channels // self.groups if self.groups else 1
        self.sample = (1 if self.axis == 0 else 0) if per_sample else None
        reduced = [a for a in range(x.ndim) if a not in (self.axis, self.sample)]
        self.spatial = math.prod(x.shape[a] for a in reduced)
        self.count = self.spatial * self.per_group
        self.n_samples = x.shape[self.sample] if per_sample else 1
        split_shape = x.shape[:self.axis] + (self.groups, self.per_group) + x.shape[self.axis + 1:]
        roles = ["R"] * len(split_shape)
        roles[self.axis] = "C"
        roles[self.axis + 1] = "W"
        self.stat_axes = [self.axis]
        if per_sample:
            split_sample = self.sample + (self.sample > self.axis)
            roles[split_sample] = "S"
            self.stat_axes.insert(0, split_sample)
        self.split_shape = split_shape
        self.roles = "".join(roles)
        self.weight_shape = (self.channels,)
        self.stat_shape = (self.n_samples,) * per_sample + (self.groups,)

    def view(self, xc):
        return self.backend.view(xc, self.split_shape, self.roles)

    def param2(self, value, fill, full=True):
        """A ``(C,)`` weight or bias as ``(groups, channels per group)``.

        Without ``full``, None gives ``(groups, 1)``: one parameter per group,
        which the kernels apply to all of its elements.
        """
        return self.backend.param2(value, (self.groups, self.per_group if full else 1), fill)


class _NormalizedAxes:
    """Axis roles of layer and RMS norm: ``axis`` is normalized together."""

    def __init__(self, x, axis, backend=None):
        self.backend = backend or _HOST
        self.shape = x.shape
        self.axes = _axes_tuple(axis, x.ndim)
        self.roles = "".join("W" if a in self.axes else "S" for a in range(x.ndim))
        self.weight_shape = tuple(x.shape[a] for a in self.axes)
        self.count = math.prod(self.weight_shape)
        if self.count == 0:
            raise ValueError(
                f"cannot normalize over an empty set: axis {axis!r} of an array of shape "
                f"{x.shape}")
        self.stat_axes = [a for a in range(x.ndim) if a not in self.axes]
        self.stat_shape = tuple(x.shape[a] for a in self.stat_axes)

    def view(self, xc):
        return self.backend.view(xc, self.shape, self.roles)

    def param2(self, value, fill, full=True):
        """The weight or bias as a ``(1, normalized size)`` array (``(1, 1)`` if not ``full``)."""
        return self.backend.param2(value, (1, self.count if full else 1), fill)


def _grad_dtype(weight, stat_dtype):
    if weight is not None and weight.dtype.kind == "f":
        return weight.dtype
    return stat_dtype


def _backward(spec, dy, x_dtypes, mean, rstd, weight, out, *, stats_from_input, centered):
    """Shared tail of every ``*_backward``: shapes checked, kernels run, dtypes set.

    ``x_dtypes`` is what :func:`_as_input` returned for ``x``; ``out``, when
    given, receives ``dx``.
    """
    xc, result_dtype, stat_dtype = x_dtypes
    backend = spec.backend
    weight = _param(weight, spec.weight_shape, "weight", backend)
    out = _check_out(out, xc.shape, result_dtype, backend)
    dy = _array(dy, "dy", backend)
    if dy.shape != xc.shape:
        raise ValueError(f"dy must have shape {xc.shape}, got {dy.shape}")
    if dy.dtype.kind not in "fiub":
        raise TypeError(f"dy must be a real array, got dtype {dy.dtype}")
    names = ("mean", "rstd") if centered else ("rrms",)
    given = (mean, rstd) if centered else (rstd,)
    stats = [_check_stat(value, spec.stat_shape, name, backend)
             for value, name in zip(given, names)]
    canon = spec.view(xc)
    rstd2 = canon.stats_from_axes(stats[-1], spec.stat_axes)
    mean2 = (canon.stats_from_axes(stats[0], spec.stat_axes) if centered
             else backend.group_zeros(canon))
    target = None if out is None else backend.reshaped(out, canon.shape)
    # A weight of ones the size of the parameters, also without one: dweight
    # and dbias have one entry per parameter.
    dx, dweight2, dbias2 = backend.backward(
        canon, backend.reshaped(dy, canon.shape), mean2, rstd2, spec.param2(weight, 1.0),
        stats_from_input, centered, out=_direct_target(backend, out, target,
                                                       (xc, dy, *stats, weight)),
        dtype=result_dtype)
    dx = backend.deliver(dx, target, out, spec.shape, result_dtype)
    grad_dtype = _grad_dtype(weight, stat_dtype)
    return (dx, *(backend.gradient_out(g, spec.weight_shape, grad_dtype)
                  for g in (dweight2, dbias2)))


# ----------------------------------------------------------------------------
# batch norm and instance norm


def _channel_arguments(x, running_mean, running_var, weight, bias, out=None, *, axis,
                       per_sample, what, eps, momentum, updating):
    """The checked arguments of a batch or instance norm forward.

    Returns ``(spec, xc, result dtype, statistics dtype, weight, bias,
    running_mean, running_var, eps, momentum)``; ``out`` only takes part in
    choosing the backend.
    """
    backend = _backend(x, running_mean, running_var, weight, bias, out)
    xc, result_dtype, stat_dtype = backend.input(x)
    spec = _ChannelAxes(xc, axis, per_sample=per_sample, min_ndim=3 if per_sample else 2,
                        what=what, backend=backend)
    C = spec.channels
    weight = _param(weight, (C,), "weight", backend)
    bias = _param(bias, (C,), "bias", backend)
    eps = _check_eps(eps)
    momentum = _check_momentum(momentum)
    running_mean, running_var = _running_stats(running_mean, running_var, C, updating, backend)
    return (spec, xc, result_dtype, stat_dtype, weight, bias, running_mean, running_var, eps,
            momentum)


def _channel_forward(x, running_mean, running_var, weight, bias, *, from_input, momentum,
                     eps, axis, out, per_sample, what, stats=True):
    """Forward of batch norm (``per_sample=False``) and instance norm.

    Returns ``(y, mean, rstd)``, or ``(y,)`` without ``stats``.
    """
    (spec, xc, result_dtype, stat_dtype, weight, bias, running_mean, running_var, eps,
     momentum) = _channel_arguments(x, running_mean, running_var, weight, bias, out,
                                    axis=axis, per_sample=per_sample, what=what, eps=eps,
                                    momentum=momentum, updating=from_input)
    backend = spec.backend
    out = _check_out(out, xc.shape, result_dtype, backend)
    if from_input:
        _overlap.check_disjoint((("out", None if out is None else backend.out_array(out)),
                                 ("running_mean", running_mean), ("running_var", running_var)))
        if per_sample and spec.spatial <= 1:
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {xc.shape}")
        if not per_sample and spec.count <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {xc.shape}")
    elif running_mean is None:
        raise ValueError(
            f"{what} without input statistics needs running_mean and running_var")
    y, canon, mean, var, rstd = _run_forward(
        spec, xc, weight, bias, out, result_dtype, eps=eps,
        running=None if from_input else (running_mean, running_var))
    if from_input and running_mean is not None and spec.n_samples:
        backend.update_running(running_mean, running_var, mean, var, momentum,
                               spec.count / (spec.count - 1))
    return (y, *_stats_out(spec, canon, stat_dtype, mean, rstd)) if stats else (y,)


def batch_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                       training=True, momentum=0.1, eps=1e-5, axis=1):
    """Batch normalization, returning the statistics the backward needs.

    Normalizes each channel over all other axes.  Unlike
    ``torch.nn.functional.batch_norm``, ``training`` defaults to True.

    Parameters
    ----------
    x : array_like
        Input of at least two dimensions.
    running_mean, running_var : ndarray, optional
        ``(C,)`` float arrays.  In training they are updated in place:
        ``running = (1 - momentum) * running + momentum * batch_stat``, with the
        unbiased batch variance.  Required when ``training`` is False.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters.
    training : bool, optional
        Normalize with the batch statistics (True) or the running ones.
    momentum : float, optional
        Weight of the new batch statistic in the running average (PyTorch's
        convention; Keras/Flax's ``momentum`` is ``1 - momentum``).
    eps : float, optional
        Added to the variance.
    axis : int, optional
        Channel axis: 1 for NCHW-style data, -1 for channels-last.

    Returns
    -------
    y : ndarray
        Result dtype of ``x`` (float16 stays float16, integers give float64).
    mean, rstd : ndarray
        ``(C,)`` statistics used, ``rstd = 1 / sqrt(var + eps)``; the running
        statistics in evaluation mode.
    """
    return _channel_forward(x, running_mean, running_var, weight, bias, from_input=training,
                            momentum=momentum, eps=eps, axis=axis, out=None, per_sample=False,
                            what="batch_norm")


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
               training=True, momentum=0.1, eps=1e-5, axis=1, out=None):
    """Batch normalization; see :func:`batch_norm_forward` for the parameters.

    ``out``, when given, receives the result (it may be ``x``) and is returned.
    ``training`` defaults to True, unlike ``torch.nn.functional.batch_norm``.
    """
    return _channel_forward(x, running_mean, running_var, weight, bias, from_input=training,
                            momentum=momentum, eps=eps, axis=axis, out=out, per_sample=False,
                            what="batch_norm", stats=False)[0]


def batch_norm_backward(dy, x, mean, rstd, weight=None, *, training=True, axis=1, out=None):
    """Gradients of batch normalization.

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and the forward's input.
    mean, rstd : array_like
        ``(C,)`` statistics returned by :func:`batch_norm_forward`.
    weight : array_like, optional
        ``(C,)`` weight used in the forward.
    training : bool, optional
        Whether the forward used batch statistics (they then depend on ``x``);
        with False they are treated as constants.
    axis : int, optional
        Channel axis.
    out : ndarray, optional
        Receives ``dx`` (it may be ``dy`` or ``x``) and is returned; like the
        forward's ``out=``, it spares a fresh allocation in a training loop.

    Returns
    -------
    dx : ndarray
        Result dtype of ``x``.
    dweight, dbias : ndarray
        ``(C,)`` gradients of an affine weight and bias (also when ``weight``
        is None), in ``weight``'s dtype or the statistics dtype.
    """
    return _channel_backward(dy, x, mean, rstd, weight, training, axis, out, per_sample=False,
                             what="batch_norm_backward")


def _channel_backward(dy, x, mean, rstd, weight, from_input, axis, out, *, per_sample, what,
                      num_groups=None):
    backend = _backend(x, dy, mean, rstd, weight, out)
    x_dtypes = backend.input(x)
    spec = _ChannelAxes(x_dtypes[0], axis, per_sample=per_sample, num_groups=num_groups,
                        min_ndim=3 if per_sample and num_groups is None else 2, what=what,
                        backend=backend)
    return _backward(spec, dy, x_dtypes, mean, rstd, weight, out, stats_from_input=from_input,
                     centered=True)


def instance_norm_forward(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                          use_input_stats=True, momentum=0.1, eps=1e-5, axis=1):
    """Instance normalization, returning the statistics the backward needs.

    Normalizes each (sample, channel) over the spatial axes.  The sample axis
    is axis 0, or axis 1 when ``axis`` is 0.

    Parameters
    ----------
    x : array_like
        Input of at least three dimensions.
    running_mean, running_var : ndarray, optional
        ``(C,)`` running statistics, updated in place with the per-instance
        statistics averaged over the batch when ``use_input_stats``.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters.
    use_input_stats : bool, optional
        Normalize with the instance statistics (True) or the running ones.
    momentum, eps : float, optional
        As in :func:`batch_norm_forward`.
    axis : int, optional
        Channel axis.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        ``(N, C)`` statistics used (the running statistics broadcast to
        ``(N, C)`` when ``use_input_stats`` is False).
    """
    return _channel_forward(x, running_mean, running_var, weight, bias,
                            from_input=use_input_stats, momentum=momentum, eps=eps, axis=axis,
                            out=None, per_sample=True, what="instance_norm")


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                  use_input_stats=True, momentum=0.1, eps=1e-5, axis=1, out=None):
    """Instance normalization; see :func:`instance_norm_forward`."""
    return _channel_forward(x, running_mean, running_var, weight, bias,
                            from_input=use_input_stats, momentum=momentum, eps=eps, axis=axis,
                            out=out, per_sample=True, what="instance_norm", stats=False)[0]


def instance_norm_backward(dy, x, mean, rstd, weight=None, *, use_input_stats=True, axis=1,
                           out=None):
    """Gradients of instance normalization (``mean``, ``rstd``: ``(N, C)``).

    Returns ``dx``, and ``(C,)`` ``dweight`` and ``dbias``; see
    :func:`batch_norm_backward`, also for ``out``.
    """
    return _channel_backward(dy, x, mean, rstd, weight, use_input_stats, axis, out,
                             per_sample=True, what="instance_norm_backward")


# ----------------------------------------------------------------------------
# group norm


def group_norm_forward(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1):
    """Group normalization, returning the statistics the backward needs.

    The channels are split into ``num_groups`` groups of consecutive channels;
    each (sample, group) is normalized over its channels and the spatial axes.

    Parameters
    ----------
    x : array_like
        Input of at least two dimensions.
    num_groups : int
        Number of groups; must divide the number of channels.
    weight, bias : array_like, optional
        ``(C,)`` per-channel affine parameters.
    eps : float, optional
        Added to the variance.
    axis : int, optional
        Channel axis; the sample axis is axis 0 (axis 1 when ``axis`` is 0).

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        ``(N, num_groups)`` statistics.
    """
    return _group_forward(x, num_groups, weight, bias, eps, axis, None)


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1, out=None):
    """Group normalization; see :func:`group_norm_forward`."""
    return _group_forward(x, num_groups, weight, bias, eps, axis, out, stats=False)[0]


def _group_forward(x, num_groups, weight, bias, eps, axis, out, stats=True):
    backend = _backend(x, weight, bias, out)
    xc, result_dtype, stat_dtype = backend.input(x)
    spec = _ChannelAxes(xc, axis, per_sample=True, num_groups=num_groups, min_ndim=2,
                        what="group_norm", backend=backend)
    weight = _param(weight, (spec.channels,), "weight", backend)
    bias = _param(bias, (spec.channels,), "bias", backend)
    eps = _check_eps(eps)
    out = _check_out(out, xc.shape, result_dtype, backend)
    if spec.count == 0:
        raise ValueError(f"cannot normalize over an empty set: input of shape {xc.shape}")
    y, canon, mean, _, rstd = _run_forward(spec, xc, weight, bias, out, result_dtype, eps=eps)
    return (y, *_stats_out(spec, canon, stat_dtype, mean, rstd)) if stats else (y,)


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, axis=1, out=None):
    """Gradients of group normalization (``mean``, ``rstd``: ``(N, num_groups)``).

    Returns ``dx``, and ``(C,)`` ``dweight`` and ``dbias``; see
    :func:`batch_norm_backward`, also for ``out``.
    """
    return _channel_backward(dy, x, mean, rstd, weight, True, axis, out, per_sample=True,
                             num_groups=num_groups, what="group_norm_backward")


# ----------------------------------------------------------------------------
# layer norm and RMS norm


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=None)
def _machine_epsilon(dtype):
    return float(np.finfo(dtype).eps)


# The weight and bias of a norm without them: one parameter, which the kernels
# apply to the whole row.  Shared between calls, never handed out: the kernels
# only read them.
_NO_AFFINE = {dtype: (np.ones((1, 1), dtype), np.zeros((1, 1), dtype))
              for dtype in _NATIVE_FLOATS}


def _plain_operand(a, dtype, shape):
    """Whether ``a`` is None or a writable C-contiguous ndarray of ``dtype`` and ``shape``."""
    return a is None or (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
                         and a.flags.c_contiguous and a.flags.writeable)


def _trailing_rows_forward(x, weight, bias, axis, eps, out, centered, stats):
    """Layer or RMS norm over the last axis of a plain array, or None.

    The common case in a framework's loop, a C-contiguous float32/float64
    array normalized over its last axis with parameters and ``out`` of its
    dtype, needs none of the general path's checks and conversions, whose
    Python costs more than the kernel on small arrays.  Anything else
    returns None and takes the general path, which computes the same.
    """
    if not (type(x) is np.ndarray and x.dtype in _NATIVE_FLOATS and x.size and x.ndim
            and type(axis) is int and (axis == -1 or axis == x.ndim - 1)
            and x.flags.c_contiguous and x.flags.writeable):
        return None
    count = x.shape[-1]
    if not (_plain_operand(weight, x.dtype, (count,)) and _plain_operand(bias, x.dtype, (count,))
            and _plain_operand(out, x.dtype, x.shape)):
        return None
    if out is not None and ((out is not x and np.may_share_memory(out, x))
                            or (weight is not None and np.may_share_memory(out, weight))
                            or (bias is not None and np.may_share_memory(out, bias))):
        return None  # the general path tells exact aliasing from overlap
    if eps is None:
        eps = _machine_epsilon(x.dtype)
    elif type(eps) is not float or not eps >= 0:
        return None
    if weight is None and bias is None:
        weight2, bias2 = _NO_AFFINE[x.dtype]
    else:
        weight2 = np.ones((1, count), x.dtype) if weight is None else weight.reshape(1, count)
        bias2 = np.zeros((1, count), x.dtype) if bias is None else bias.reshape(1, count)
    y = np.empty_like(x) if out is None else out
    mean, rstd = _engine.normalize_rows(x.reshape(-1, count), weight2, bias2,
                                        y.reshape(-1, count), eps, centered)
    if not stats:
        return (y,)
    return (y, *(s.reshape(x.shape[:-1]).astype(x.dtype) for s in ((mean, rstd) if centered
                                                                     else (rstd,))))


def _normalized_forward(x, weight, bias, axis, eps, out, centered, stats=True):
    fast = _trailing_rows_forward(x, weight, bias, axis, eps, out, centered, stats)
    if fast is not None:
        return fast
    backend = _backend(x, weight, bias, out)
    xc, result_dtype, stat_dtype = backend.input(x)
    spec = _NormalizedAxes(xc, axis, backend)
    weight = _param(weight, spec.weight_shape, "weight", backend)
    bias = _param(bias, spec.weight_shape, "bias", backend)
    if eps is None:
        eps = np.finfo(result_dtype).eps
    eps = _check_eps(eps)
    out = _check_out(out, xc.shape, result_dtype, backend)
    y, canon, mean, _, rstd = _run_forward(spec, xc, weight, bias, out, result_dtype, eps=eps,
                                           centered=centered)
    if not stats:
        return (y,)
    return (y, *_stats_out(spec, canon, stat_dtype, *((mean, rstd) if centered else (rstd,))))


def layer_norm_forward(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    """Layer normalization, returning the statistics the backward needs.

    Parameters
    ----------
    x : array_like
        Input.
    weight, bias : array_like, optional
        Affine parameters of shape ``tuple(x.shape[a] for a in sorted(axes))``.
    axis : int or tuple of ints, optional
        Normalized axes, anywhere in ``x`` (trailing axes avoid a copy).
    eps : float, optional
        Added to the variance.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        Statistics shaped like ``x`` without the normalized axes.
    """
    return _normalized_forward(x, weight, bias, axis, eps, None, centered=True)


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None):
    """Layer normalization; see :func:`layer_norm_forward`."""
    return _normalized_forward(x, weight, bias, axis, eps, out, centered=True, stats=False)[0]


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of layer normalization.

    Returns ``dx``, and ``dweight`` and ``dbias`` shaped like the weight;
    ``out`` receives ``dx`` as in :func:`batch_norm_backward`.
    """
    backend = _backend(x, dy, mean, rstd, weight, out)
    x_dtypes = backend.input(x)
    spec = _NormalizedAxes(x_dtypes[0], axis, backend)
    return _backward(spec, dy, x_dtypes, mean, rstd, weight, out, stats_from_input=True,
                     centered=True)


def rms_norm_forward(x, weight=None, *, axis=-1, eps=None):
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * weight``.

    Parameters
    ----------
    x : array_like
        Input.
    weight : array_like, optional
        Shaped like layer norm's weight.
    axis : int or tuple of ints, optional
        Normalized axes.
    eps : float, optional
        None means ``np.finfo(result dtype).eps``, as in PyTorch for float32
        and float64; float16 input uses float16's eps (PyTorch's CPU kernel
        uses float32's there).

    Returns
    -------
    y : ndarray
    rrms : ndarray
        ``1 / sqrt(mean(x**2) + eps)``, shaped like ``x`` without the
        normalized axes.
    """
    return _normalized_forward(x, weight, None, axis, eps, None, centered=False)


def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
    """RMS normalization; see :func:`rms_norm_forward`."""
    return _normalized_forward(x, weight, None, axis, eps, out, centered=False,
                               stats=False)[0]


def rms_norm_backward(dy, x, rrms, weight=None, *, axis=-1, out=None):
    """Gradients of RMS normalization: ``dx`` (into ``out`` when given) and ``dweight``."""
    backend = _backend(x, dy, rrms, weight, out)
    x_dtypes = backend.input(x)
    spec = _NormalizedAxes(x_dtypes[0], axis, backend)
    dx, dweight, _ = _backward(spec, dy, x_dtypes, None, rrms, weight, out,
                               stats_from_input=True, centered=False)
    return dx, dweight


# ----------------------------------------------------------------------------
# moments


def moments(x, axis=None, *, ddof=0, keepdims=False):
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

    Returns
    -------
    mean, var : ndarray or scalar
        NumPy's result dtype: float16 for float16 input, float32 for float32,
        float64 otherwise.  A full reduction without ``keepdims`` gives NumPy
        scalars.
    """
    backend = _backend(x)
    xc, result_dtype, _ = backend.input(x)
    axes = (tuple(range(xc.ndim)) if axis is None
            else _axes_tuple(axis, xc.ndim, allow_empty=True))
    count = math.prod(xc.shape[a] for a in axes)
    if count == 0:
        warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=2)
    dof = count - ddof
    if dof <= 0 and count:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
    return backend.moments(xc, axes, dof, keepdims, result_dtype)


def _host_moments(xc, axes, dof, keepdims, result_dtype):
    """The end of :func:`moments` on the host: NumPy scalars for full reductions."""
    _, mean, m2 = welford_state(xc, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / max(dof, 0)
    results = []
    for stat in (mean, var):
        if keepdims:
            stat = np.expand_dims(stat, axes)
        stat = np.array(stat, dtype=result_dtype)
        results.append(stat[()] if stat.ndim == 0 else stat)
    return tuple(results)


def welford_state(x, axes):
    """``(count, mean, M2)`` of ``x`` reduced over ``axes``, statistics in float64.

    ``x`` is a float array as :func:`_as_input` returns it; ``mean`` and
    ``M2`` have the shape of the kept axes (NaN when ``count`` is 0).  This
    is :func:`moments` before rounding to the result dtype, the state that
    :class:`numbanorm.Moments` merges.
    """
    roles = "".join("R" if a in axes else "K" for a in range(x.ndim))
    kept = [a for a in range(x.ndim) if a not in axes]
    count = math.prod(x.shape[a] for a in axes)
    canon = CanonicalView(x, roles)
    if count == 0:
        mean = np.full(canon.shape4[::2], np.nan)
        m2 = mean.copy()
    else:
        mean, m2 = _engine.group_moments(canon)
    return count, canon.stats_to_axes(mean, kept), canon.stats_to_axes(m2, kept)


class _Host:
    """The API layer's array operations on the host: NumPy arrays, ``_engine`` kernels."""

    input = staticmethod(_as_input)
    array = staticmethod(_host_array)
    param2 = staticmethod(_param2)
    deliver = staticmethod(_delivered)
    moments = staticmethod(_host_moments)

    @staticmethod
    def out_array(out):
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        return _host_array(out, "out")

    @staticmethod
    def writeable(a):
        return a.flags.writeable

    @staticmethod
    def check_updatable(value, name):
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise TypeError(
                f"{name} must be a floating-point numpy array to be updated in place, "
                f"got {type(value).__name__}")
        if not value.flags.writeable:
            raise ValueError(f"{name} must be writable to be updated in place")

    @staticmethod
    def reshaped(a, shape):
        # np.asarray: an ``out`` of a subclass (np.matrix) is written through a plain view
        return np.asarray(a).reshape(shape)

    @staticmethod
    def view(xc, shape, roles):
        return CanonicalView(xc.reshape(shape), roles)

    @staticmethod
    def running_groups(running, shape2, eps):
        mean, var = (np.broadcast_to(np.asarray(s, np.float64), shape2).copy() for s in running)
        return mean, 1.0 / np.sqrt(var + eps)

    @staticmethod
    def normalize(canon, weight2, bias2, out, *, eps, centered, stats, dtype):
        return _engine.normalize(canon, weight2, bias2, out, eps=eps, centered=centered,
                                 stats=stats)

    @staticmethod
    def backward(canon, dy, mean, rstd, weight2, stats_from_input, centered, *, out, dtype):
        return _engine.backward(canon, dy, mean, rstd, weight2, stats_from_input, centered,
                                out=out)

    @staticmethod
    def stats_out(canon, stat, axes, dtype):
        return canon.stats_to_axes(stat, axes).astype(dtype)

    @staticmethod
    def group_zeros(canon):
        return np.zeros(canon.shape4[::2])

    @staticmethod
    def update_running(running_mean, running_var, mean, var, momentum, unbias):
        for running, stat in ((running_mean, mean), (running_var, var * unbias)):
            running[...] = (1 - momentum) * running + momentum * stat.mean(axis=0)

    @staticmethod
    def gradient_out(g2, shape, dtype):
        return g2.reshape(shape).astype(dtype)

    welford_state = staticmethod(welford_state)

    @staticmethod
    def to_host(a):
        return a

    @staticmethod
    def from_host(a):
        return a

    @staticmethod
    def parameter_sums(canon, dy, mean, rstd, weight2):
        return _engine.gradient_sums(canon, dy, mean, rstd, weight2)[2:]

    @staticmethod
    def input_gradient(canon, dy, mean, rstd, weight2, group_g, group_gxhat, count, dtype):
        return _engine.input_gradient(canon, dy, mean, rstd, weight2, group_g,
                                      group_gxhat / rstd, count)


_HOST = _Host()
