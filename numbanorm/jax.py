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
  evaluation mode, where they normalize ``x``.  ``where``, the boolean
  selection of the elements the statistics come from (as in numbanorm), is a
  constant too, traced or not: it may change between calls of a ``jit``
  function without a new compilation, and may be batched under ``vmap``.  ``eps``, ``momentum``,
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
  called or traced, never inside the callback, except one that depends on
  the values of ``where``: the running statistics of batch norm need 2
  selected elements in every channel, those of instance norm an instance
  with 2 in every channel, which the kernels count when the computation
  runs (a ``jax.errors.JaxRuntimeError`` then).
- JAX comes with the "jax" extra (``pip install ".[jax]"`` in a numbanorm
  clone) or ``pip install jax``.
"""

import dataclasses
import functools
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ModuleNotFoundError as error:
    if error.name is None or error.name.partition(".")[0] not in ("jax", "jaxlib"):
        raise
    raise ModuleNotFoundError(
        'numbanorm.jax needs JAX: install the "jax" extra (pip install ".[jax]" in a '
        "numbanorm clone) or pip install jax",
        name=error.name,
    ) from error

try:
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # a JAX without it: every platform copies through pure_callback
    _buffer_callback = None  # type: ignore[assignment]

from . import _driver
from ._arrays import check_eps, check_momentum
from ._host import HOST
from ._specs import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, RMS_NORM, Norm

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
class _HostNorm:
    """One norm with its static arguments, computed on the host by numbanorm's driver.

    ``axis`` is the channel axis, or the tuple of normalized axes (non-negative,
    sorted); ``input_stats`` is ``training`` or ``use_input_stats`` (True for
    the norms without running statistics).
    """

    norm: Norm
    axis: object
    eps: float
    momentum: float
    input_stats: bool
    num_groups: object
    stat_shape: tuple

    @property
    def centered(self):
        return self.norm.centered

    @property
    def merges_batch(self):
        """Leading batch axes of ``x`` are more rows (layer and RMS norm)."""
        return not self.norm.per_channel

    @property
    def updates_running_stats(self):
        return self.norm.running_stats and self.input_stats

    def _axis(self, batch_ndim):
        if self.norm.per_channel:
            return self.axis
        axes = tuple(a + batch_ndim for a in self.axis)
        # A single axis as an int: numbanorm's fast path for the last axis takes only that.
        return axes[0] if len(axes) == 1 else axes

    def forward(
        self, outs, x, weight, bias, running_mean, running_var, where, *, stats, batch_ndim=0
    ):
        """Write ``y``, the statistics and the new running statistics into ``outs``.

        ``batch_ndim`` leading axes of ``x`` are more rows (which ``where``
        broadcasts over).
        """
        y_out, stat_outs, mean_out, var_out = outs
        if mean_out is not None:  # numbanorm updates them in place
            _copy_into((mean_out, var_out), (running_mean, running_var))
            running_mean, running_var = mean_out, var_out
        results = _driver.forward(
            self.norm,
            x,
            weight,
            bias,
            axis=self._axis(batch_ndim),
            eps=self.eps,
            num_groups=self.num_groups,
            running_mean=running_mean,
            running_var=running_var,
            input_stats=self.input_stats,
            momentum=self.momentum,
            out=None if stats else y_out,
            stats=stats,
            where=where,
        )
        if stats:
            _copy_into((y_out, *stat_outs), results)

    def backward(self, outs, dy, x, stats, weight, where):
        """Write ``(dx, dweight, dbias)`` into ``outs``."""
        dx_out, *param_outs = outs
        _, *param_grads = _driver.backward(
            self.norm,
            dy,
            x,
            stats,
            weight,
            axis=self._axis(0),
            num_groups=self.num_groups,
            input_stats=self.input_stats,
            out=dx_out,
            where=where,
        )
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
        outs = jax.tree.map(
            lambda spec: np.empty(batch_shape + spec.shape, spec.dtype), self.result_specs
        )
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
        if (
            self.direction != "backward"
            and self.norm.merges_batch
            and all(leaf.shape[:batch_ndim] == unbatched for leaf in jax.tree.leaves(args[1:]))
        ):
            x = np.broadcast_to(args[0], batch_shape + args[0].shape[batch_ndim:])
            rest = jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[batch_ndim:]), args[1:])
            function(outs, x, *rest, batch_ndim=batch_ndim)
            return
        for index in np.ndindex(batch_shape):
            element = jax.tree.map(
                lambda leaf, index=index: leaf[
                    tuple(i if n > 1 else 0 for i, n in zip(index, leaf.shape))
                ],
                args,
            )
            function(jax.tree.map(lambda out, index=index: out[index], outs), *element)


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


def _forward(norm, x, weight, bias, running_mean, running_var, where, *, stats):
    """``(y, statistics or None, new running mean, new running variance)``."""
    stat = jax.ShapeDtypeStruct(norm.stat_shape, _stat_dtype(x))
    updates = norm.updates_running_stats
    result_specs = (
        _spec(x),
        ((stat, stat) if norm.centered else (stat,)) if stats else None,
        _spec(running_mean) if updates else None,
        _spec(running_var) if updates else None,
    )
    return _on_host(
        norm,
        "forward" if stats else "apply",
        result_specs,
        x.ndim,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        where,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _normalize(norm, x, weight, bias, running_mean, running_var, where):
    """``(y, new running mean, new running variance)``; the last two None unless updated."""
    y, _, new_mean, new_var = _forward(
        norm, x, weight, bias, running_mean, running_var, where, stats=False
    )
    return y, new_mean, new_var


def _normalize_fwd(norm, x, weight, bias, running_mean, running_var, where):
    y, stats, new_mean, new_var = _forward(
        norm, x, weight, bias, running_mean, running_var, where, stats=True
    )
    return (y, new_mean, new_var), (x, weight, bias, stats, running_mean, running_var, where)


def _normalize_bwd(norm, residuals, cotangents):
    x, weight, bias, stats, running_mean, running_var, where = residuals
    dy = cotangents[0]
    result_specs = (_spec(x), _spec(weight), _spec(bias))
    dx, dweight, dbias = _on_host(
        norm, "backward", result_specs, x.ndim, dy, x, stats, weight, where
    )
    zeros = (None if s is None else jnp.zeros_like(s) for s in (running_mean, running_var))
    return (dx, dweight, dbias, *zeros, None)


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
        jnp.issubdtype(array.dtype, jnp.number) or array.dtype == jnp.bool_
    ):
        raise TypeError(
            f"{name} must be a real floating, integer or boolean array, got dtype {array.dtype}"
        )
    if array.dtype in _HOST_FLOATS:
        return array, array.dtype
    if jnp.issubdtype(array.dtype, jnp.floating):
        return array.astype(jnp.float32), array.dtype
    return array.astype(_default_float()), _default_float()


def _jax_param(value, shape, name):
    """An optional parameter as a host-float JAX array of ``shape`` (or None)."""
    if value is None:
        return None
    value, _ = _host_float(value, name)
    if value.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {value.shape}")
    return value


def _jax_running_stats(running_mean, running_var, channels):
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


def _jax_where(where, shape):
    """``where`` checked as numbanorm checks it, as a constant of ``len(shape)`` dimensions.

    The leading axes it lacks are added with size 1: under ``vmap`` the
    batch axes come before them, and the host broadcasts the rest.
    """
    if where is None:
        return None
    where = jnp.asarray(where)
    # The check reads the dtype and shape alone: a stand-in of no memory holds them.
    _driver.checked_where(np.broadcast_to(np.empty((), where.dtype), where.shape), shape, HOST)
    where = where.reshape((1,) * (len(shape) - where.ndim) + where.shape)
    return jax.lax.stop_gradient(where)


def _apply(
    norm,
    x,
    weight=None,
    bias=None,
    running_mean=None,
    running_var=None,
    *,
    axis,
    eps,
    num_groups=None,
    input_stats=True,
    momentum=0.0,
    where=None,
):
    """Any norm, differentiable; with running statistics ``(y, new mean, new var)``, else ``y``."""
    x, y_dtype = _host_float(x, "x")
    layout = norm.layout(x.shape, axis, num_groups)
    weight = _jax_param(weight, layout.weight_shape, "weight")
    bias = _jax_param(bias, layout.weight_shape, "bias")
    where = _jax_where(where, x.shape)
    if eps is None:
        eps = jnp.finfo(y_dtype).eps
    eps = check_eps(eps)
    if norm.running_stats:
        momentum = check_momentum(momentum)
        given = running_mean, running_var
        running_mean, running_var, stat_dtypes = _jax_running_stats(
            running_mean, running_var, layout.channels
        )
    norm.check_statistics(layout, input_stats, running_mean is not None)
    axes = layout.axis if norm.per_channel else layout.axes
    host = _HostNorm(
        norm,
        axes,
        eps,
        momentum,
        bool(input_stats),
        num_groups if norm.grouped else None,
        layout.stat_shape,
    )
    y, new_mean, new_var = _normalize(host, x, weight, bias, running_mean, running_var, where)
    y = y.astype(y_dtype)
    if not norm.running_stats:
        return y
    if running_mean is None:
        return y, None, None
    if not input_stats:
        return (y, *(jax.lax.stop_gradient(jnp.asarray(s)) for s in given))
    return (
        y,
        *(jax.lax.stop_gradient(s).astype(d) for s, d in zip((new_mean, new_var), stat_dtypes)),
    )


# ----------------------------------------------------------------------------
# Public functions


def layer_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    axis: int | tuple[int, ...] = -1,
    eps: float = 1e-5,
    where: Any = None,
) -> Any:
    """Layer normalization as a JAX function, differentiable in ``x``, ``weight`` and ``bias``.

    Each slice over ``axis`` is normalized with its own mean and variance,
    then scaled by ``weight`` and shifted by ``bias``, by
    :func:`numbanorm.layer_norm_forward` and, for the gradient,
    :func:`numbanorm.layer_norm_backward`, called from the JAX computation
    (see the module's description).  It works eagerly and under
    ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    Parameters
    ----------
    x : array_like
        Input: a JAX array or anything ``jnp.asarray`` takes, of real
        numbers.
    weight, bias : array_like, optional
        Affine parameters of shape ``tuple(x.shape[a] for a in
        sorted(axes))``; None for none.
    axis : int or tuple of ints, optional
        The normalized axes.
    eps : float, optional
        Added to the variance before its square root.
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (as
        in :func:`numbanorm.layer_norm_forward`); all by default.  ``y`` is
        computed for every element, and a slice with none selected gives
        the bias; the gradient through the statistics reaches the selected
        elements only.  A constant: no gradient flows to it, and a traced
        ``where`` may change between calls of a ``jit`` function.

    Returns
    -------
    jax.Array
        The normalized ``x``, of its shape and dtype (JAX's default float
        type for integer and boolean input).

    Raises
    ------
    ValueError
        If ``axis`` is out of range, ``weight`` or ``bias`` has another
        shape, ``where`` does not broadcast to ``x``, or ``eps`` is
        negative; when the function is called or traced.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean, or under
        forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``).

    See Also
    --------
    numbanorm.layer_norm_forward : The NumPy function it calls.
    rms_norm : Without the centering.

    Notes
    -----
    With the mean and biased variance of each slice over ``axis``::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import numbanorm.jax as nnj
    >>> x = jnp.array([[1.0, 2.0, 3.0], [2.0, 4.0, 9.0]])
    >>> np.asarray(nnj.layer_norm(x)).round(3)
    array([[-1.225,  0.   ,  1.225],
           [-1.019, -0.34 ,  1.359]], dtype=float32)

    Its gradient is that of the same formula in ``jax.numpy``:

    >>> def reference(x):
    ...     centered = x - x.mean(-1, keepdims=True)
    ...     return centered / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    >>> target = jnp.arange(6.0).reshape(2, 3)
    >>> grad = jax.jit(jax.grad(lambda x: jnp.sum(nnj.layer_norm(x) * target)))(x)
    >>> expected = jax.grad(lambda x: jnp.sum(reference(x) * target))(x)
    >>> bool(jnp.allclose(grad, expected, atol=1e-5))
    True
    """
    return _apply(LAYER_NORM, x, weight, bias, axis=axis, eps=eps, where=where)


def rms_norm(
    x: Any,
    weight: Any = None,
    *,
    axis: int | tuple[int, ...] = -1,
    eps: float | None = None,
    where: Any = None,
) -> Any:
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * weight`` as a JAX function.

    Each slice over ``axis`` is divided by its root mean square, then
    scaled by ``weight``, by :func:`numbanorm.rms_norm_forward` and, for
    the gradient, :func:`numbanorm.rms_norm_backward`.  Differentiable in
    ``x`` and ``weight``, under ``jax.jit`` and ``jax.vmap`` too.

    Parameters
    ----------
    x : array_like
        Input of real numbers.
    weight : array_like, optional
        Scale, shaped like :func:`layer_norm`'s weight.
    axis : int or tuple of ints, optional
        The normalized axes.
    eps : float or None, optional
        Added to the mean square.  None means the machine epsilon of ``y``'s
        dtype (bfloat16's for bfloat16 input), as in PyTorch.
    where : array_like of bool, optional
        The elements the mean square comes from, as in :func:`layer_norm`.

    Returns
    -------
    jax.Array
        ``x`` divided by its root mean square (times ``weight``), of its
        shape and dtype.

    Raises
    ------
    ValueError
        If ``axis`` is out of range, ``weight`` has another shape,
        ``where`` does not broadcast to ``x``, or ``eps`` is negative.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean.

    See Also
    --------
    numbanorm.rms_norm_forward : The NumPy function it calls.
    layer_norm : With centering and a bias.

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import numbanorm.jax as nnj
    >>> x = jnp.array([[3.0, 4.0], [1.0, -1.0]])
    >>> np.asarray(nnj.rms_norm(x, jnp.array([1.0, 2.0]))).round(3)
    array([[ 0.849,  2.263],
           [ 1.   , -2.   ]], dtype=float32)

    Under ``jax.vmap`` each batch element is normalized on its own (here
    in one kernel call, the weight being shared):

    >>> batch = jnp.stack([x, 2 * x])
    >>> np.asarray(jax.vmap(nnj.rms_norm)(batch)).round(3)[:, 0]
    array([[0.849, 1.131],
           [0.849, 1.131]], dtype=float32)
    """
    return _apply(RMS_NORM, x, weight, axis=axis, eps=eps, where=where)


def group_norm(
    x: Any,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    where: Any = None,
) -> Any:
    """Group normalization as a JAX function: each (sample, group of channels) normalized.

    The ``C`` channels are split into ``num_groups`` groups of consecutive
    channels, and each (sample, group) pair is normalized over its channels
    and every other axis but the sample axis, by
    :func:`numbanorm.group_norm_forward` and, for the gradient,
    :func:`numbanorm.group_norm_backward`.  Differentiable in ``x``,
    ``weight`` and ``bias``.

    Parameters
    ----------
    x : array_like
        Input of at least two dimensions.
    num_groups : int
        Number of groups; must divide the number of channels.  Static.
    weight, bias : array_like, optional
        ``(C,)`` per-channel affine parameters.
    eps : float, optional
        Added to the variance.
    axis : int, optional
        Channel axis (-1 for channels-last); the sample axis is axis 0, or
        axis 1 when ``axis`` is 0.
    where : array_like of bool, optional
        The elements the statistics come from, as in :func:`layer_norm`.

    Returns
    -------
    jax.Array
        The normalized ``x``, of its shape and dtype.

    Raises
    ------
    ValueError
        If ``num_groups`` does not divide the number of channels, ``x``
        has fewer than two dimensions, a parameter has another shape or
        ``where`` does not broadcast to ``x``.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean.

    See Also
    --------
    numbanorm.group_norm_forward : The NumPy function it calls.
    instance_norm : One group per channel.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import numbanorm.jax as nnj
    >>> x = jnp.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]])  # (N, C)
    >>> np.asarray(nnj.group_norm(x, 2)).round(3)
    array([[-1.,  1., -1.,  1.],
           [ 0.,  0., -1.,  1.]], dtype=float32)
    """
    return _apply(
        GROUP_NORM, x, weight, bias, axis=axis, eps=eps, num_groups=num_groups, where=where
    )


def batch_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: Any = None,
) -> tuple[Any, Any, Any]:
    """Batch normalization as a JAX function, returning the new running statistics.

    Each channel is normalized over every other axis, with the batch's
    statistics in training and the running ones in evaluation, by
    :func:`numbanorm.batch_norm_forward` and, for the gradient,
    :func:`numbanorm.batch_norm_backward`.  A pure function, it returns the
    updated running statistics instead of writing them in place: keep them
    (in a Flax ``batch_stats`` variable, say) for the next call.
    Differentiable in ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    x : array_like
        Input of at least two dimensions.
    running_mean, running_var : array_like, optional
        ``(C,)`` running statistics, given together.  Required when
        ``training`` is False.  Constants: no gradient flows to them.
    weight, bias : array_like, optional
        ``(C,)`` affine parameters.
    training : bool, optional
        Normalize with the batch statistics (True) or the running ones.
        Static.
    momentum : float, optional
        Weight of the new batch statistic, PyTorch's convention (Flax's
        ``momentum`` is ``1 - momentum``).
    eps : float, optional
        Added to the variance.
    axis : int, optional
        Channel axis: 1 for NCHW-style data, -1 for channels-last (Flax's
        layout).
    where : array_like of bool, optional
        The elements the batch statistics come from, as in :func:`layer_norm`
        (``(N, 1, T)`` for padded ``(N, C, T)`` sequences, say); the running
        statistics are updated with those of the selected elements, which
        needs at least 2 in every channel.  Ignored in evaluation.

    Returns
    -------
    y : jax.Array
        The normalized ``x``, of its shape and dtype.
    new_running_mean, new_running_var : jax.Array or None
        The updated running statistics in training, the given ones in
        evaluation, None when none were given.  They carry no gradient.

    Raises
    ------
    ValueError
        If ``x`` has fewer than two dimensions or in training a single
        value per channel, a statistic or parameter has another shape,
        only one running statistic is given, none is given in evaluation,
        or ``momentum`` is outside [0, 1]; when the function is called or
        traced.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean.
    jax.errors.JaxRuntimeError
        When the computation runs, if ``where`` selects fewer than 2
        elements of a channel whose running statistics it updates.

    See Also
    --------
    numbanorm.batch_norm_forward : The NumPy function it calls.
    numbanorm.BatchNorm : A stateful layer for NumPy code.

    Notes
    -----
    In training, with the mean and biased variance of each channel's ``n``
    elements::

        y = (x - mean) / sqrt(var + eps) * weight + bias
        new_running_mean = (1 - momentum) * running_mean + momentum * mean
        new_running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import numbanorm.jax as nnj
    >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])  # (N, C)
    >>> y, mean, var = nnj.batch_norm(x, jnp.zeros(2), jnp.ones(2), axis=-1)
    >>> np.asarray(y).round(3)
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> mean, var  # the new running statistics
    (Array([0.2, 2. ], dtype=float32), Array([ 1.1, 20.9], dtype=float32))
    >>> y, _, _ = nnj.batch_norm(x, mean, var, training=False, axis=-1)
    >>> np.asarray(y).round(3)
    array([[0.763, 1.75 ],
           [2.67 , 6.125]], dtype=float32)

    The gradient of the parameters:

    >>> def loss(weight, bias):
    ...     y, _, _ = nnj.batch_norm(x, weight=weight, bias=bias)
    ...     return y[0, 0]
    >>> jax.grad(loss, argnums=(0, 1))(jnp.ones(2), jnp.zeros(2))
    (Array([-0.999995,  0.      ], dtype=float32), Array([1., 0.], dtype=float32))
    """
    return _apply(
        BATCH_NORM,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        axis=axis,
        eps=eps,
        input_stats=training,
        momentum=momentum,
        where=where,
    )


def instance_norm(
    x: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    *,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: Any = None,
) -> tuple[Any, Any, Any]:
    """Instance normalization as a JAX function, returning the new running statistics.

    Each (sample, channel) pair is normalized over the spatial axes with
    its own statistics, by :func:`numbanorm.instance_norm_forward` and, for
    the gradient, :func:`numbanorm.instance_norm_backward`.  The sample
    axis is axis 0, or axis 1 when ``axis`` is 0.  Running statistics, when
    given, are returned updated, as in :func:`batch_norm`.

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
        Static.
    momentum, eps : float, optional
        As in :func:`batch_norm`.
    axis : int, optional
        Channel axis.
    where : array_like of bool, optional
        The elements the instance statistics come from, as in
        :func:`layer_norm`; the running statistics average over the
        instances with at least 2 selected elements.  Ignored with
        ``use_input_stats=False``.

    Returns
    -------
    y : jax.Array
        The normalized ``x``, of its shape and dtype.
    new_running_mean, new_running_var : jax.Array or None
        As in :func:`batch_norm`.

    Raises
    ------
    ValueError
        If ``x`` has fewer than three dimensions or, with instance
        statistics, a single spatial element, an array has another shape,
        or running statistics are missing with ``use_input_stats=False``.
    TypeError
        If ``x`` is not real numbers or ``where`` is not boolean.
    jax.errors.JaxRuntimeError
        When the computation runs, if ``where`` leaves a channel whose
        running statistics it updates without an instance of 2 selected
        elements.

    See Also
    --------
    numbanorm.instance_norm_forward : The NumPy function it calls.
    group_norm : Groups of several channels.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import numbanorm.jax as nnj
    >>> x = jnp.array([[[1.0, 2.0, 6.0], [0.0, 4.0, 8.0]], [[3.0, 3.0, 0.0], [1.0, 1.0, 4.0]]])
    >>> y, mean, var = nnj.instance_norm(x, jnp.zeros(2), jnp.ones(2))
    >>> np.asarray(y[0]).round(3)
    array([[-0.926, -0.463,  1.389],
           [-1.225,  0.   ,  1.225]], dtype=float32)
    >>> mean, var
    (Array([0.25, 0.3 ], dtype=float32), Array([1.4 , 1.85], dtype=float32))
    """
    return _apply(
        INSTANCE_NORM,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        axis=axis,
        eps=eps,
        input_stats=use_input_stats,
        momentum=momentum,
        where=where,
    )
