"""The public norms: thin wrappers of the generic driver, one per function.

Each function passes its arguments to :func:`numbanorm._driver.forward` or
:func:`numbanorm._driver.backward` with its norm's specification
(``_specs.py``); everything else is documentation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _driver
from ._specs import BATCH_NORM, GROUP_NORM, INSTANCE_NORM, LAYER_NORM, RMS_NORM

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "group_norm",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm",
    "rms_norm_backward",
    "rms_norm_forward",
]

# ----------------------------------------------------------------------------
# batch norm


def batch_norm_forward(
    x: ArrayLike,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
) -> tuple[Any, Any, Any]:
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
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (a
        mask ``(N, 1, T)`` of the valid frames of padded sequences ``(N, C,
        T)``, say); all by default.  ``y`` is computed for every element
        with its group's statistics; a group with no selected element has
        ``mean = rstd = 0`` and gives the bias.

    Returns
    -------
    y : ndarray
        Result dtype of ``x`` (float16 stays float16, integers give float64).
    mean, rstd : ndarray
        ``(C,)`` statistics used, ``rstd = 1 / sqrt(var + eps)``; the running
        statistics in evaluation mode.

    See Also
    --------
    batch_norm : the same without the statistics, with ``out=``.
    batch_norm_backward : the gradients.
    """
    return _driver.forward(
        BATCH_NORM,
        x,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        input_stats=training,
        momentum=momentum,
        eps=eps,
        axis=axis,
        where=where,
    )


def batch_norm(
    x: ArrayLike,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> Any:
    """Batch normalization.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, training, momentum, eps, axis, where
        As in :func:`batch_norm_forward`; ``training`` defaults to True,
        unlike ``torch.nn.functional.batch_norm``.
    out : ndarray, optional
        Receives the result (it may be ``x``) and is returned.

    Returns
    -------
    y : ndarray
        ``out``, or a new array of the result dtype of ``x``.
    """
    return _driver.forward(
        BATCH_NORM,
        x,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        input_stats=training,
        momentum=momentum,
        eps=eps,
        axis=axis,
        out=out,
        stats=False,
        where=where,
    )[0]


def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    training: bool = True,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, Any, Any]:
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
    where : array_like of bool, optional
        The forward's ``where``: the feedback through the statistics reaches
        the elements it selects only.
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
    return _driver.backward(
        BATCH_NORM,
        dy,
        x,
        (mean, rstd),
        weight,
        input_stats=training,
        axis=axis,
        out=out,
        where=where,
    )


# ----------------------------------------------------------------------------
# instance norm


def instance_norm_forward(
    x: ArrayLike,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
) -> tuple[Any, Any, Any]:
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
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (a
        mask ``(N, 1, T)`` of the valid frames of padded sequences ``(N, C,
        T)``, say); all by default.  ``y`` is computed for every element
        with its group's statistics; a group with no selected element has
        ``mean = rstd = 0`` and gives the bias.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        ``(N, C)`` statistics used (the running statistics broadcast to
        ``(N, C)`` when ``use_input_stats`` is False).
    """
    return _driver.forward(
        INSTANCE_NORM,
        x,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        input_stats=use_input_stats,
        momentum=momentum,
        eps=eps,
        axis=axis,
        where=where,
    )


def instance_norm(
    x: ArrayLike,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> Any:
    """Instance normalization.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, axis, where
        As in :func:`instance_norm_forward`.
    out : ndarray, optional
        Receives the result (it may be ``x``) and is returned.

    Returns
    -------
    y : ndarray
    """
    return _driver.forward(
        INSTANCE_NORM,
        x,
        weight,
        bias,
        running_mean=running_mean,
        running_var=running_var,
        input_stats=use_input_stats,
        momentum=momentum,
        eps=eps,
        axis=axis,
        out=out,
        stats=False,
        where=where,
    )[0]


def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    use_input_stats: bool = True,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of instance normalization.

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and the forward's input.
    mean, rstd : array_like
        ``(N, C)`` statistics returned by :func:`instance_norm_forward`.
    weight : array_like, optional
        ``(C,)`` weight used in the forward.
    use_input_stats : bool, optional
        Whether the forward used the instance statistics.
    axis : int, optional
        Channel axis.
    where : array_like of bool, optional
        The forward's ``where``: the feedback through the statistics reaches
        the elements it selects only.
    out : ndarray, optional
        Receives ``dx``, as in :func:`batch_norm_backward`.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray
        ``(C,)`` gradients.
    """
    return _driver.backward(
        INSTANCE_NORM,
        dy,
        x,
        (mean, rstd),
        weight,
        input_stats=use_input_stats,
        axis=axis,
        out=out,
        where=where,
    )


# ----------------------------------------------------------------------------
# group norm


def group_norm_forward(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
) -> tuple[Any, Any, Any]:
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
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (a
        mask ``(N, 1, T)`` of the valid frames of padded sequences ``(N, C,
        T)``, say); all by default.  ``y`` is computed for every element
        with its group's statistics; a group with no selected element has
        ``mean = rstd = 0`` and gives the bias.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        ``(N, num_groups)`` statistics.
    """
    return _driver.forward(
        GROUP_NORM, x, weight, bias, num_groups=num_groups, eps=eps, axis=axis, where=where
    )


def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> Any:
    """Group normalization.

    Parameters
    ----------
    x, num_groups, weight, bias, eps, axis, where
        As in :func:`group_norm_forward`.
    out : ndarray, optional
        Receives the result (it may be ``x``) and is returned.

    Returns
    -------
    y : ndarray
    """
    return _driver.forward(
        GROUP_NORM,
        x,
        weight,
        bias,
        num_groups=num_groups,
        eps=eps,
        axis=axis,
        out=out,
        stats=False,
        where=where,
    )[0]


def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    num_groups: int,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int = 1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of group normalization.

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and the forward's input.
    num_groups : int
        The forward's number of groups.
    mean, rstd : array_like
        ``(N, num_groups)`` statistics returned by :func:`group_norm_forward`.
    weight : array_like, optional
        ``(C,)`` weight used in the forward.
    axis : int, optional
        Channel axis.
    where : array_like of bool, optional
        The forward's ``where``: the feedback through the statistics reaches
        the elements it selects only.
    out : ndarray, optional
        Receives ``dx``, as in :func:`batch_norm_backward`.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray
        ``(C,)`` gradients.
    """
    return _driver.backward(
        GROUP_NORM,
        dy,
        x,
        (mean, rstd),
        weight,
        num_groups=num_groups,
        axis=axis,
        out=out,
        where=where,
    )


# ----------------------------------------------------------------------------
# layer norm


def layer_norm_forward(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float = 1e-5,
) -> tuple[Any, Any, Any]:
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
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (a
        mask ``(N, 1, T)`` of the valid frames of padded sequences ``(N, C,
        T)``, say); all by default.  ``y`` is computed for every element
        with its group's statistics; a group with no selected element has
        ``mean = rstd = 0`` and gives the bias.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        Statistics shaped like ``x`` without the normalized axes.
    """
    return _driver.forward(LAYER_NORM, x, weight, bias, axis=axis, eps=eps, where=where)


def layer_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float = 1e-5,
    out: np.ndarray | None = None,
) -> Any:
    """Layer normalization: each slice over ``axis`` to zero mean and unit variance.

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
    where : array_like of bool, optional
        As in :func:`layer_norm_forward`.
    out : ndarray, optional
        Receives the result (it may be ``x``) and is returned.

    Returns
    -------
    y : ndarray
        ``out``, or a new array of the result dtype of ``x``.

    See Also
    --------
    layer_norm_forward : the same, also returning the statistics.
    """
    return _driver.forward(
        LAYER_NORM, x, weight, bias, axis=axis, eps=eps, out=out, stats=False, where=where
    )[0]


def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, Any, Any]:
    """Gradients of layer normalization.

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and the forward's input.
    mean, rstd : array_like
        Statistics returned by :func:`layer_norm_forward`.
    weight : array_like, optional
        Weight used in the forward.
    axis : int or tuple of ints, optional
        Normalized axes.
    where : array_like of bool, optional
        The forward's ``where``: the feedback through the statistics reaches
        the elements it selects only.
    out : ndarray, optional
        Receives ``dx``, as in :func:`batch_norm_backward`.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray
        Shaped like the weight.
    """
    return _driver.backward(
        LAYER_NORM, dy, x, (mean, rstd), weight, axis=axis, out=out, where=where
    )


# ----------------------------------------------------------------------------
# RMS norm


def rms_norm_forward(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float | None = None,
) -> tuple[Any, Any]:
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
    where : array_like of bool, optional
        The elements the statistics come from, broadcastable to ``x`` (a
        mask ``(N, 1, T)`` of the valid frames of padded sequences ``(N, C,
        T)``, say); all by default.  ``y`` is computed for every element
        with its group's statistics; a group with no selected element has
        ``mean = rstd = 0`` and gives the bias.

    Returns
    -------
    y : ndarray
    rrms : ndarray
        ``1 / sqrt(mean(x**2) + eps)``, shaped like ``x`` without the
        normalized axes.
    """
    return _driver.forward(RMS_NORM, x, weight, axis=axis, eps=eps, where=where)


def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float | None = None,
    out: np.ndarray | None = None,
) -> Any:
    """RMS normalization ``x / sqrt(mean(x**2) + eps) * weight``.

    Parameters
    ----------
    x, weight, axis, eps, where
        As in :func:`rms_norm_forward`.
    out : ndarray, optional
        Receives the result (it may be ``x``) and is returned.

    Returns
    -------
    y : ndarray
    """
    return _driver.forward(
        RMS_NORM, x, weight, axis=axis, eps=eps, out=out, stats=False, where=where
    )[0]


def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rrms: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, Any]:
    """Gradients of RMS normalization.

    Parameters
    ----------
    dy, x : array_like
        Upstream gradient and the forward's input.
    rrms : array_like
        Statistic returned by :func:`rms_norm_forward`.
    weight : array_like, optional
        Weight used in the forward.
    axis : int or tuple of ints, optional
        Normalized axes.
    where : array_like of bool, optional
        The forward's ``where``: the feedback through the statistics reaches
        the elements it selects only.
    out : ndarray, optional
        Receives ``dx``, as in :func:`batch_norm_backward`.

    Returns
    -------
    dx : ndarray
    dweight : ndarray
        Shaped like the weight.
    """
    return _driver.backward(RMS_NORM, dy, x, (rrms,), weight, axis=axis, out=out, where=where)
