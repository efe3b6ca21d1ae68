"""Stateful normalization layers on top of the functional API.

Each layer owns its parameters (``weight``, ``bias``), running statistics
(``running_mean``, ``running_var``, ``num_batches_tracked``) and the
gradients of its parameters, with PyTorch's names and semantics, so that
state dicts move between the two unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _driver
from ._arrays import axes_tuple, check_eps, integer, integers, real_number
from ._docstrings import fill_doc
from ._specs import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, RMS_NORM, Norm

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

_PARAMETER_NAMES = ("weight", "bias")
_STATE_NAMES = _PARAMETER_NAMES + ("running_mean", "running_var", "num_batches_tracked")

# ----------------------------------------------------------------------------
# Docstring texts that several layers share (numbanorm.distributed's
# SyncBatchNorm too), in place of the functions' texts of the same names: a
# line ``{name}`` in the docstring of a class decorated with ``layer_doc``
# becomes the text ``name``, indented as the line.

_LAYER_TEXTS = {
    "eps": """\
eps : float, optional
    Added to the variance before its square root: a constant group then
    normalizes to 0 (to ``bias``) instead of dividing by zero.""",
    "momentum": """\
momentum : float or None, optional
    Weight of the batch statistic in the running average, in [0, 1]
    (PyTorch's convention; Flax's and Keras' ``momentum`` is ``1 -
    momentum``).  None makes the running statistics the cumulative average
    over the ``num_batches_tracked`` training batches.""",
    "affine": """\
affine : bool, optional
    Learn a per-channel ``weight`` (initialized to ones) and ``bias``
    (zeros).""",
    "track_running_stats": """\
track_running_stats : bool, optional
    Keep running statistics, updated in training mode and used in
    evaluation mode.  Without them, evaluation mode also normalizes with
    the statistics of its input.""",
    "channel_axis": """\
axis : int, optional
    The channel axis: 1 for channels-first input ``(N, C, ...)``, -1 for
    channels-last ``(N, ..., C)``.  Any axis works.""",
    "dtype": """\
dtype : data-type, optional
    Floating-point dtype of the parameters (and running statistics).  The
    input may have another dtype, which decides the dtype of ``y`` and
    ``dx`` as in the functional API.""",
    "normalized_shape": """\
normalized_shape : int or tuple of ints
    Sizes of the normalized axes, in increasing axis order: also the shape
    of ``weight`` (and ``bias``).""",
    "normalized_axes": """\
axis : None or int or tuple of ints, optional
    The normalized axes.  None means the trailing
    ``len(normalized_shape)`` axes, as in PyTorch; negative axes count
    from the end of each input's shape.""",
    "layer_attributes": """\
training : bool
    Whether the layer is in training mode, the mode it starts in; set by
    :meth:`train` and :meth:`eval`.
weight, bias : ndarray or None
    The learnable parameters, None where the layer has none.
grads : dict of str to ndarray
    The gradients of the loss with respect to :meth:`parameters`, under
    the same names, added up by :meth:`backward` until :meth:`zero_grad`.""",
    "running_stats_attributes": """\
running_mean, running_var : ndarray or None
    ``(C,)`` running statistics (initially zeros and ones), updated in
    place; None without ``track_running_stats``.
num_batches_tracked : ndarray or None
    0-d int64 array: the number of training batches the running statistics
    have seen; None without ``track_running_stats``.""",
    "running_stats_raises": """\
ValueError
    If ``num_features`` is below 1, ``eps`` is negative or NaN, or
    ``momentum`` is outside [0, 1].
TypeError
    If ``dtype`` is not a floating-point dtype or ``axis`` is not an
    integer.""",
    "shape_norm_sections": """\
Attributes
----------
{layer_attributes}

Raises
------
ValueError
    If ``normalized_shape`` is empty or holds a size below 1, ``axis``
    names another number of axes, or ``eps`` is negative or NaN.
TypeError
    If ``dtype`` is not a floating-point dtype.""",
    "running_stats_sections": """\
Parameters
----------
num_features : int
    Number of channels ``C``.
{running_stats_options}

Attributes
----------
{layer_attributes}
{running_stats_attributes}

Raises
------
{running_stats_raises}""",
    "running_stats_options": """\
{eps}
{momentum}
{affine}
{track_running_stats}
{channel_axis}
{dtype}""",
}

layer_doc = fill_doc(**_LAYER_TEXTS)


class _NormLayer:
    """What every layer shares: parameters, gradients, modes, state dicts.

    A layer is its norm's specification (``norm``) with state: subclasses
    say how an input is checked (:meth:`check_input`) and which arguments
    the norm takes besides the parameters (``_options(x)``: ``axis`` and
    ``num_groups``).  ``_repr_fields`` names the attributes shown by ``repr``.
    """

    norm: Norm
    _repr_fields: tuple[str, ...] = ()

    def __init__(self, param_shape, *, eps, dtype, weight, bias, running_stats=False):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"dtype must be a floating-point dtype, got {self.dtype}")
        if eps is not None or self.norm.default_eps is not None:
            check_eps(eps)
        self.eps = eps
        self.training = True
        self.weight = np.ones(param_shape, self.dtype) if weight else None
        self.bias = np.zeros(param_shape, self.dtype) if bias else None
        self.running_mean = np.zeros(param_shape, self.dtype) if running_stats else None
        self.running_var = np.ones(param_shape, self.dtype) if running_stats else None
        self.num_batches_tracked = np.zeros((), np.int64) if running_stats else None
        self.grads = {name: np.zeros_like(p) for name, p in self.parameters().items()}
        self._saved = None
        self._has_run_forward = False

    # --- forward and backward -------------------------------------------------

    def forward(self, x: Any, where: Any = None) -> np.ndarray:
        """Normalize ``x`` in the current mode, keeping what :meth:`backward` needs.

        ``layer(x)`` is the same call.  In training mode batch and instance
        norm normalize with the statistics of ``x`` and update the running
        statistics; in evaluation mode they normalize with the running
        statistics (with the statistics of ``x`` when the layer keeps none).
        Layer, RMS and group norm compute the same thing in both modes.  The
        layer keeps references to ``x`` and ``where`` until the backward: do
        not modify them in place meanwhile.

        Parameters
        ----------
        x : array_like
            CPU input with the layer's channels or normalized shape (see
            :meth:`check_input`), real numbers of any dtype.
        where : array_like of bool, optional
            The elements the statistics come from, broadcastable to ``x``
            (``(N, 1, T)`` to leave out the padded time steps of an ``(N, C,
            T)`` batch, say); None selects every element.  Every element
            is normalized, and a group with none selected gives the bias.
            In training, batch and instance norm fold the statistics of the
            selected elements into the running ones; statistics taken from
            the running ones (evaluation mode) ignore it.

        Returns
        -------
        ndarray
            The normalized ``x``, of its shape, in the dtype the functional
            API gives (``x``'s for floating-point input, float64 for integer
            and boolean input).

        Raises
        ------
        ValueError
            If ``x`` does not fit the layer, ``where`` does not broadcast to
            it, or in training mode a batch norm channel has a single value
            (fewer than 2 selected ones with running statistics), or an
            instance norm input a single spatial element.  The layer's state
            is then unchanged.
        TypeError
            If ``x`` is not real numbers or ``where`` is not boolean.

        See Also
        --------
        backward : The gradient of this forward.
        numbanorm.batch_norm_forward : What :class:`BatchNorm`'s forward calls.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> ln = nn.LayerNorm(3)
        >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 9.0]])
        >>> ln(x).round(4)
        array([[-1.2247,  0.    ,  1.2247],
               [-1.019 , -0.3397,  1.3587]])

        With ``where``, the statistics of each row come from its first two
        elements; the third is normalized with them too:

        >>> ln.forward(x, where=np.array([True, True, False])).round(4)
        array([[-1.    ,  1.    ,  2.9999],
               [-1.    ,  1.    ,  6.    ]])
        """
        x = np.asarray(x)
        self.check_input(x)
        y, self._saved = self._forward(x, where)
        self._has_run_forward = True
        return y

    __call__ = forward

    def backward(self, dy: Any) -> np.ndarray:
        """Gradient with respect to the last forward's input, given that of its output.

        The gradients of the parameters are added to :attr:`grads` (not
        overwritten: call :meth:`zero_grad` between steps).  Each forward
        allows one backward, in the mode and with the ``where`` of that
        forward: in training mode the gradient flows through the batch
        statistics too, in evaluation mode the running statistics are
        constants.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last forward's output,
            of its shape.

        Returns
        -------
        ndarray
            Gradient of the loss with respect to the last forward's ``x``.

        Raises
        ------
        RuntimeError
            If no forward has run, or this forward's backward already has.
        ValueError
            If ``dy`` does not have the shape of the forward's output.

        See Also
        --------
        forward : The forward this differentiates.
        numbanorm.layer_norm_backward : What :class:`LayerNorm`'s backward calls.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> ln = nn.LayerNorm(3)
        >>> y = ln(np.array([[0.0, 2.0, 7.0], [1.0, 5.0, 3.0]], dtype=np.float32))
        >>> dy = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0]], dtype=np.float32)
        >>> ln.backward(dy).round(3)
        array([[ 0.196, -0.274,  0.078],
               [ 0.102,  0.102, -0.204]], dtype=float32)
        >>> ln.grads["weight"].round(3), ln.grads["bias"]
        (array([-2.244,  0.   ,  2.717], dtype=float32), array([2., 0., 2.], dtype=float32))
        """
        if self._saved is None:
            if self._has_run_forward:
                raise RuntimeError(
                    f"{type(self).__name__}.backward() was already called for the last "
                    "forward; run the forward again before another backward"
                )
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward; "
                "call the layer on an input first"
            )
        dx, *param_grads = self._backward(np.asarray(dy), *self._saved)
        self._saved = None
        for name, grad in zip(_PARAMETER_NAMES, param_grads):
            if name in self.grads:
                self.grads[name] += grad
        return dx

    def check_input(self, x: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``x`` fits the layer; each kind of layer says how."""
        raise NotImplementedError

    def _options(self, x):
        """The norm's arguments for ``x`` other than the parameters: ``axis``, ``num_groups``."""
        raise NotImplementedError

    def _forward(self, x, where):
        """``(y, saved)``: the normalized ``x`` and what the backward needs."""
        y, *stats = _driver.forward(
            self.norm, x, self.weight, self.bias, eps=self.eps, where=where, **self._options(x)
        )
        return y, (x, tuple(stats), True, where)

    def _backward(self, dy, x, stats, input_stats, where):
        """``(dx, dweight[, dbias])`` of the forward that saved
        ``(x, stats, input_stats, where)``."""
        return _driver.backward(
            self.norm,
            dy,
            x,
            stats,
            self.weight,
            input_stats=input_stats,
            where=where,
            **self._options(x),
        )

    # --- parameters, gradients and modes --------------------------------------

    def parameters(self) -> dict[str, np.ndarray]:
        """Return the learnable parameter arrays themselves, not copies, by name.

        An optimizer updates them in place (``param -= lr * grad``); their
        gradients are in :attr:`grads` under the same names.  Running
        statistics are not parameters: see :meth:`state_dict`.

        Returns
        -------
        dict of str to ndarray
            ``weight`` and ``bias``, those the layer has (none without
            ``affine`` or ``elementwise_affine``).

        See Also
        --------
        zero_grad : Reset the gradients after an update.
        state_dict : Copies of the parameters and running statistics.

        Examples
        --------
        >>> import numbanorm as nn
        >>> ln = nn.LayerNorm(3, bias=False)
        >>> params = ln.parameters()
        >>> list(params), params["weight"] is ln.weight
        (['weight'], True)
        >>> params["weight"] -= 0.5
        >>> ln.weight
        array([0.5, 0.5, 0.5], dtype=float32)
        """
        return {
            name: getattr(self, name)
            for name in _PARAMETER_NAMES
            if getattr(self, name) is not None
        }

    def zero_grad(self) -> None:
        """Set every gradient in :attr:`grads` to zero, in place.

        :meth:`backward` adds to the gradients, so that the gradients of
        several backward passes add up; call this between optimizer steps.
        The arrays stay the same objects.

        See Also
        --------
        backward : Adds the parameters' gradients to :attr:`grads`.
        parameters : The arrays these are the gradients of.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> ln = nn.LayerNorm(2)
        >>> y = ln(np.array([[0.0, 2.0]], dtype=np.float32))
        >>> dx = ln.backward(np.array([[1.0, 3.0]], dtype=np.float32))
        >>> ln.grads["bias"]
        array([1., 3.], dtype=float32)
        >>> ln.zero_grad()
        >>> ln.grads["bias"]
        array([0., 0.], dtype=float32)
        """
        for grad in self.grads.values():
            grad[...] = 0

    def train(self, mode: bool = True) -> _NormLayer:
        """Set training mode, or evaluation mode with ``mode=False``.

        The mode decides which statistics the next forward uses (see
        :meth:`forward`); a backward follows the mode of its forward.
        Layers start in training mode.

        Parameters
        ----------
        mode : bool, optional
            True for training mode, False for evaluation mode.

        Returns
        -------
        layer
            The layer itself, so that calls chain: ``layer.train()(x)``.

        See Also
        --------
        eval : The same as ``train(False)``.

        Examples
        --------
        >>> import numbanorm as nn
        >>> bn = nn.BatchNorm(4)
        >>> bn.train(False).training, bn.train().training
        (False, True)
        """
        self.training = bool(mode)
        return self

    def eval(self) -> _NormLayer:
        """Set evaluation mode, in which batch and instance norm use the running statistics.

        The same as ``train(False)``.  Without running statistics
        (``track_running_stats=False``) evaluation mode still normalizes
        with the statistics of the input, as in PyTorch.

        Returns
        -------
        layer
            The layer itself, so that calls chain: ``layer.eval()(x)``.

        See Also
        --------
        train : Set either mode.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> bn = nn.BatchNorm(2).eval()  # running mean 0 and variance 1
        >>> bn(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)).round(3)
        array([[1., 2.],
               [3., 4.]], dtype=float32)
        """
        return self.train(False)

    # --- state dicts ----------------------------------------------------------

    def _state(self):
        return {
            name: getattr(self, name) for name in _STATE_NAMES if getattr(self, name) is not None
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return copies of the parameters and running statistics, by PyTorch's key names.

        The copies do not change as training goes on (PyTorch's state dict
        shares storage with the module).  ``np.savez(path, **layer.state_dict())``
        saves one, and :meth:`load_state_dict` restores it, also into the
        corresponding PyTorch module (``torch.nn.BatchNorm2d``, say).

        Returns
        -------
        dict of str to ndarray
            ``weight``, ``bias``, ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` (a 0-d int64 array), those the layer has.

        See Also
        --------
        load_state_dict : Copy a state dict into the layer.
        parameters : The parameter arrays themselves.

        Examples
        --------
        >>> import numbanorm as nn
        >>> bn = nn.BatchNorm(3)
        >>> state = bn.state_dict()
        >>> sorted(state)
        ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
        >>> bn.weight[:] = 2.0
        >>> state["weight"]
        array([1., 1., 1.], dtype=float32)
        """
        return {name: value.copy() for name, value in self._state().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters and running statistics from ``state_dict`` into the layer's arrays.

        Values are converted to the layer's dtype (``num_batches_tracked``
        to int64) and copied into the existing arrays, so that references
        to them (an optimizer's, :meth:`parameters`) stay valid.  A state
        dict of the corresponding PyTorch module, with CPU tensors or NumPy
        arrays as values, loads unchanged, and so does an ``np.load`` of a
        saved one.  Nothing is modified when an error is raised.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Values by PyTorch's key names, as :meth:`state_dict` gives them.
        strict : bool, optional
            Require exactly the layer's keys.  With False, the keys it lacks
            are left unchanged and the keys the layer lacks are ignored.

        Raises
        ------
        KeyError
            If ``strict`` and keys are missing or unexpected.
        ValueError
            If a value's shape differs from the layer's array.
        TypeError
            If a value is not an array of real numbers.

        See Also
        --------
        state_dict : The state dict of a layer.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> trained = nn.BatchNorm(2)
        >>> trained.running_mean[:] = [0.5, -1.0]
        >>> bn = nn.BatchNorm(2, dtype=np.float64)
        >>> bn.load_state_dict(trained.state_dict())
        >>> bn.running_mean
        array([ 0.5, -1. ])
        >>> bn.load_state_dict({"weight": [3, 4]}, strict=False)
        >>> bn.weight
        array([3., 4.])
        """
        own = self._state()
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        if strict and (missing or unexpected):
            problems = [f"missing key(s) {missing}"] * bool(missing) + [
                f"unexpected key(s) {unexpected}"
            ] * bool(unexpected)
            raise KeyError(
                f"error loading state dict into {type(self).__name__}: " + "; ".join(problems)
            )
        incoming = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.dtype.kind not in "fiub":
                raise TypeError(
                    f"state dict entry {name!r} must be a real array, got dtype {value.dtype}"
                )
            if value.shape != target.shape:
                raise ValueError(
                    f"size mismatch for {name!r}: the state dict has shape "
                    f"{value.shape}, the layer {target.shape}"
                )
            incoming[name] = value
        for name, value in incoming.items():
            own[name][...] = value

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_fields)
        return f"{type(self).__name__}({fields})"


# ----------------------------------------------------------------------------
# Layers with a channel axis: batch, instance and group norm


class _ChannelNorm(_NormLayer):
    """A layer whose parameters are per channel, on the channel axis ``axis``."""

    def __init__(self, num_channels, *, axis, **kwargs):
        name = "num_channels" if self.norm.grouped else "num_features"
        channels = integer(num_channels, name)
        if channels < 1:
            raise ValueError(f"{name} must be a positive integer, got {channels}")
        self.axis = integer(axis, "axis")
        super().__init__((channels,), **kwargs)
        self._num_channels = channels

    def _options(self, x):
        return dict(axis=self.axis)

    def check_input(self, x: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``x`` has the layer's channels on its channel axis.

        :meth:`forward` and :func:`numbanorm.recompute_stats` call it before
        they compute anything.  Batch and group norm need at least two
        dimensions (a sample axis and the channel axis), instance norm
        three.

        Parameters
        ----------
        x : ndarray
            An input for the layer, to be checked.

        Raises
        ------
        ValueError
            If ``x`` has too few dimensions, no axis ``axis`` or another
            number of channels on it.

        See Also
        --------
        forward : Checks its input with this method.
        numbanorm.recompute_stats : Checks every batch with this method.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> bn = nn.BatchNorm(3, axis=-1)
        >>> bn.check_input(np.zeros((8, 5, 5, 3)))
        >>> bn.check_input(np.zeros((8, 3, 5, 5)))
        Traceback (most recent call last):
            ...
        ValueError: BatchNorm expects 3 channels on axis -1, got input of shape (8, 3, 5, 5)
        """
        name = type(self).__name__
        if x.ndim < self.norm.min_ndim:
            raise ValueError(
                f"{name} expects input with at least {self.norm.min_ndim} "
                f"dimensions, got shape {x.shape}"
            )
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(
                f"{name} has channel axis {self.axis}, out of range for input of shape {x.shape}"
            )
        if x.shape[self.axis] != self._num_channels:
            raise ValueError(
                f"{name} expects {self._num_channels} channels on axis "
                f"{self.axis}, got input of shape {x.shape}"
            )


class _RunningStatsNorm(_ChannelNorm):
    """Batch and instance norm: running statistics updated in training mode."""

    _repr_fields = ("num_features", "eps", "momentum", "affine", "track_running_stats", "axis")

    def __init__(self, num_features, *, eps, momentum, affine, track_running_stats, axis, dtype):
        if momentum is not None:
            value = real_number(momentum, "momentum", "None or a real number")
            if not 0 <= value <= 1:
                raise ValueError(f"momentum must be None or in [0, 1], got {momentum}")
        self.num_features = num_features
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        super().__init__(
            num_features,
            axis=axis,
            eps=eps,
            dtype=dtype,
            weight=affine,
            bias=affine,
            running_stats=track_running_stats,
        )

    def _forward(self, x, where):
        # As in PyTorch: without running statistics, evaluation mode also
        # normalizes with the statistics of the input.
        input_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = 0.0
        if update:
            batches = int(self.num_batches_tracked) + 1
            momentum = 1.0 / batches if self.momentum is None else self.momentum
        y, *stats = self._normalize(x, input_stats, momentum, where)
        if update:
            self.num_batches_tracked += 1
        return y, (x, tuple(stats), input_stats, where)

    def _normalize(self, x, input_stats, momentum, where):
        """``(y, *statistics)`` of the norm with the layer's running statistics."""
        return _driver.forward(
            self.norm,
            x,
            self.weight,
            self.bias,
            running_mean=self.running_mean,
            running_var=self.running_var,
            input_stats=input_stats,
            momentum=momentum,
            eps=self.eps,
            where=where,
            **self._options(x),
        )

    def reset_running_stats(self) -> None:
        """Reset the running mean to 0, the running variance to 1 and the batch count to 0.

        The values a new layer starts with, written in place.  A layer
        without running statistics (``track_running_stats=False``) is left
        as it is.  The parameters are not changed.

        See Also
        --------
        numbanorm.recompute_stats : Set the running statistics to those of a data set.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> bn = nn.BatchNorm(2)
        >>> y = bn(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32))
        >>> bn.running_mean, int(bn.num_batches_tracked)
        (array([0.2, 0.4], dtype=float32), 1)
        >>> bn.reset_running_stats()
        >>> bn.running_mean, int(bn.num_batches_tracked)
        (array([0., 0.], dtype=float32), 0)
        """
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0


@layer_doc
class BatchNorm(_RunningStatsNorm):
    """Batch normalization layer, as ``torch.nn.BatchNorm1d/2d/3d``, for input of any rank.

    Each channel is normalized over every other axis: in training mode with
    the statistics of the batch, which also update the running statistics,
    and in evaluation mode with the running statistics.  The layer holds
    its parameters, their gradients and the running statistics under
    PyTorch's names, and calls :func:`numbanorm.batch_norm_forward` and
    :func:`numbanorm.batch_norm_backward`.

    {running_stats_sections}

    See Also
    --------
    numbanorm.batch_norm_forward : The function of the forward pass.
    numbanorm.recompute_stats : Exact running statistics over a data set.
    numbanorm.distributed.SyncBatchNorm : With batches split across processes.

    Notes
    -----
    In training mode each channel is normalized with the mean and the
    biased variance of its ``n`` elements in the batch::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    and the running statistics are updated with the unbiased variance::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)

    With ``momentum=None`` the factor is ``1 / num_batches_tracked``
    (this batch included), which makes them the averages over the batches.
    Evaluation mode normalizes with ``running_mean`` and ``running_var``
    in place of ``mean`` and ``var``.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> bn = nn.BatchNorm(2)
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)  # (N, C)
    >>> bn(x).round(3)  # training mode: the batch's statistics
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> bn.running_mean, bn.running_var
    (array([0.2, 2. ], dtype=float32), array([ 1.1, 20.9], dtype=float32))
    >>> dx = bn.backward(np.ones_like(x))
    >>> bn.grads["bias"]
    array([2., 2.], dtype=float32)
    >>> bn.eval()(x).round(3)  # evaluation mode: the running statistics
    array([[0.763, 1.75 ],
           [2.67 , 6.125]], dtype=float32)
    """

    norm = BATCH_NORM

    def __init__(
        self,
        num_features,
        *,
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


@layer_doc
class InstanceNorm(_RunningStatsNorm):
    """Instance normalization layer, as ``torch.nn.InstanceNorm1d/2d/3d``.

    Each (sample, channel) pair, an instance, is normalized over the
    remaining axes with its own statistics.  The sample axis is axis 0, or
    axis 1 when the channel axis is 0, so input needs at least three
    dimensions.  The parameters are those of :class:`BatchNorm` with other
    defaults, ``affine=False`` and ``track_running_stats=False``, as in
    PyTorch; the running statistics average the statistics of the
    instances.  The layer calls :func:`numbanorm.instance_norm_forward` and
    :func:`numbanorm.instance_norm_backward`.

    {running_stats_sections}

    See Also
    --------
    numbanorm.instance_norm_forward : The function of the forward pass.
    BatchNorm : Statistics per channel over the whole batch.
    GroupNorm : Statistics per sample over groups of channels.

    Notes
    -----
    In training mode (and in evaluation mode without running statistics)
    each instance is normalized as in batch norm, with its own mean and
    biased variance.  The running statistics follow batch norm's update
    with ``mean`` and ``var * n / (n - 1)`` averaged over the samples,
    ``n`` being the number of elements of an instance (with ``where``, of
    its selected elements; the average then covers the instances with at
    least 2 of them).

    Unlike PyTorch's ``InstanceNorm``, which never counts batches and with
    ``momentum=None`` never updates its running statistics, this layer
    counts its training batches in ``num_batches_tracked`` and takes
    ``momentum=None`` as the cumulative average, as batch norm does.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> inorm = nn.InstanceNorm(2, track_running_stats=True)
    >>> x = np.array([[[1, 2, 6], [0, 4, 8]], [[3, 3, 0], [1, 1, 4]]], dtype=np.float32)
    >>> inorm(x).round(3)  # (N, C, L): each row of 3 on its own
    array([[[-0.926, -0.463,  1.389],
            [-1.225,  0.   ,  1.225]],
    <BLANKLINE>
           [[ 0.707,  0.707, -1.414],
            [-0.707, -0.707,  1.414]]], dtype=float32)
    >>> inorm.running_mean, inorm.running_var
    (array([0.25, 0.3 ], dtype=float32), array([1.4 , 1.85], dtype=float32))
    """

    norm = INSTANCE_NORM

    def __init__(
        self,
        num_features,
        *,
        eps=1e-5,
        momentum=0.1,
        affine=False,
        track_running_stats=False,
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


@layer_doc
class GroupNorm(_ChannelNorm):
    """Group normalization layer, as ``torch.nn.GroupNorm``.

    The channels are split into ``num_groups`` groups of consecutive
    channels, and each (sample, group) pair is normalized over its
    channels and every other axis but the sample axis (axis 0, or axis 1
    when the channel axis is 0).  The statistics are always those of the
    input: training and evaluation modes compute the same thing.  The
    layer calls :func:`numbanorm.group_norm_forward` and
    :func:`numbanorm.group_norm_backward`.

    Parameters
    ----------
    num_groups : int
        Number of groups; must divide ``num_channels``.
    num_channels : int
        Number of channels ``C``.
    {eps}
    {affine}
    {channel_axis}
    {dtype}

    Attributes
    ----------
    {layer_attributes}

    Raises
    ------
    TypeError
        If ``dtype`` is not a floating-point dtype or ``axis`` is not an
        integer.
    ValueError
        If ``num_groups`` is below 1 or does not divide ``num_channels``,
        or ``eps`` is negative or NaN.

    See Also
    --------
    numbanorm.group_norm_forward : The function of the forward pass.
    InstanceNorm : One group per channel.
    LayerNorm : Statistics over chosen axes.

    Notes
    -----
    With the mean and biased variance of the elements of group ``g`` of
    sample ``s``, each element of channel ``c`` in it becomes::

        y = (x - mean[s, g]) / sqrt(var[s, g] + eps) * weight[c] + bias[c]

    One group is layer norm over all but the sample axis with per-channel
    parameters; ``num_channels`` groups is instance norm.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> gn = nn.GroupNorm(2, 4)
    >>> x = np.array([[0, 1, 2, 3], [1, 1, 1, 5]], dtype=np.float32)  # (N, C)
    >>> gn(x).round(3)  # groups: channels 0 and 1, channels 2 and 3
    array([[-1.,  1., -1.,  1.],
           [ 0.,  0., -1.,  1.]], dtype=float32)
    """

    norm = GROUP_NORM
    _repr_fields = ("num_groups", "num_channels", "eps", "affine", "axis")

    def __init__(
        self, num_groups, num_channels, *, eps=1e-5, affine=True, axis=1, dtype=np.float32
    ):
        self.num_groups = integer(num_groups, "num_groups")
        if self.num_groups < 1 or integer(num_channels, "num_channels") % self.num_groups:
            raise ValueError(
                f"num_groups must be a positive integer dividing num_channels "
                f"({num_channels!r}), got {num_groups!r}"
            )
        self.num_channels = num_channels
        self.affine = bool(affine)
        super().__init__(num_channels, axis=axis, eps=eps, dtype=dtype, weight=affine, bias=affine)

    def _options(self, x):
        return dict(axis=self.axis, num_groups=self.num_groups)


# ----------------------------------------------------------------------------
# Layers over a normalized shape: layer and RMS norm


class _ShapeNorm(_NormLayer):
    """A layer normalizing over axes of sizes ``normalized_shape``.

    ``axis=None`` means the trailing ``len(normalized_shape)`` axes.
    """

    def __init__(self, normalized_shape, *, axis, **kwargs):
        shape = integers(normalized_shape, "normalized_shape")
        if not shape or min(shape) < 1:
            raise ValueError(
                f"normalized_shape must be a positive integer or a non-empty "
                f"tuple of them, got {normalized_shape!r}"
            )
        self.normalized_shape = shape
        if axis is not None:
            count = len(integers(axis, "axis"))
            if count != len(self.normalized_shape):
                raise ValueError(
                    f"axis {axis!r} names {count} axes but normalized_shape "
                    f"{self.normalized_shape} has {len(self.normalized_shape)}"
                )
        self.axis = axis
        super().__init__(self.normalized_shape, **kwargs)

    def _axes(self, x):
        """The normalized axes of ``x``, as a sorted tuple."""
        if self.axis is None:
            return tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        return axes_tuple(self.axis, x.ndim)

    def _options(self, x):
        return dict(axis=self._axes(x))

    def check_input(self, x: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``x`` has the layer's sizes on the normalized axes.

        :meth:`forward` calls it before it computes anything.  The
        normalized axes are ``axis``, or the trailing
        ``len(normalized_shape)`` axes of ``x`` when ``axis`` is None; the
        other axes may have any sizes.

        Parameters
        ----------
        x : ndarray
            A prospective input of the layer.

        Raises
        ------
        ValueError
            If ``x`` lacks the normalized axes or has other sizes on them.

        See Also
        --------
        forward : The forward, which calls it first.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> rms = nn.RMSNorm((4, 5))
        >>> rms.check_input(np.zeros((2, 3, 4, 5)))
        >>> rms.check_input(np.zeros((2, 4, 5, 3)))
        Traceback (most recent call last):
            ...
        ValueError: RMSNorm expects input of sizes (4, 5) on axes (2, 3), got shape (2, 4, 5, 3)
        """
        name = type(self).__name__
        if x.ndim < len(self.normalized_shape):
            raise ValueError(
                f"{name} expects input with trailing shape "
                f"{self.normalized_shape}, got shape {x.shape}"
            )
        axes = self._axes(x)
        if tuple(x.shape[a] for a in axes) != self.normalized_shape:
            raise ValueError(
                f"{name} expects input of sizes {self.normalized_shape} on axes "
                f"{axes}, got shape {x.shape}"
            )


@layer_doc
class LayerNorm(_ShapeNorm):
    """Layer normalization layer, as ``torch.nn.LayerNorm``.

    Each slice over the normalized axes (the trailing ones, by default) is
    normalized with its own mean and variance, in training and evaluation
    mode alike, then scaled and shifted elementwise.  The layer calls
    :func:`numbanorm.layer_norm_forward` and
    :func:`numbanorm.layer_norm_backward`.

    Parameters
    ----------
    {normalized_shape}
    {eps}
    elementwise_affine : bool, optional
        Learn an elementwise ``weight`` (initialized to ones) and, with
        ``bias``, a ``bias`` (zeros).
    bias : bool, optional
        Learn a ``bias`` too, when ``elementwise_affine`` is True.
    {normalized_axes}
    {dtype}

    {shape_norm_sections}

    See Also
    --------
    numbanorm.layer_norm_forward : The function of the forward pass.
    RMSNorm : Without the centering.

    Notes
    -----
    With the mean and biased variance of each slice over the normalized
    axes::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> ln = nn.LayerNorm((2, 3), axis=(0, 2))  # the sizes of axes 0 and 2
    >>> x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    >>> y = ln(x)
    >>> ln.weight.shape, y.shape
    ((2, 3), (2, 4, 3))
    >>> y[:, 0].round(3)  # one slice: position 0 of axis 1
    array([[-1.156, -0.991, -0.826],
           [ 0.826,  0.991,  1.156]], dtype=float32)
    """

    norm = LAYER_NORM
    _repr_fields = ("normalized_shape", "eps", "elementwise_affine", "axis")

    def __init__(
        self,
        normalized_shape,
        *,
        eps=1e-5,
        elementwise_affine=True,
        bias=True,
        axis=None,
        dtype=np.float32,
    ):
        self.elementwise_affine = bool(elementwise_affine)
        super().__init__(
            normalized_shape,
            axis=axis,
            eps=eps,
            dtype=dtype,
            weight=elementwise_affine,
            bias=elementwise_affine and bias,
        )


@layer_doc
class RMSNorm(_ShapeNorm):
    """RMS normalization layer, as ``torch.nn.RMSNorm``.

    Each slice over the normalized axes (the trailing ones, by default) is
    divided by its root mean square, in training and evaluation mode
    alike, then scaled elementwise: layer norm without the centering and
    the bias.  The layer calls :func:`numbanorm.rms_norm_forward` and
    :func:`numbanorm.rms_norm_backward`.

    Parameters
    ----------
    {normalized_shape}
    eps : float or None, optional
        Added to the mean square.  None means the machine epsilon of the
        result's dtype (``np.finfo(np.float32).eps`` for float32 input), as
        in PyTorch.
    elementwise_affine : bool, optional
        Learn an elementwise ``weight`` (initialized to ones).
    {normalized_axes}
    {dtype}

    {shape_norm_sections}

    See Also
    --------
    numbanorm.rms_norm_forward : The function of the forward pass.
    LayerNorm : With centering and a bias.

    Notes
    -----
    With the mean of the squares of each slice over the normalized axes::

        y = x / sqrt(mean(x**2) + eps) * weight

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> rms = nn.RMSNorm(2)
    >>> rms(np.array([[3, 4], [1, -1]], dtype=np.float32)).round(4)
    array([[ 0.8485,  1.1314],
           [ 1.    , -1.    ]], dtype=float32)
    """

    norm = RMS_NORM
    _repr_fields = ("normalized_shape", "eps", "elementwise_affine", "axis")

    def __init__(
        self, normalized_shape, *, eps=None, elementwise_affine=True, axis=None, dtype=np.float32
    ):
        self.elementwise_affine = bool(elementwise_affine)
        super().__init__(
            normalized_shape, axis=axis, eps=eps, dtype=dtype, weight=elementwise_affine, bias=False
        )
