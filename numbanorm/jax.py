"""numbanorm's kernels as JAX functions, differentiable with ``jax.custom_vjp``.

Each function calls numbanorm through ``jax.pure_callback``, so it works
eagerly and under ``jax.jit``, ``jax.grad`` and ``jax.vmap``: when a gradient
is taken, its forward pass calls numbanorm's ``*_forward`` function, which
also returns the statistics that the backward pass hands to ``*_backward``;
otherwise it calls the plain function (the same kernels, with no statistics
to return).
The arguments are those of numbanorm's functions without ``out``; batch and
instance norm return their updated running statistics instead of updating
them in place, with PyTorch's ``momentum`` (the weight of the new batch
statistic: Flax's ``momentum=0.99`` is ``momentum=0.01`` here).

- Gradients flow to ``x``, ``weight`` and ``bias``.  Running statistics are
  constants (``jax.lax.stop_gradient``): their gradient is zero, also in
  evaluation mode, where they normalize ``x``.
- The kernels run on the host, and ``pure_callback`` copies every input and
  result between XLA's buffers and the host arrays numbanorm works on (on a
  GPU or TPU backend, between devices).  ``eps``, ``momentum``, ``axis``,
  ``num_groups``, ``training`` and ``use_input_stats`` are static Python
  values.
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

try:
    import jax
    import jax.numpy as jnp
except ModuleNotFoundError as error:
    if error.name is None or error.name.partition(".")[0] not in ("jax", "jaxlib"):
        raise
    raise ImportError(
        'numbanorm.jax needs JAX; install it with: pip install "numbanorm[jax]"') from error
import numpy as np

from . import _api

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]

# The floating dtypes numbanorm takes and returns as they are.
_HOST_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------
# The norms as the host sees them


@dataclasses.dataclass(frozen=True)
class _RowNorm:
    """Layer norm (``centered``) or RMS norm over ``axes`` (non-negative, sorted)."""

    axes: tuple
    eps: float
    centered: bool
    stat_shape: tuple
    merges_batch = True
    updates_running_stats = False

    def forward(self, x, weight, bias, running_mean, running_var, *, stats, batch_ndim=0):
        """``(y, statistics or None, None, None)``; ``batch_ndim`` leading axes are more rows."""
        options = dict(axis=tuple(a + batch_ndim for a in self.axes), eps=self.eps)
        params = (weight, bias) if self.centered else (weight,)
        if not stats:
            plain = _api.layer_norm if self.centered else _api.rms_norm
            return plain(x, *params, **options), None, None, None
        forward = _api.layer_norm_forward if self.centered else _api.rms_norm_forward
        y, *statistics = forward(x, *params, **options)
        return y, tuple(statistics), None, None

    def backward(self, dy, x, stats, weight):
        """``(dx, dweight, dbias)``; ``dbias`` is None for RMS norm."""
        if self.centered:
            return _api.layer_norm_backward(dy, x, *stats, weight, axis=self.axes)
        return (*_api.rms_norm_backward(dy, x, *stats, weight, axis=self.axes), None)


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

    def forward(self, x, weight, bias, running_mean, running_var, *, stats):
        """``(y, (mean, rstd) or None, new running mean, new running variance)``."""
        if self.kind == "group":
            function = _api.group_norm_forward if stats else _api.group_norm
            results = function(x, self.num_groups, weight, bias, eps=self.eps, axis=self.axis)
        else:
            # numbanorm updates running statistics in place: give it copies.
            if running_mean is not None:
                running_mean, running_var = np.array(running_mean), np.array(running_var)
            if self.kind == "batch":
                function = _api.batch_norm_forward if stats else _api.batch_norm
                mode = dict(training=self.from_input)
            else:
                function = _api.instance_norm_forward if stats else _api.instance_norm
                mode = dict(use_input_stats=self.from_input)
            results = function(x, running_mean, running_var, weight, bias, **mode,
                               momentum=self.momentum, eps=self.eps, axis=self.axis)
        if not stats:
            return results, None, running_mean, running_var
        y, *statistics = results
        return y, tuple(statistics), running_mean, running_var

    def backward(self, dy, x, stats, weight):
        """``(dx, dweight, dbias)``."""
        if self.kind == "group":
            return _api.group_norm_backward(dy, x, self.num_groups, *stats, weight,
                                            axis=self.axis)
        if self.kind == "batch":
            return _api.batch_norm_backward(dy, x, *stats, weight, training=self.from_input,
                                            axis=self.axis)
        return _api.instance_norm_backward(dy, x, *stats, weight,
                                           use_input_stats=self.from_input, axis=self.axis)


@dataclasses.dataclass(frozen=True)
class _HostCall:
    """A norm's host computation on NumPy arrays, as ``pure_callback`` calls it.

    ``direction`` is ``"apply"`` (``y`` alone, when no gradient is taken),
    ``"forward"`` (``y`` and the statistics the backward needs) or
    ``"backward"``.

    Equal calls compare equal, so that JAX reuses what it compiled for an
    eager call instead of compiling the callback again each time.

    Under ``vmap`` (``vmap_method="expand_dims"``) every argument arrives
    with the same number of extra leading axes, of full size where it is
    batched and size 1 where it is not; ``core_ndim`` is the dimension of
    the first argument without them.  A norm with ``merges_batch`` treats
    leading axes of ``x`` as more rows (its forward takes ``batch_ndim=``)
    when no other argument is batched; otherwise the norm runs once per
    batch element.  Results are cast to the dtypes of ``result_specs``.
    """

    norm: object
    direction: str
    result_specs: tuple
    core_ndim: int

    def __call__(self, *args):
        if self.direction == "backward":
            function = self.norm.backward
        else:
            function = functools.partial(self.norm.forward, stats=self.direction == "forward")
        args = jax.tree.map(np.asarray, args)
        batch_ndim = args[0].ndim - self.core_ndim
        if batch_ndim == 0:
            return _cast_to_specs(function(*args), self.result_specs)
        leaves = jax.tree.leaves(args)
        batch_shape = np.broadcast_shapes(*(leaf.shape[:batch_ndim] for leaf in leaves))
        unbatched = (1,) * batch_ndim
        if (self.direction != "backward" and self.norm.merges_batch
                and all(leaf.shape[:batch_ndim] == unbatched for leaf in leaves[1:])):
            x = np.broadcast_to(args[0], batch_shape + args[0].shape[batch_ndim:])
            rest = jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[batch_ndim:]), args[1:])
            return _cast_to_specs(function(x, *rest, batch_ndim=batch_ndim), self.result_specs)
        outputs = jax.tree.map(lambda spec: np.empty(batch_shape + spec.shape, spec.dtype),
                               self.result_specs)
        for index in np.ndindex(batch_shape):
            element = jax.tree.map(
                lambda leaf: leaf[tuple(i if n > 1 else 0 for i, n in zip(index, leaf.shape))],
                args)
            results = _cast_to_specs(function(*element), self.result_specs)
            for out, result in zip(jax.tree.leaves(outputs), jax.tree.leaves(results)):
                out[index] = result
        return outputs


def _cast_to_specs(results, result_specs):
    """``results`` with the dtypes of ``result_specs``, dropping those it has None for."""
    def cast(spec, result):
        return None if spec is None else np.asarray(result, spec.dtype)

    return jax.tree.map(cast, result_specs, results, is_leaf=lambda node: node is None)


# ----------------------------------------------------------------------------
# The differentiable core shared by every norm


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
    call = _HostCall(norm, "forward" if stats else "apply", result_specs, x.ndim)
    return jax.pure_callback(call, result_specs, x, weight, bias, running_mean, running_var,
                             vmap_method="expand_dims")


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
    dx, dweight, dbias = jax.pure_callback(
        _HostCall(norm, "backward", result_specs, x.ndim), result_specs, dy, x, stats, weight,
        vmap_method="expand_dims")
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
    axes = _api._ChannelAxes(x, axis, per_sample=per_sample, min_ndim=3 if per_sample else 2,
                        what=what)
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
