"""The public norms: thin wrappers of the generic driver, one per function.

Each function passes its arguments to :func:`numbanorm._driver.forward` or
:func:`numbanorm._driver.backward` with its norm's specification
(``_specs.py``); everything else is documentation.  The docstrings are
templates filled by :func:`numbanorm._docstrings.fill_doc`: each is a
summary line, a placeholder line for the skeleton of its kind
(``{plain_sections}``, ``{forward_sections}``, ``{backward_sections}``)
and its examples.  The norm's dictionary below holds the texts the
skeletons name that are the norm's own; the shared ones are in
``_docstrings.TEXTS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _driver
from ._docstrings import fill_doc
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

_BATCH_NORM_DOC = {
    "summary": """\
Normalizes each channel of ``x`` over every other axis (the batch and the
spatial axes) with the channel's mean and variance, then scales and
shifts it by the channel's ``weight`` and ``bias``.  In training (the
default, unlike ``torch.nn.functional.batch_norm``) the statistics are
those of ``x``, and the running statistics, when given, are updated in
place; in evaluation (``training=False``) the running statistics are used.
""",
    "parameters": """\
x : array_like
    Input of at least 2 dimensions, with channels on ``axis``.
    {x_dtypes}
{running_statistics}
{channel_parameters}
training : bool, optional
    Normalize with the statistics of ``x`` (True, the default) or with the
    running statistics (False: evaluation).
{running_norm_options}
""",
    "raises": """\
{running_norm_errors}
    Also if ``x`` has fewer than 2 dimensions, ``eps`` is negative or NaN,
    ``momentum`` is outside ``[0, 1]``, one running statistic is given
    without the other, or they are missing in evaluation; in training if
    a channel has fewer than 2 elements (or fewer than 2 selected by
    ``where`` while running statistics are updated), as in PyTorch; or
    if ``out`` shares memory with a running statistic being updated.
""",
    "statistics": """\
mean, rstd : ndarray
    The ``(C,)`` statistics ``y`` was computed with, ``rstd = 1 /
    sqrt(var + eps)``: those of ``x`` in training, the running
    statistics in evaluation.
    {statistics_dtype}
""",
    "see_also": """\
batch_norm_forward : The same, also returning the statistics.
batch_norm_backward : The gradients.
BatchNorm : The layer, holding the parameters and running statistics.
""",
    "forward_see_also": """\
batch_norm : The same without the statistics, with ``out=``.
batch_norm_backward : The gradients, from the statistics returned here.
moments : The mean and variance alone.
""",
    "notes": """\
{centered_forward}

In training, the running statistics, when given, are updated in place
with the batch's:

{running_update}

With ``where``, a channel with fewer than 2 selected elements has no
unbiased variance: the update then raises before anything is written.
In evaluation the running statistics are used, and ``where`` changes
nothing.
""",
    "backward_summary": """\
Takes the statistics :func:`batch_norm_forward` returned.  In training
they depend on ``x``, and the gradient flows through them; in
evaluation they are constants.
""",
    "backward_parameters": """\
mean, rstd : array_like
    The ``(C,)`` statistics returned by :func:`batch_norm_forward`.
    {refined_mean}
{backward_weight}
training : bool, optional
    Whether the forward normalized with the statistics of ``x`` (True,
    the default) or with the running statistics (False).
{channel_axis}
""",
    "gradients": "{channel_gradients}",
    "backward_raises": "{channel_backward_raises}",
    "backward_see_also": """\
batch_norm_forward : The forward, which returns ``mean`` and ``rstd``.
""",
    "backward_notes": r"""
{centered_backward}

In evaluation (``training=False``) the statistics are constants and
:math:`dx = \mathrm{rstd} \cdot g`.

{masked_backward}
""",
}


@fill_doc(**_BATCH_NORM_DOC)
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

    {forward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(12.0).reshape(2, 3, 2)  # (N, C, L)
    >>> weight, bias = np.full(3, 2.0), np.ones(3)
    >>> y, mean, rstd = numbanorm.batch_norm_forward(x, weight=weight, bias=bias)
    >>> np.allclose(rstd, 1 / np.sqrt(x.var(axis=(0, 2)) + 1e-5))
    True
    >>> np.allclose(y, (x - mean[:, None]) * rstd[:, None] * 2.0 + 1.0)
    True
    >>> print(np.round(mean, 4))
    [3.5 5.5 7.5]
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


@fill_doc(**_BATCH_NORM_DOC)
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
    """Batch normalization: each channel to zero mean and unit variance.

    {plain_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(12.0).reshape(2, 3, 2)  # (N, C, L)
    >>> running_mean, running_var = np.zeros(3), np.ones(3)
    >>> y = numbanorm.batch_norm(x, running_mean, running_var)
    >>> print(np.round(y[:, 0], 4))  # channel 0: 0, 1, 6, 7
    [[-1.1508 -0.822 ]
     [ 0.822   1.1508]]
    >>> print(np.round(running_mean, 4))  # 0.1 times the channels' means
    [0.35 0.55 0.75]

    In evaluation, the running statistics normalize ``x``:

    >>> y = numbanorm.batch_norm(x, running_mean, running_var, training=False)
    >>> expected = (x - running_mean[:, None]) / np.sqrt(running_var[:, None] + 1e-5)
    >>> np.allclose(y, expected)
    True
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


@fill_doc(**_BATCH_NORM_DOC)
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
    """Backward of batch normalization: ``dx``, ``dweight`` and ``dbias``.

    {backward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(12.0).reshape(2, 3, 2)
    >>> y, mean, rstd = numbanorm.batch_norm_forward(x)
    >>> dy = np.linspace(-1.0, 1.0, 12).reshape(x.shape)
    >>> dx, dweight, dbias = numbanorm.batch_norm_backward(dy, x, mean, rstd)
    >>> np.allclose(dx.sum(axis=(0, 2)), 0)  # the mean's gradient is zero
    True
    >>> np.allclose(dbias, dy.sum(axis=(0, 2)))
    True
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

_INSTANCE_NORM_DOC = {
    "summary": """\
Normalizes each (sample, channel) of ``x`` over the remaining, spatial
axes, then scales and shifts it by the channel's ``weight`` and
``bias``.  The sample axis is axis 0, or axis 1 when ``axis`` is 0.
With ``use_input_stats`` (the default) the statistics are each
instance's, and the running statistics, when given, are updated in place
with their average over the samples; otherwise the running statistics
normalize every sample.
""",
    "parameters": """\
x : array_like
    Input of at least 3 dimensions, with channels on ``axis``.
    {x_dtypes}
{running_statistics}
{channel_parameters}
use_input_stats : bool, optional
    Normalize with the statistics of each instance (True, the default) or
    with the running statistics (False).
{running_norm_options}
""",
    "raises": """\
{running_norm_errors}
    Also if ``x`` has fewer than 3 dimensions, ``eps`` is negative or NaN,
    ``momentum`` is outside ``[0, 1]``, one running statistic is given
    without the other, or they are missing without ``use_input_stats``;
    with it if an instance has fewer than 2 elements, or if a channel has
    fewer than 2 elements selected by ``where`` in every instance while
    running statistics are updated; or if ``out`` shares memory with a
    running statistic being updated.
""",
    "statistics": """\
mean, rstd : ndarray
    The ``(N, C)`` statistics ``y`` was computed with, ``rstd = 1 /
    sqrt(var + eps)``: the instances' with ``use_input_stats``, else
    the running statistics broadcast to ``(N, C)``.
    {statistics_dtype}
""",
    "see_also": """\
instance_norm_forward : The same, also returning the statistics.
instance_norm_backward : The gradients.
InstanceNorm : The layer, holding the parameters and running statistics.
""",
    "forward_see_also": """\
instance_norm : The same without the statistics, with ``out=``.
instance_norm_backward : The gradients, from the statistics returned here.
""",
    "notes": """\
{centered_forward}

With ``use_input_stats``, the running statistics, when given, are
updated in place with the instances' statistics averaged over the
samples:

{running_update}

With ``where``, the average runs over the instances with at least 2
selected elements.  Without ``use_input_stats`` the running statistics
are used, and ``where`` changes nothing.
""",
    "backward_summary": """\
Takes the statistics :func:`instance_norm_forward` returned.  With
``use_input_stats`` they depend on ``x``, and the gradient flows
through them; without, they are constants.
""",
    "backward_parameters": """\
mean, rstd : array_like
    The ``(N, C)`` statistics returned by :func:`instance_norm_forward`.
    {refined_mean}
{backward_weight}
use_input_stats : bool, optional
    Whether the forward normalized with the statistics of each instance
    (True, the default) or with the running statistics (False).
{channel_axis}
""",
    "gradients": "{channel_gradients}",
    "backward_raises": "{channel_backward_raises}",
    "backward_see_also": """\
instance_norm_forward : The forward, which returns ``mean`` and ``rstd``.
""",
    "backward_notes": r"""
{centered_backward}

Without ``use_input_stats`` the statistics are constants and
:math:`dx = \mathrm{rstd} \cdot g`.

{masked_backward}
""",
}


@fill_doc(**_INSTANCE_NORM_DOC)
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

    {forward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 2, 4)  # (N, C, L)
    >>> y, mean, rstd = numbanorm.instance_norm_forward(x)
    >>> print(np.round(mean, 4))
    [[ 1.5  5.5]
     [ 9.5 13.5]]
    >>> np.allclose(rstd, 1 / np.sqrt(x.var(axis=2) + 1e-5))
    True
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


@fill_doc(**_INSTANCE_NORM_DOC)
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
    """Instance normalization: each (sample, channel) to zero mean and unit variance.

    {plain_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 2, 4)  # (N, C, L)
    >>> running_mean, running_var = np.zeros(2), np.ones(2)
    >>> y = numbanorm.instance_norm(x, running_mean, running_var)
    >>> print(np.round(y[0], 4))
    [[-1.3416 -0.4472  0.4472  1.3416]
     [-1.3416 -0.4472  0.4472  1.3416]]
    >>> print(np.round(running_mean, 4), np.round(running_var, 4))
    [0.55 0.95] [1.0667 1.0667]
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


@fill_doc(**_INSTANCE_NORM_DOC)
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
    """Backward of instance normalization: ``dx``, ``dweight`` and ``dbias``.

    {backward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 2, 4)
    >>> y, mean, rstd = numbanorm.instance_norm_forward(x)
    >>> dy = np.linspace(-1.0, 1.0, 16).reshape(x.shape)
    >>> dx, dweight, dbias = numbanorm.instance_norm_backward(dy, x, mean, rstd)
    >>> np.allclose(dx.sum(axis=2), 0)  # the mean's gradient is zero
    True
    >>> np.allclose(dbias, dy.sum(axis=(0, 2)))
    True
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

_GROUP_NORM_DOC = {
    "summary": """\
The channels are split into ``num_groups`` groups of consecutive
channels; each (sample, group) of ``x`` is normalized over its channels
and the remaining axes, then each channel is scaled and shifted by its
``weight`` and ``bias``.  The sample axis is axis 0, or axis 1 when
``axis`` is 0.
""",
    "parameters": """\
x : array_like
    Input of at least 2 dimensions, with channels on ``axis``.
    {x_dtypes}
num_groups : int
    The number of groups; it must divide the number of channels.
{channel_parameters}
{eps}
{channel_axis}
{where}
""",
    "raises": """\
TypeError
    {type_errors}
    Also if ``num_groups`` or ``axis`` is not an integer, or ``eps`` is
    not a real number.
ValueError
    {value_errors}
    Also if ``x`` has fewer than 2 dimensions, ``num_groups`` is not
    positive or does not divide the number of channels, the groups are
    empty (no channel, or a spatial axis of size 0), or ``eps`` is
    negative or NaN.
""",
    "statistics": """\
mean, rstd : ndarray
    The ``(N, num_groups)`` statistics ``y`` was computed with,
    ``rstd = 1 / sqrt(var + eps)``.
    {statistics_dtype}
""",
    "see_also": """\
group_norm_forward : The same, also returning the statistics.
group_norm_backward : The gradients.
GroupNorm : The layer, holding the parameters.
""",
    "forward_see_also": """\
group_norm : The same without the statistics, with ``out=``.
group_norm_backward : The gradients, from the statistics returned here.
""",
    "notes": "{centered_forward}",
    "backward_summary": """\
Takes the statistics :func:`group_norm_forward` returned, which
depend on ``x``: the gradient flows through them.
""",
    "backward_parameters": """\
num_groups : int
    The forward's number of groups.
mean, rstd : array_like
    The ``(N, num_groups)`` statistics returned by
    :func:`group_norm_forward`.
    {refined_mean}
{backward_weight}
{channel_axis}
""",
    "gradients": "{channel_gradients}",
    "backward_raises": """\
TypeError
    {type_errors}
    Also if ``num_groups`` or ``axis`` is not an integer.
ValueError
    {value_errors}
    Also if ``x`` has fewer than 2 dimensions, ``num_groups`` is not
    positive or does not divide the number of channels, or a statistic
    is None.
""",
    "backward_see_also": """\
group_norm_forward : The forward, which returns ``mean`` and ``rstd``.
""",
    "backward_notes": "{centered_backward}\n\n{masked_backward}",
}


@fill_doc(**_GROUP_NORM_DOC)
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

    {forward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 4, 2)  # (N, C, L): 2 groups of 2 channels
    >>> y, mean, rstd = numbanorm.group_norm_forward(x, 2)
    >>> print(np.round(mean, 4))
    [[ 1.5  5.5]
     [ 9.5 13.5]]
    >>> groups = x.reshape(2, 2, 4)  # (N, num_groups, elements of a group)
    >>> np.allclose(rstd, 1 / np.sqrt(groups.var(axis=2) + 1e-5))
    True
    """
    return _driver.forward(
        GROUP_NORM, x, weight, bias, num_groups=num_groups, eps=eps, axis=axis, where=where
    )


@fill_doc(**_GROUP_NORM_DOC)
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
    """Group normalization: each group of channels of a sample to zero mean and unit variance.

    {plain_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 4, 2)  # (N, C, L): 2 groups of 2 channels
    >>> print(np.round(numbanorm.group_norm(x, 2)[0], 4))
    [[-1.3416 -0.4472]
     [ 0.4472  1.3416]
     [-1.3416 -0.4472]
     [ 0.4472  1.3416]]
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


@fill_doc(**_GROUP_NORM_DOC)
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
    """Backward of group normalization: ``dx``, ``dweight`` and ``dbias``.

    {backward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(16.0).reshape(2, 4, 2)
    >>> y, mean, rstd = numbanorm.group_norm_forward(x, 2)
    >>> dy = np.linspace(-1.0, 1.0, 16).reshape(x.shape)
    >>> dx, dweight, dbias = numbanorm.group_norm_backward(dy, x, 2, mean, rstd)
    >>> np.allclose(dx.reshape(2, 2, 4).sum(axis=2), 0)  # the mean's gradient is zero
    True
    >>> np.allclose(dbias, dy.sum(axis=(0, 2)))
    True
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

_LAYER_NORM_DOC = {
    "summary": """\
Normalizes each slice of ``x`` along the ``axis`` axes (the last axis
by default) with the slice's mean and variance, then scales and shifts
it elementwise by ``weight`` and ``bias``, which have the slice's shape.
""",
    "parameters": """\
x : array_like
    Input of at least 1 dimension.
    {x_dtypes}
weight, bias : array_like, optional
    Real elementwise scale and shift applied after normalizing, of the
    shape of the normalized axes (see ``axis``); by default none (ones
    and zeros).  They do not change the result dtype.
{normalized_axes}
{where}
{eps}
""",
    "raises": """\
TypeError
    {type_errors}
    Also if ``axis`` is not an integer or a tuple of integers, or ``eps``
    is not a real number.
ValueError
    {value_errors}
    {normalized_axes_errors}
    The same if ``eps`` is negative or NaN.
""",
    "statistics": """\
mean, rstd : ndarray
    The statistics ``y`` was computed with, ``rstd = 1 / sqrt(var +
    eps)``, shaped like ``x`` without the normalized axes.
    {statistics_dtype}
""",
    "see_also": """\
layer_norm_forward : The same, also returning the statistics.
layer_norm_backward : The gradients.
LayerNorm : The layer, holding the parameters.
rms_norm : Normalization by the root mean square, without centering.
""",
    "forward_see_also": """\
layer_norm : The same without the statistics, with ``out=``.
layer_norm_backward : The gradients, from the statistics returned here.
""",
    "notes": "{centered_forward}",
    "backward_summary": """\
Takes the statistics :func:`layer_norm_forward` returned, which
depend on ``x``: the gradient flows through them.
""",
    "backward_parameters": """\
mean, rstd : array_like
    The statistics returned by :func:`layer_norm_forward`, shaped like
    ``x`` without the normalized axes.
    {refined_mean}
{backward_weight}
{normalized_axes}
""",
    "gradients": """\
dweight, dbias : ndarray
    Gradients with respect to the weight and the bias, of the shape of
    the normalized axes, also when ``weight`` is None.
    {parameter_gradients_dtype}
""",
    "backward_raises": "{normalized_backward_raises}",
    "backward_see_also": """\
layer_norm_forward : The forward, which returns ``mean`` and ``rstd``.
""",
    "backward_notes": "{centered_backward}\n\n{masked_backward}",
}


@fill_doc(**_LAYER_NORM_DOC)
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

    {forward_sections}

    Examples
    --------
    Rows of padded sequences, normalized over their valid elements:

    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.array([[1.0, 3.0, 0.0, 0.0], [2.0, 4.0, 6.0, 8.0]])
    >>> valid = np.array([[True, True, False, False], [True, True, True, True]])
    >>> y, mean, rstd = numbanorm.layer_norm_forward(x, where=valid)
    >>> print(np.round(mean, 4))
    [2. 5.]
    >>> print(np.round(y, 4))
    [[-1.      1.     -2.     -2.    ]
     [-1.3416 -0.4472  0.4472  1.3416]]
    """
    return _driver.forward(LAYER_NORM, x, weight, bias, axis=axis, eps=eps, where=where)


@fill_doc(**_LAYER_NORM_DOC)
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

    {plain_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(8.0).reshape(2, 4)
    >>> print(np.round(numbanorm.layer_norm(x), 4))
    [[-1.3416 -0.4472  0.4472  1.3416]
     [-1.3416 -0.4472  0.4472  1.3416]]
    >>> numbanorm.layer_norm(x, out=x) is x  # in place
    True

    Integer input gives float64:

    >>> numbanorm.layer_norm(np.arange(8).reshape(2, 4)).dtype
    dtype('float64')
    """
    return _driver.forward(
        LAYER_NORM, x, weight, bias, axis=axis, eps=eps, out=out, stats=False, where=where
    )[0]


@fill_doc(**_LAYER_NORM_DOC)
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
    """Backward of layer normalization: ``dx``, ``dweight`` and ``dbias``.

    {backward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.arange(8.0).reshape(2, 4)
    >>> weight = np.array([1.0, 2.0, 3.0, 4.0])
    >>> y, mean, rstd = numbanorm.layer_norm_forward(x, weight)
    >>> dy = np.ones_like(x)
    >>> dx, dweight, dbias = numbanorm.layer_norm_backward(dy, x, mean, rstd, weight)
    >>> print(np.round(dbias, 4))
    [2. 2. 2. 2.]
    >>> np.allclose(dx.sum(axis=1), 0)  # the mean's gradient is zero
    True
    """
    return _driver.backward(
        LAYER_NORM, dy, x, (mean, rstd), weight, axis=axis, out=out, where=where
    )


# ----------------------------------------------------------------------------
# RMS norm

_RMS_NORM_DOC = {
    "summary": """\
Divides each slice of ``x`` along the ``axis`` axes (the last axis by
default) by its root mean square, without centering it, then scales it
elementwise by ``weight``, which has the slice's shape.
""",
    "parameters": """\
x : array_like
    Input of at least 1 dimension.
    {x_dtypes}
weight : array_like, optional
    Real elementwise scale applied after normalizing, of the shape of the
    normalized axes (see ``axis``); by default none (ones).  It does not
    change the result dtype.
{normalized_axes}
{where}
eps : float, optional
    Non-negative number added to the mean square.  None (the default)
    means the machine epsilon of the result dtype, ``np.finfo(dtype).eps``,
    as in PyTorch for float32 and float64; float16 input uses float16's
    (PyTorch's CPU kernel uses float32's).
""",
    "raises": """\
TypeError
    {type_errors}
    Also if ``axis`` is not an integer or a tuple of integers, or ``eps``
    is neither None nor a real number.
ValueError
    {value_errors}
    {normalized_axes_errors}
    The same if ``eps`` is given and negative or NaN.
""",
    "statistics": """\
rrms : ndarray
    The statistic ``y`` was computed with, ``rrms = 1 /
    sqrt(mean(x**2) + eps)``, shaped like ``x`` without the normalized
    axes.
    {statistics_dtype}
""",
    "see_also": """\
rms_norm_forward : The same, also returning the statistic.
rms_norm_backward : The gradients.
RMSNorm : The layer, holding the weight.
layer_norm : Normalization to zero mean and unit variance.
""",
    "forward_see_also": """\
rms_norm : The same without the statistic, with ``out=``.
rms_norm_backward : The gradients, from the statistic returned here.
""",
    "notes": r"""
.. math::

    \mathrm{rrms} = \frac{1}{\sqrt{\overline{x^2} + \epsilon}}, \qquad
    y = x \cdot \mathrm{rrms} \cdot \mathrm{weight},

where the bar is the mean over the normalized axes (over the elements
``where`` selects, when given).
""",
    "backward_summary": """\
Takes the statistic :func:`rms_norm_forward` returned, which depends
on ``x``: the gradient flows through it.
""",
    "backward_parameters": """\
rrms : array_like
    The statistic returned by :func:`rms_norm_forward`, shaped like
    ``x`` without the normalized axes.
{backward_weight}
{normalized_axes}
""",
    "gradients": """\
dweight : ndarray
    Gradient with respect to the weight, of the shape of the normalized
    axes, also when ``weight`` is None.
    {parameter_gradients_dtype}
""",
    "backward_raises": "{normalized_backward_raises}",
    "backward_see_also": """\
rms_norm_forward : The forward, which returns ``rrms``.
""",
    "backward_notes": r"""
With :math:`\hat{x} = x \cdot \mathrm{rrms}` and
:math:`g = dy \cdot \mathrm{weight}`,

.. math::

    dx = \mathrm{rrms} \cdot \left(g - \hat{x} \cdot \overline{g \hat{x}}\right),
    \qquad
    \mathrm{dweight} = \sum dy \cdot \hat{x},

where the bar is the mean over the normalized axes, and the sum runs
over the other axes.

{masked_backward}
""",
}


@fill_doc(**_RMS_NORM_DOC)
def rms_norm_forward(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float | None = None,
) -> tuple[Any, Any]:
    """RMS normalization, returning the statistic the backward needs.

    {forward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> y, rrms = numbanorm.rms_norm_forward(x)
    >>> print(np.round(rrms, 4))
    [0.2828 1.    ]
    >>> np.allclose(y, x * rrms[:, None])
    True
    """
    return _driver.forward(RMS_NORM, x, weight, axis=axis, eps=eps, where=where)


@fill_doc(**_RMS_NORM_DOC)
def rms_norm(
    x: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    eps: float | None = None,
    out: np.ndarray | None = None,
) -> Any:
    """RMS normalization: each slice over ``axis`` divided by its root mean square.

    {plain_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> print(np.round(numbanorm.rms_norm(x, np.array([1.0, 2.0])), 4))
    [[0.8485 2.2627]
     [1.     2.    ]]
    """
    return _driver.forward(
        RMS_NORM, x, weight, axis=axis, eps=eps, out=out, stats=False, where=where
    )[0]


@fill_doc(**_RMS_NORM_DOC)
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
    """Backward of RMS normalization: ``dx`` and ``dweight``.

    {backward_sections}

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm
    >>> dy = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> x = np.array([[3.0, 4.0], [1.0, 1.0]])
    >>> y, rrms = numbanorm.rms_norm_forward(x)
    >>> dx, dweight = numbanorm.rms_norm_backward(dy, x, rrms)
    >>> np.allclose(dweight, (dy * y).sum(axis=0))
    True
    >>> np.allclose((dx * x).sum(axis=1), 0)  # no gradient along x: y is scale-invariant
    True
    """
    return _driver.backward(RMS_NORM, dy, x, (rrms,), weight, axis=axis, out=out, where=where)
