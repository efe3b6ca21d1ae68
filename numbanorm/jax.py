"""numbanorm's kernels as JAX functions, differentiable with ``jax.custom_vjp``.

Each function calls numbanorm from inside the JAX computation, so it works
eagerly and under ``jax.jit``, ``jax.grad`` and ``jax.vmap``: when a gradient
is taken, its forward pass calls numbanorm's ``*_forward`` function, which
also returns the statistics that the backward pass hands to ``*_backward``;
otherwise it calls the plain function (the same kernels, with no statistics
to return).  The arguments are those of numbanorm's functions without
``out``; batch and instance norm return their updated running statistics
instead of updating them in place, with PyTorch's ``momentum`` (the weight
of the new batch statistic: Flax's ``momentum=0.99`` is ``momentum=0.01``
here).

- On the CPU the call is ``jax.experimental.buffer_callback``, an XLA FFI
  call into Python that hands over XLA's own buffers: numbanorm reads the
  inputs where they are and writes ``y`` and ``dx`` into the results through
  ``out=``, without copies.  On other platforms (and with a JAX without
  ``buffer_callback``) it is ``jax.pure_callback``, which copies the inputs
  to host memory and the results back.
- Gradients flow to ``x``, ``weight`` and ``bias``.  Running statistics are
  constants (``jax.lax.stop_gradient``): their gradient is zero, also in
  evaluation mode, where they normalize ``x``.  ``eps``, ``momentum``,
  ``axis``, ``num_groups``, ``training`` and ``use_input_stats`` are static
  Python values.
- ``y`` has the dtype of ``x``, as in numbanorm.  float16, float32 and float64
  are computed as numbanorm computes them; other floating types (bfloat16)
  are computed in float32 and rounded back; integer and boolean input becomes
  JAX's default float type.
- ``jax.vmap`` works over any argument.  Under ``vmap``, layer and RMS norm
  with unbatched ``weight`` and ``bias`` normalize the whole batch in one
  kernel call; everything else (batched parameters, batch, instance and group
  norm, every backward, since parameter gradients are per batch element)
  calls the kernel once per batch element.  Batch statistics never mix batch
  elements: ``vmap`` of ``batch_norm`` normalizes each element with its own
  statistics, as ``vmap`` of a pure-``jax.numpy`` batch norm does.
- Not supported: forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``,
  ``jax.hessian``) and differentiating the gradient again, since
  ``jax.custom_vjp`` defines reverse mode only and the backward is a kernel
  call; both raise.  Errors in the arguments raise when the function is
  called or traced, never inside the callback.
"""

import dataclasses
import functools

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ModuleNotFoundError as error:
    if error.name is None or error.name.partition(".")[0] not in ("jax", "jaxlib"):
        raise
    raise ImportError(
        'numbanorm.jax needs JAX; install it with: pip install "numbanorm[jax]"') from error

try:
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # a JAX without it: every platform copies through pure_callback
    _buffer_callback = None

from . import _api

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]

# The floating dtypes numbanorm takes and returns as they are.
_HOST_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------
# The norms as the host sees them


def _copy_into(outs, values):
    """Copy each array of ``values`` into the array of ``outs`` (None: nothing)."""
    for out, value in zip(outs, values):
        if out is not None:
            np.copyto(out, value)


@dataclasses.dataclass(frozen=True)
class _RowNorm:
    """Layer norm (``centered``) or RMS norm over ``axes`` (non-negative, sorted)."""

    axes: tuple
    eps: float
    centered: bool
    stat_shape: tuple
    merges_batch = True
    updates_running_stats = False

    def forward(self, outs, x, weight, bias, running_mean, running_var, *, stats,
                batch_ndim=0):
        """Write ``y`` (and the statistics) into ``outs``, as :func:`_forward` lays it out.

        ``batch_ndim`` leading axes of ``x`` are more rows.
        """
        y_out, stat_outs, _, _ = outs
        axes = tuple(a + batch_ndim for a in self.axes)
        # A single axis as an int: numbanorm's fast path for the last axis takes only that.
        options = dict(axis=axes[0] if len(axes) == 1 else axes, eps=self.eps)
        params = (weight, bias) if self.centered else (weight,)
        if not stats:
            plain = _api.layer_norm if self.centered else _api.rms_norm
            plain(x, *params, **options, out=y_out)
            return
        forward = _api.layer_norm_forward if self.centered else _api.rms_norm_forward
        y, *statistics = forward(x, *params, **options)
        _copy_into((y_out, *stat_outs), (y, *statistics))

    def backward(self, outs, dy, x, stats, weight):
        """Write ``(dx, dweight, dbias)`` into ``outs``."""
        dx_out, *param_outs = outs
        axis = self.axes[0] if len(self.axes) == 1 else self.axes
        backward = _api.layer_norm_backward if self.centered else _api.rms_norm_backward
        _, *param_grads = backward(dy, x, *stats, weight, axis=axis, out=dx_out)
        _copy_into(param_outs, param_grads)


@dataclasses.dataclass(frozen=True)
class _ChannelNorm:
    """Batch, instance or group norm (``kind``) with channel axis ``axis``.

    ``from_input`` is ``training`` or ``use_input_stats`` (always True for
    group norm).
    """

    kind: str
    axis: int
    eps: float
    momentum: float
    from_input: bool
    num_groups: int
    stat_shape: tuple
    merges_batch = False
    centered = True

    @property
    def updates_running_stats(self):
        return self.from_input

    def forward(self, outs, x, weight, bias, running_mean, running_var, *, stats):
        """Write ``y``, the statistics and the new running statistics into ``outs``."""
        y_out, stat_outs, mean_out, var_out = outs
        if self.kind == "group":
            function = _api.group_norm_forward if stats else _api.group_norm
            arguments = (x, self.num_groups, weight, bias)
            options = dict(eps=self.eps, axis=self.axis)
        else:
            if mean_out is not None:  # numbanorm updates them in place
                _copy_into((mean_out, var_out), (running_mean, running_var))
                running_mean, running_var = mean_out, var_out
            if self.kind == "batch":
                function = _api.batch_norm_forward if stats else _api.batch_norm
                mode = dict(training=self.from_input)
            else:
                function = _api.instance_norm_forward if stats else _api.instance_norm
                mode = dict(use_input_stats=self.from_input)
            arguments = (x, running_mean, running_var, weight, bias)
            options = dict(mode, momentum=self.momentum, eps=self.eps, axis=self.axis)
        if not stats:
            function(*arguments, **options, out=y_out)
            return
        _copy_into((y_out, *stat_outs), function(*arguments, **options))

    def backward(self, outs, dy, x, stats, weight):
        """Write ``(dx, dweight, dbias)`` into ``outs``."""
        dx_out, *param_outs = outs
        if self.kind == "group":
            _, *param_grads = _api.group_norm_backward(dy, x, self.num_groups, *stats, weight,
                                                       axis=self.axis, out=dx_out)
        elif self.kind == "batch":
            _, *param_grads = _api.batch_norm_backward(
                dy, x, *stats, weight, training=self.from_input, axis=self.axis, out=dx_out)
        else:
            _, *param_grads = _api.instance_norm_backward(
                dy, x, *stats, weight, use_input_stats=self.from_input, axis=self.axis,
                out=dx_out)
        _copy_into(param_outs, param_grads)


@dataclasses.dataclass(frozen=True)
class _HostCall:
    """A norm's host computation, as a JAX callback calls it.

    ``direction`` is ``"apply"`` (``y`` alone, when no gradient is taken),
    ``"forward"`` (``y`` and the statistics the backward needs) or
    ``"backward"``.  With ``in_place``, it is a ``buffer_callback``: called
    with XLA's result buffers, which the norm writes into (``y`` and ``dx``
    directly through numbanorm's ``out=``); otherwise a ``pure_callback``
    that returns new arrays.  Equal calls compare equal, so that JAX reuses
    what it compiled for an eager call instead of compiling it again.

    Under ``vmap`` (``vmap_method="expand_dims"``) every argument arrives
    with the same number of extra leading axes, of full size where it is
    batched and size 1 where it is not; ``core_ndim`` is the dimension of
    the first argument without them.  A norm with ``merges_batch`` treats
    leading axes of ``x`` as more rows when no other argument is batched;
    otherwise it runs once per batch element.
    """

    norm: object
    direction: str
    result_specs: tuple
    core_ndim: int
    in_place: bool

    def __call__(self, *args):
        if self.in_place:
            _, outs, *args = args  # the execution context is for GPU streams
            args = jax.tree.map(np.asarray, args)
            self._run(jax.tree.map(np.asarray, outs), args, self._batch_shape(args))
            return None
        args = jax.tree.map(np.asarray, args)
        batch_shape = self._batch_shape(args)
        outs = jax.tree.map(lambda spec: np.empty(batch_shape + spec.shape, spec.dtype),
                            self.result_specs)
        self._run(outs, args, batch_shape)
        return outs

    def _batch_shape(self, args):
        batch_ndim = args[0].ndim - self.core_ndim
        if batch_ndim == 0:
            return ()
        return np.broadcast_shapes(*(leaf.shape[:batch_ndim] for leaf in jax.tree.leaves(args)))

    def _run(self, outs, args, batch_shape):
        if self.direction == "backward":
            function = self.norm.backward
        else:
            function = functools.partial(self.norm.forward, stats=self.direction == "forward")
        batch_ndim = len(batch_shape)
        if batch_ndim == 0:
            function(outs, *args)
            return
        unbatched = (1,) * batch_ndim
        if (self.direction != "backward" and self.norm.merges_batch
                and all(leaf.shape[:batch_ndim] == unbatched
                        for leaf in jax.tree.leaves(args[1:]))):
            x = np.broadcast_to(args[0], batch_shape + args[0].shape[batch_ndim:])
            rest = jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[batch_ndim:]), args[1:])
            function(outs, x, *rest, batch_ndim=batch_ndim)
            return
        for index in np.ndindex(batch_shape):
            element = jax.tree.map(
                lambda leaf: leaf[tuple(i if n > 1 else 0 for i, n in zip(index, leaf.shape))],
                args)
            function(jax.tree.map(lambda out: out[index], outs), *element)


# ----------------------------------------------------------------------------
# The differentiable core shared by every norm


def _on_host(norm, direction, result_specs, core_ndim, *args):
    """Run ``norm``'s host computation on ``args`` in a compiled JAX computation.

    On the CPU, ``buffer_callback`` hands numbanorm XLA's own buffers, with
    no copies; on other platforms (and with a JAX that lacks it)
    ``pure_callback`` copies the arguments to host arrays and the results
    back.
    """
    def copying(*args):
        call = _HostCall(norm, direction, result_specs, core_ndim, in_place=False)
        return jax.pure_callback(call, result_specs, *args, vmap_method="expand_dims")

    if _buffer_callback is None:
        return copying(*args)

    def in_place(*args):
        call = _HostCall(norm, direction, result_specs, core_ndim, in_place=True)
        return _buffer_callback(call, result_specs, vmap_method="expand_dims")(*args)

    return jax.lax.platform_dependent(*args, cpu=in_place, default=copying)


def _stat_dtype(x):
    return jnp.float64 if x.dtype == np.float64 else jnp.float32


def _spec(array):
    return None if array is None else jax.ShapeDtypeStruct(array.shape, array.dtype)


def _forward(norm, x, weight, bias, running_mean, running_var, *, stats):
    """``(y, statistics or None, new running mean, new running variance)``."""
    stat = jax.ShapeDtypeStruct(norm.stat_shape, _stat_dtype(x))
    updates = norm.updates_running_stats
    result_specs = (_spec(x), ((stat, stat) if norm.centered else (stat,)) if stats else None,
                    _spec(running_mean) if updates else None,
                    _spec(running_var) if updates else None)
    return _on_host(norm, "forward" if stats else "apply", result_specs, x.ndim,
                    x, weight, bias, running_mean, running_var)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _normalize(norm, x, weight, bias, running_mean, running_var):
    """``(y, new running mean, new running variance)``; the last two None unless updated."""
    y, _, new_mean, new_var = _forward(norm, x, weight, bias, running_mean, running_var,
                                       stats=False)
    return y, new_mean, new_var


def _normalize_fwd(norm, x, weight, bias, running_mean, running_var):
    y, stats, new_mean, new_var = _forward(norm, x, weight, bias, running_mean, running_var,
                                           stats=True)
    return (y, new_mean, new_var), (x, weight, bias, stats, running_mean, running_var)


def _normalize_bwd(norm, residuals, cotangents):
    x, weight, bias, stats, running_mean, running_var = residuals
    dy = cotangents[0]
    result_specs = (_spec(x), _spec(weight), _spec(bias))
    dx, dweight, dbias = _on_host(norm, "backward", result_specs, x.ndim, dy, x, stats, weight)
    zeros = (None if s is None else jnp.zeros_like(s) for s in (running_mean, running_var))
    return (dx, dweight, dbias, *zeros)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


# ----------------------------------------------------------------------------
# Arguments


def _default_float():
    """JAX's default floating dtype: float64 with ``jax_enable_x64``, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _host_float(array, name):
    """``array`` as a JAX array of a dtype the kernels take, and its dtype to return in.

    float16/32/64 pass unchanged; other floating types are computed in
    float32 and returned in their own; integers and booleans become JAX's
    default float type.
    """
    array = jnp.asarray(array)
    if jnp.issubdtype(array.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(array.dtype, jnp.number) or array.dtype == jnp.bool_):
        raise TypeError(f"{name} must be a real floating, integer or boolean array, "
                        f"got dtype {array.dtype}")
    if array.dtype in _HOST_FLOATS:
        return array, array.dtype
    if jnp.issubdtype(array.dtype, jnp.floating):
        return array.astype(jnp.float32), array.dtype
    return array.astype(_default_float()), _default_float()


def _param(value, shape, name):
    """An optional parameter as a host-float JAX array of ``shape`` (or None)."""
    if value is None:
        return None
    value, _ = _host_float(value, name)
    if value.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {value.shape}")
    return value


def _running_stats(running_mean, running_var, channels):
    """Validated running statistics as constants, and their dtypes to return in."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if running_mean is None:
        return None, None, None
    stats = []
    for value, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        stat, dtype = _host_float(value, name)
        if stat.shape != (channels,):
            raise ValueError(f"{name} must have shape {(channels,)}, got {stat.shape}")
        stats.append((jax.lax.stop_gradient(stat), dtype))
    (mean, mean_dtype), (var, var_dtype) = stats
    return mean, var, (mean_dtype, var_dtype)


def _channel_norm(kind, x, running_mean, running_var, weight, bias, *, from_input, momentum,
                  eps, axis, what):
    """Batch or instance norm with functional running statistics."""
    x, y_dtype = _host_float(x, "x")
    per_sample = kind == "instance"
    axes = _api._ChannelAxes(x, axis, per_sample=per_sample,
                             min_ndim=3 if per_sample else 2, what=what)
    weight = _param(weight, axes.weight_shape, "weight")
    bias = _param(bias, axes.weight_shape, "bias")
    eps = _api._check_eps(eps)
    momentum = _api._check_momentum(momentum)
    given = running_mean, running_var
    running_mean, running_var, stat_dtypes = _running_stats(running_mean, running_var,
                                                            axes.channels)
    if from_input:
        if per_sample and axes.spatial <= 1:
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {x.shape}")
        if not per_sample and axes.count <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}")
    elif running_mean is None:
        raise ValueError(f"{what} without input statistics needs running_mean and running_var")
    norm = _ChannelNorm(kind, axes.axis, eps, momentum, bool(from_input), None, axes.stat_shape)
    y, new_mean, new_var = _normalize(norm, x, weight, bias, running_mean, running_var)
    y = y.astype(y_dtype)
    if running_mean is None:
        return y, None, None
    if not from_input:
        return (y, *(jax.lax.stop_gradient(jnp.asarray(s)) for s in given))
    return (y, *(jax.lax.stop_gradient(s).astype(d) for s, d in zip((new_mean, new_var),
                                                                    stat_dtypes)))


def _row_norm(x, weight, bias, axis, eps, centered):
    x, y_dtype = _host_float(x, "x")
    axes = _api._NormalizedAxes(x, axis)
    weight = _param(weight, axes.weight_shape, "weight")
    bias = _param(bias, axes.weight_shape, "bias")
    if eps is None:
        eps = jnp.finfo(y_dtype).eps
    norm = _RowNorm(axes.axes, _api._check_eps(eps), centered, axes.stat_shape)
    return _normalize(norm, x, weight, bias, None, None)[0].astype(y_dtype)


# ----------------------------------------------------------------------------
# Public functions


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    """Layer normalization; differentiable with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    x : array_like
        Input.
    weight, bias : array_like, optional
        Affine parameters of shape ``tuple(x.shape[a] for a in sorted(axes))``.
    axis : int or tuple of ints, optional
        Normalized axes.
    eps : float, optional
        Added to the variance.

    Returns
    -------
    y : jax.Array
        The dtype of ``x`` (integer input: JAX's default float type).

    See Also
    --------
    numbanorm.layer_norm_forward
    """
    return _row_norm(x, weight, bias, axis, eps, centered=True)


def rms_norm(x, weight=None, *, axis=-1, eps=None):
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * weight``.

    Parameters
    ----------
    x : array_like
        Input.
    weight : array_like, optional
        Shaped like :func:`layer_norm`'s weight.
    axis : int or tuple of ints, optional
        Normalized axes.
    eps : float, optional
        None means the machine epsilon of ``y``'s dtype (bfloat16's for
        bfloat16 input).

    Returns
    -------
    y : jax.Array
    """
    return _row_norm(x, weight, None, axis, eps, centered=False)


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1):
    """Group normalization: each (sample, group of consecutive channels) normalized.

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
        Channel axis (-1 for channels-last); the sample axis is axis 0, or
        axis 1 when ``axis`` is 0.

    Returns
    -------
    y : jax.Array
    """
    x, y_dtype = _host_float(x, "x")
    axes = _api._ChannelAxes(x, axis, per_sample=True, num_groups=num_groups, min_ndim=2,
                             what="group_norm")
    weight = _param(weight, axes.weight_shape, "weight")
    bias = _param(bias, axes.weight_shape, "bias")
    if axes.count == 0:
        raise ValueError(f"cannot normalize over an empty set: input of shape {x.shape}")
    norm = _ChannelNorm("group", axes.axis, _api._check_eps(eps), 0.0, True, axes.groups,
                        axes.stat_shape)
    return _normalize(norm, x, weight, bias, None, None)[0].astype(y_dtype)


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
               training=True, momentum=0.1, eps=1e-5, axis=1):
    """Batch normalization with functional running statistics.

    Parameters
    ----------
    x : array_like
        Input of at least two dimensions.
    running_mean, running_var : array_like, optional
        ``(C,)`` running statistics.  Required when ``training`` is False.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters.
    training : bool, optional
        Normalize with the batch statistics (True) or the running ones.
    momentum : float, optional
        Weight of the new batch statistic: ``new = (1 - momentum) * running +
        momentum * batch_stat``, with the unbiased batch variance (PyTorch's
        convention; Flax's ``momentum`` is ``1 - momentum``).
    eps : float, optional
        Added to the variance.
    axis : int, optional
        Channel axis: 1 for NCHW-style data, -1 for channels-last (Flax's
        layout).

    Returns
    -------
    y : jax.Array
    new_running_mean, new_running_var : jax.Array or None
        The updated running statistics in training, the given ones in
        evaluation, None when none were given.  They carry no gradient.
    """
    return _channel_norm("batch", x, running_mean, running_var, weight, bias,
                         from_input=training, momentum=momentum, eps=eps, axis=axis,
                         what="batch_norm")


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None, *,
                  use_input_stats=True, momentum=0.1, eps=1e-5, axis=1):
    """Instance normalization with functional running statistics.

    Each (sample, channel) is normalized over the spatial axes; the sample
    axis is axis 0, or axis 1 when ``axis`` is 0.

    Parameters
    ----------
    x : array_like
        Input of at least three dimensions.
    running_mean, running_var : array_like, optional
        ``(C,)`` running statistics; with ``use_input_stats`` they are updated
        with the per-instance statistics averaged over the samples.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters.
    use_input_stats : bool, optional
        Normalize with the instance statistics (True) or the running ones.
    momentum, eps : float, optional
        As in :func:`batch_norm`.
    axis : int, optional
        Channel axis.

    Returns
    -------
    y : jax.Array
    new_running_mean, new_running_var : jax.Array or None
        As in :func:`batch_norm`.
    """
    return _channel_norm("instance", x, running_mean, running_var, weight, bias,
                         from_input=use_input_stats, momentum=momentum, eps=eps, axis=axis,
                         what="instance_norm")
