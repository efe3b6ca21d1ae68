r"""Docstring templates: shared numpydoc text, filled in when a function is defined.

A template is an ordinary docstring in which a line holding nothing but
``{name}`` stands for a text: :func:`fill_doc` replaces the line with the
text, indented as the line is, so that ``func.__doc__`` is a complete
numpydoc docstring (what ``help()`` and Sphinx show).  Inserted texts may
hold such lines in turn.  Only whole lines are placeholders, so the braces
of LaTeX (``\frac{1}{n}``) and of code elsewhere in a docstring are left as
they are, and a placeholder that names no text is an error at import.

:data:`TEXTS` holds the paragraphs that several norms share and the
skeletons of the three kinds of norm docstrings (plain, ``_forward``,
``_backward``); a decorator's keyword arguments add the texts of one norm,
or override shared ones.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>[A-Za-z_]\w*)\}[ \t]*$", re.MULTILINE)

# ----------------------------------------------------------------------------
# Parameters

_X_DTYPES = """\
Real: float32 and float64 are computed in their own precision,
float16 in float32, integers and booleans in float64 (see Returns for
the result dtypes).  Any array NumPy can view (DLPack, the buffer
protocol, ``__array__``, nested sequences) is accepted, except masked
arrays.  ``x`` is never modified, unless it is ``out``.
"""

_RUNNING_STATISTICS = """\
running_mean, running_var : ndarray, optional
    ``(C,)`` running mean and unbiased running variance, given together or
    not at all.  When the statistics come from ``x`` they are updated in
    place (see Notes) and must be writable floating-point NumPy arrays, of
    any float dtype; otherwise ``x`` is normalized with them, and they are
    required.
"""

_CHANNEL_PARAMETERS = """\
weight, bias : array_like, optional
    ``(C,)`` real per-channel scale and shift applied after normalizing (by
    default none: ones and zeros).  They do not change the result dtype.
"""

_MOMENTUM = """\
momentum : float, optional
    Weight of the new statistics in the running averages, in ``[0, 1]``
    (PyTorch's convention; Keras' and Flax's ``momentum`` is ``1 -
    momentum``).  Checked also when there are no running statistics.
"""

_EPS = """\
eps : float, optional
    Non-negative number added to the variance.  With ``eps=0`` a constant
    group gives NaN (an infinite ``rstd``), as in PyTorch.
"""

_CHANNEL_AXIS = """\
axis : int, optional
    The channel axis: 1 (the default) for channels-first data such as
    ``(N, C, H, W)``, -1 for channels-last data ``(N, H, W, C)``; any axis
    of ``x`` may be given.
"""

_NORMALIZED_AXES = """\
axis : int or tuple of ints, optional
    The normalized axis or axes, the last one by default.  Any axes of
    ``x`` in any order; trailing axes of a C-ordered ``x`` are read in
    place, others after one copy.  The weight has the shape
    ``tuple(x.shape[a] for a in sorted(axes))``.
"""

_WHERE = """\
where : array_like of bool, optional
    The elements the statistics come from, broadcastable to ``x``; every
    element by default.  For padded sequences, the mask of their valid
    frames: ``(N, 1, T)`` for channels-first ``(N, C, T)``, ``(N, T, 1)``
    for layer norm of ``(N, T, D)``.  ``y`` is computed for every element
    with its group's statistics, and a group without a selected element
    has zero statistics and gives the bias (0 without one).  A broadcast
    mask is read through its strides, never expanded to ``x``'s shape.
"""

_RUNNING_NORM_OPTIONS = """\
{momentum}
{eps}
{channel_axis}
{where}
"""

_OUT = """\
out : ndarray, optional
    A writable NumPy array of ``x``'s shape and of the result dtype (see
    Returns) that receives ``y`` and is returned.  It may be ``x`` itself,
    normalized in place; an ``out`` that overlaps an input only in part
    gives the result of separate arrays, as with NumPy's ufuncs.
"""

_BACKWARD_INPUTS = """\
dy : array_like
    Gradient of the loss with respect to the forward's ``y``, of ``x``'s
    shape, of any real dtype.
x : array_like
    The forward's input.
"""

_BACKWARD_WEIGHT = """\
weight : array_like, optional
    The forward's weight; None if it had none (the same as ones).
"""

_REFINED_MEAN = """\
When the statistics came from ``x``, the mean is taken as an
approximation (float32 statistics are rounded) and refined from ``x``:
pass the statistics the forward returned.
"""

_BACKWARD_WHERE = """\
where : array_like of bool, optional
    The forward's ``where``: the terms that flow back through the
    statistics reach the elements it selects only (see Notes).
"""

_BACKWARD_OUT = """\
out : ndarray, optional
    A writable NumPy array of ``x``'s shape and of the result dtype that
    receives ``dx`` and is returned.  It may be ``dy`` or ``x``, computed
    in place; in a training loop it spares an allocation per call.
"""

# ----------------------------------------------------------------------------
# Returns

_RESULT_DTYPE = """\
Its dtype is that of ``x``, whatever the other arguments' dtypes
(PyTorch's rule: a float32 ``x`` with a float64 ``weight`` gives
float32); float16 is computed in float32 and returned as float16, and
integer and boolean ``x`` give float64.
"""

_STATISTICS_DTYPE = """\
float32 for float16 and float32 ``x``, float64 otherwise.
"""

_Y = """\
y : ndarray
    ``x`` normalized, a new array of its shape.
    {result_dtype}
"""

_Y_OR_OUT = """\
ndarray
    ``y``, ``x`` normalized: ``out`` when given, else a new array of its
    shape.
    {result_dtype}
"""

_DX = """\
dx : ndarray
    Gradient with respect to ``x``: ``out`` when given, else a new array
    of ``x``'s shape.
    {result_dtype}
"""

_PARAMETER_GRADIENTS_DTYPE = """\
Parameter gradients have the dtype of a floating-point ``weight``;
without a weight, or with an integer one, that of the statistics:
{statistics_dtype}
"""

_CHANNEL_GRADIENTS = """\
dweight, dbias : ndarray
    ``(C,)`` gradients with respect to the weight and the bias, also
    when ``weight`` is None.
    {parameter_gradients_dtype}
"""

# ----------------------------------------------------------------------------
# Raises

_TYPE_ERRORS = """\
If an array argument is not of a real dtype (complex, string, object),
``x`` is a masked array, ``where`` is not boolean, or ``out`` is not a
NumPy array of the result dtype.
"""

_VALUE_ERRORS = """\
If an array argument's shape does not fit ``x`` (``where`` must
broadcast to it), ``out`` is read-only, or ``axis`` is out of range.
"""

_RUNNING_NORM_ERRORS = """\
TypeError
    {type_errors}
    Also if ``axis`` is not an integer, ``eps`` or ``momentum`` is not a
    real number, or running statistics to be updated are not
    floating-point NumPy arrays.
ValueError
    {value_errors}
"""

_NORMALIZED_AXES_ERRORS = """\
Also if ``x`` is 0-d, or ``axis`` is empty, repeats an axis or names an
axis of size 0.
"""

_CHANNEL_BACKWARD_RAISES = """\
TypeError
    {type_errors}
    Also if ``axis`` is not an integer.
ValueError
    {value_errors}
    Also if ``x`` has fewer dimensions than the forward takes, or a
    statistic is None.
"""

_NORMALIZED_BACKWARD_RAISES = """\
TypeError
    {type_errors}
    Also if ``axis`` is not an integer or a tuple of integers.
ValueError
    {value_errors}
    {normalized_axes_errors}
    The same if a statistic is None.
"""

# ----------------------------------------------------------------------------
# Notes

_STABLE_STATISTICS = """\
The statistics come from one pass over ``x``: per-block counts, means and
sums of squared deviations, merged in float64 with Chan's formula, so that
data far from zero keeps its variance.
"""

_CENTERED_FORWARD = r"""
With the mean and the biased variance of each group,

.. math::

    \mathrm{rstd} = \frac{1}{\sqrt{\mathrm{var} + \epsilon}}, \qquad
    y = (x - \mathrm{mean}) \cdot \mathrm{rstd} \cdot \mathrm{weight}
        + \mathrm{bias}.

{stable_statistics}
"""

_RUNNING_UPDATE = r"""
.. math::

    \mathrm{running\_mean} \leftarrow (1 - \mathrm{momentum}) \cdot
        \mathrm{running\_mean} + \mathrm{momentum} \cdot \mathrm{mean},

    \mathrm{running\_var} \leftarrow (1 - \mathrm{momentum}) \cdot
        \mathrm{running\_var} + \mathrm{momentum} \cdot
        \frac{n}{n - 1} \, \mathrm{var},

where :math:`n` is the number of elements of a group (selected by
``where``, when given): the running variance is unbiased.
"""

_CENTERED_BACKWARD = r"""
With :math:`\hat{x} = (x - \mathrm{mean}) \cdot \mathrm{rstd}` and
:math:`g = dy \cdot \mathrm{weight}`,

.. math::

    dx = \mathrm{rstd} \cdot \left(g - \overline{g}
        - \hat{x} \cdot \overline{g \hat{x}}\right), \qquad
    \mathrm{dweight} = \sum dy \cdot \hat{x}, \qquad
    \mathrm{dbias} = \sum dy,

where a bar is the mean over each group, and the sums run over every
axis but the weight's.
"""

_MASKED_BACKWARD = """\
With ``where``, each mean above is a sum over every element of the group
divided by the number of its selected elements, and the terms after the
first, which flow back through the statistics, reach the selected
elements only: an element outside the mask gets the first term alone.  A
group without a selected element has zero statistics, hence ``dx = 0``.
The parameter gradients sum over every element, selected or not.
"""

# ----------------------------------------------------------------------------
# Whole docstrings: what a norm's functions say between their summary line
# and their examples, from the texts of the norm (see ``_norms.py``).

_PLAIN_SECTIONS = """\
{summary}

Parameters
----------
{parameters}
{out}

Returns
-------
{y_or_out}

Raises
------
{raises}

See Also
--------
{see_also}

Notes
-----
{notes}
"""

_FORWARD_SECTIONS = """\
{summary}

Parameters
----------
{parameters}

Returns
-------
{y}
{statistics}

Raises
------
{raises}

See Also
--------
{forward_see_also}

Notes
-----
{notes}
"""

_BACKWARD_SECTIONS = """\
{backward_summary}

Parameters
----------
{backward_inputs}
{backward_parameters}
{backward_where}
{backward_out}

Returns
-------
{dx}
{gradients}

Raises
------
{backward_raises}

See Also
--------
{backward_see_also}

Notes
-----
{backward_notes}
"""

TEXTS: dict[str, str] = {
    "x_dtypes": _X_DTYPES,
    "running_statistics": _RUNNING_STATISTICS,
    "channel_parameters": _CHANNEL_PARAMETERS,
    "momentum": _MOMENTUM,
    "eps": _EPS,
    "channel_axis": _CHANNEL_AXIS,
    "normalized_axes": _NORMALIZED_AXES,
    "where": _WHERE,
    "running_norm_options": _RUNNING_NORM_OPTIONS,
    "out": _OUT,
    "backward_inputs": _BACKWARD_INPUTS,
    "backward_weight": _BACKWARD_WEIGHT,
    "refined_mean": _REFINED_MEAN,
    "backward_where": _BACKWARD_WHERE,
    "backward_out": _BACKWARD_OUT,
    "result_dtype": _RESULT_DTYPE,
    "statistics_dtype": _STATISTICS_DTYPE,
    "y": _Y,
    "y_or_out": _Y_OR_OUT,
    "dx": _DX,
    "parameter_gradients_dtype": _PARAMETER_GRADIENTS_DTYPE,
    "channel_gradients": _CHANNEL_GRADIENTS,
    "type_errors": _TYPE_ERRORS,
    "value_errors": _VALUE_ERRORS,
    "running_norm_errors": _RUNNING_NORM_ERRORS,
    "normalized_axes_errors": _NORMALIZED_AXES_ERRORS,
    "channel_backward_raises": _CHANNEL_BACKWARD_RAISES,
    "normalized_backward_raises": _NORMALIZED_BACKWARD_RAISES,
    "stable_statistics": _STABLE_STATISTICS,
    "centered_forward": _CENTERED_FORWARD,
    "running_update": _RUNNING_UPDATE,
    "centered_backward": _CENTERED_BACKWARD,
    "masked_backward": _MASKED_BACKWARD,
    "plain_sections": _PLAIN_SECTIONS,
    "forward_sections": _FORWARD_SECTIONS,
    "backward_sections": _BACKWARD_SECTIONS,
}


def fill(template: str, texts: Mapping[str, str]) -> str:
    """``template`` with every placeholder line replaced by its text from ``texts``.

    Parameters
    ----------
    template : str
        A docstring, or a text of ``texts``.
    texts : mapping of str to str
        The texts by name, without indentation; their placeholders are
        filled too.

    Returns
    -------
    str
        The filled template.

    Raises
    ------
    KeyError
        If a placeholder names no text.
    """

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in texts:
            raise KeyError(f"the docstring placeholder {{{name}}} names no text")
        return textwrap.indent(fill(texts[name].strip("\n"), texts), match["indent"])

    return _PLACEHOLDER.sub(replace, template)


def fill_doc(**texts: str) -> Callable[[F], F]:
    """A decorator that fills the placeholders of a function's docstring.

    Parameters
    ----------
    **texts : str
        Texts besides :data:`TEXTS` (and in place of those of the same name).

    Returns
    -------
    callable
        The decorator; it returns the function itself, its ``__doc__``
        filled.  A function without a docstring (``python -OO``) is
        returned as it is.
    """
    merged = {**TEXTS, **texts}

    def decorate(func: F) -> F:
        if func.__doc__ is not None:
            func.__doc__ = fill(func.__doc__, merged)
        return func

    return decorate
