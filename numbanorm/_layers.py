"""Stateful normalization layers on top of the functional API.

Each layer owns its parameters (``weight``, ``bias``), running statistics
(``running_mean``, ``running_var``, ``num_batches_tracked``) and the
gradients of its parameters, with PyTorch's names and semantics, so that
state dicts move between the two unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _driver
from ._arrays import axes_tuple
from ._specs import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, RMS_NORM, Norm

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

_PARAMETER_NAMES = ("weight", "bias")
_STATE_NAMES = _PARAMETER_NAMES + ("running_mean", "running_var", "num_batches_tracked")


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
        if eps is not None and not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
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
        """Normalize ``x`` in the current mode and keep what :meth:`backward` needs.

        The layer keeps references to ``x`` and ``where``: do not modify them
        in place before the backward.

        Parameters
        ----------
        x : array_like
            Input.
        where : array_like of bool, optional
            The elements the input's statistics cover, broadcastable to
            ``x`` (for example ``(N, 1, T)`` to leave out padded time steps
            of an ``(N, C, T)`` batch); None covers every element.  Every
            element is normalized; a group with none selected is set to the
            bias.  The backward feeds the gradient through the statistics
            back to the selected elements only.  Training batch and
            instance norm fold the statistics of the selected elements into
            the running ones (see :func:`numbanorm.batch_norm_forward`);
            statistics taken from the running ones (evaluation mode) ignore
            it.

        Returns
        -------
        y : ndarray
            The normalized ``x``.
        """
        x = np.asarray(x)
        self.check_input(x)
        y, self._saved = self._forward(x, where)
        self._has_run_forward = True
        return y

    __call__ = forward

    def backward(self, dy: Any) -> np.ndarray:
        """Gradient with respect to the last forward's input.

        The gradients of the parameters are added to :attr:`grads`.  Each
        forward allows one backward, which uses the forward's ``where``.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last forward's output.

        Returns
        -------
        dx : ndarray
            Gradient with respect to the last forward's input.
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
        """Raise ``ValueError`` unless ``x`` (an ndarray) fits the layer's shapes."""
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
        """The parameter arrays themselves (not copies), by name.

        An optimizer may update them in place; their gradients are in
        :attr:`grads` under the same names.
        """
        return {
            name: getattr(self, name)
            for name in _PARAMETER_NAMES
            if getattr(self, name) is not None
        }

    def zero_grad(self) -> None:
        """Set every gradient in :attr:`grads` to zero, in place."""
        for grad in self.grads.values():
            grad[...] = 0

    def train(self, mode: bool = True) -> _NormLayer:
        """Set training mode (``mode=True``) or evaluation mode; returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> _NormLayer:
        """Set evaluation mode; returns ``self``."""
        return self.train(False)

    # --- state dicts ----------------------------------------------------------

    def _state(self):
        return {
            name: getattr(self, name) for name in _STATE_NAMES if getattr(self, name) is not None
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and running statistics, with PyTorch's key names.

        Returns
        -------
        dict
            ``weight``, ``bias``, ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` (a 0-d int64 array), those the layer has.
        """
        return {name: value.copy() for name, value in self._state().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters and running statistics from ``state_dict`` in place.

        Values are converted to the layer's dtype (``num_batches_tracked`` to
        int64).  A state dict of the corresponding PyTorch module, with NumPy
        arrays or CPU tensors as values, loads unchanged.  Nothing is modified
        when an error is raised.

        Parameters
        ----------
        state_dict : mapping
            Name to array.
        strict : bool, optional
            Require exactly the layer's keys; with False, missing keys are left
            unchanged and unknown keys are ignored.
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
        if not isinstance(num_channels, numbers.Integral) or num_channels < 1:
            raise ValueError(
                f"the number of channels must be a positive integer, got {num_channels!r}"
            )
        if not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis must be an integer, got {axis!r}")
        self.axis = int(axis)
        super().__init__((int(num_channels),), **kwargs)
        self._num_channels = int(num_channels)

    def _options(self, x):
        return dict(axis=self.axis)

    def check_input(self, x):
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
        if momentum is not None and not 0 <= momentum <= 1:
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
        """Running mean to 0, running variance to 1 and the batch count to 0."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0


class BatchNorm(_RunningStatsNorm):
    """Batch normalization layer, as ``torch.nn.BatchNorm1d/2d/3d`` for any rank.

    Each channel is normalized over every other axis: with the batch's
    statistics in training mode, which also updates the running statistics,
    and with the running statistics in evaluation mode.

    Parameters
    ----------
    num_features : int
        Number of channels ``C``.
    eps : float, optional
        Added to the variance.
    momentum : float or None, optional
        Weight of the new batch statistic in the running average (PyTorch's
        convention); None gives the cumulative average over the
        ``num_batches_tracked`` batches seen.
    affine : bool, optional
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, optional
        Keep running statistics; without them, evaluation mode also uses the
        batch statistics.
    axis : int, optional
        Channel axis: 1 for ``(N, C, ...)`` input, -1 for channels-last.
    dtype : dtype, optional
        dtype of the parameters and running statistics.

    Examples
    --------
    >>> bn = BatchNorm(3)
    >>> x = np.random.default_rng(0).standard_normal((8, 3, 4, 4), dtype=np.float32)
    >>> y = bn(x)                   # training mode: batch statistics
    >>> dx = bn.backward(np.ones_like(y))
    >>> y = bn.eval()(x)            # evaluation mode: running statistics
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


class InstanceNorm(_RunningStatsNorm):
    """Instance normalization layer, as ``torch.nn.InstanceNorm1d/2d/3d``.

    Each (sample, channel) is normalized over the remaining axes.  The sample
    axis is axis 0, or axis 1 when the channel axis is 0; input needs a
    sample axis (at least three dimensions).

    The parameters are those of :class:`BatchNorm`, with other defaults:
    ``affine=False`` and ``track_running_stats=False``.  The running
    statistics average the per-instance statistics over the batch.  Unlike
    PyTorch's InstanceNorm, which never counts batches and takes
    ``momentum=None`` as 0 (no update), ``num_batches_tracked`` counts the
    training batches and ``momentum=None`` gives the cumulative average, as
    in batch norm.
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


class GroupNorm(_ChannelNorm):
    """Group normalization layer, as ``torch.nn.GroupNorm``.

    The channels are split into ``num_groups`` groups of consecutive channels;
    each (sample, group) is normalized over its channels and the remaining
    axes.  Training and evaluation modes compute the same thing.

    Parameters
    ----------
    num_groups : int
        Number of groups; must divide ``num_channels``.
    num_channels : int
        Number of channels ``C``.
    eps : float, optional
        Added to the variance.
    affine : bool, optional
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    axis : int, optional
        Channel axis; the sample axis is axis 0 (axis 1 when ``axis`` is 0).
    dtype : dtype, optional
        dtype of the parameters.
    """

    norm = GROUP_NORM
    _repr_fields = ("num_groups", "num_channels", "eps", "affine", "axis")

    def __init__(
        self, num_groups, num_channels, *, eps=1e-5, affine=True, axis=1, dtype=np.float32
    ):
        if (
            not isinstance(num_groups, numbers.Integral)
            or num_groups < 1
            or not isinstance(num_channels, numbers.Integral)
            or num_channels % num_groups
        ):
            raise ValueError(
                f"num_groups must be a positive integer dividing num_channels "
                f"({num_channels!r}), got {num_groups!r}"
            )
        self.num_groups = int(num_groups)
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
        shape = (
            (normalized_shape,)
            if isinstance(normalized_shape, numbers.Integral)
            else tuple(normalized_shape)
        )
        if not shape or not all(isinstance(n, numbers.Integral) and n >= 1 for n in shape):
            raise ValueError(
                f"normalized_shape must be a positive integer or a non-empty "
                f"tuple of them, got {normalized_shape!r}"
            )
        self.normalized_shape = tuple(int(n) for n in shape)
        if axis is not None:
            count = 1 if isinstance(axis, numbers.Integral) else len(tuple(axis))
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

    def check_input(self, x):
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


class LayerNorm(_ShapeNorm):
    """Layer normalization layer, as ``torch.nn.LayerNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        Sizes of the normalized axes, in increasing axis order; also the shape
        of ``weight`` and ``bias``.
    eps : float, optional
        Added to the variance.
    elementwise_affine : bool, optional
        Learn an elementwise ``weight`` (ones) and, with ``bias``, a ``bias``
        (zeros).
    bias : bool, optional
        Learn a ``bias`` when ``elementwise_affine``.
    axis : None or int or tuple of ints, optional
        Normalized axes; None means the trailing ``len(normalized_shape)``
        axes, as in PyTorch.
    dtype : dtype, optional
        dtype of the parameters.
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


class RMSNorm(_ShapeNorm):
    """RMS normalization layer, as ``torch.nn.RMSNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        As in :class:`LayerNorm`.
    eps : float or None, optional
        Added to the mean square; None means the machine epsilon of the
        input's result dtype.
    elementwise_affine : bool, optional
        Learn an elementwise ``weight`` (ones).
    axis : None or int or tuple of ints, optional
        As in :class:`LayerNorm`.
    dtype : dtype, optional
        dtype of the parameters.
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
