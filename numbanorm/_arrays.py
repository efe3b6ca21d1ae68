"""Argument checking and the dtype policy, shared by every public function.

Nothing here computes: each helper takes an argument as the user gave it and
returns it checked (or raises the error that names it), so that the norms,
``moments``, the layers and the JAX wrappers reject the same mistakes with
the same messages.
"""

from __future__ import annotations

import functools
import numbers
import operator
import reprlib
from typing import Any

import numpy as np


def host_array(value: Any, name: str = "x") -> np.ndarray:
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
                f"{name}.filled(value) or {name}.data to choose what the masked elements hold"
            )
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


def host_input(x: Any) -> tuple[np.ndarray, np.dtype, np.dtype]:
    """``(x in its compute dtype, result dtype, statistics dtype)`` of a host input.

    float16 is computed in float32 and returned as float16; float32 and
    float64 stay as they are; integers and booleans are computed and
    returned in float64.
    """
    x = host_array(x)
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


def described(value: Any) -> str:
    """``value`` for an error message: its type and a short repr (``float 1.0``)."""
    return "None" if value is None else f"{type(value).__name__} {reprlib.repr(value)}"


def integer(value: Any, name: str) -> int:
    """``value`` as an int: what NumPy takes as an axis (NumPy integers too), not a bool."""
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int, got {described(value)}")


def integers(value: Any, name: str) -> tuple[int, ...]:
    """``value``, an int or a tuple (or list) of ints, as a tuple of ints."""
    entries = value if isinstance(value, (tuple, list)) else (value,)
    try:
        return tuple(integer(entry, name) for entry in entries)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a tuple of ints, got {described(value)}"
        ) from None


def real_number(value: Any, name: str, expected: str = "a real number") -> float:
    """``value``, a real scalar or 0-d array of any library (bfloat16 too), as a float."""
    if isinstance(value, numbers.Real):
        return float(value)
    # float() also parses strings and drops the imaginary part of NumPy's complex numbers
    if not isinstance(value, (str, bytes)) and np.ndim(value) == 0 and not np.iscomplexobj(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{name} must be {expected}, got {described(value)}")


def flag(value: Any, name: str) -> bool:
    """``value``, a bool or a NumPy bool, as a bool: PyTorch refuses other truth values."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {described(value)}")
    return bool(value)


def axis_index(axis: Any, ndim: int, name: str = "axis") -> int:
    """``axis`` as a non-negative axis of an array of dimension ``ndim``."""
    return _in_bounds(integer(axis, name), ndim, name)


def _in_bounds(index: int, ndim: int, name: str) -> int:
    """``index``, an axis of an array of dimension ``ndim``, as a non-negative one."""
    if not -ndim <= index < ndim:
        raise np.exceptions.AxisError(
            f"{name} {index} is out of bounds for array of dimension {ndim}"
        )
    return index % ndim


def axes_tuple(
    axis: Any, ndim: int, name: str = "axis", allow_empty: bool = False
) -> tuple[int, ...]:
    """Sorted tuple of non-negative axes from an int or a tuple of ints."""
    axes = integers(axis, name)
    if not axes and not allow_empty:
        raise ValueError(f"{name} must name at least one axis, got ()")
    axes = tuple(_in_bounds(a, ndim, name) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {name} argument: {axis!r}")
    return tuple(sorted(axes))


def check_rank(shape: tuple[int, ...], min_ndim: int, what: str) -> None:
    if len(shape) < min_ndim:
        dimensions = "dimension" if min_ndim == 1 else "dimensions"
        of_shape = f" of shape {shape}" if shape else ""
        raise ValueError(
            f"{what} needs x with at least {min_ndim} {dimensions}, "
            f"got a {len(shape)}-d array{of_shape}"
        )


def check_eps(eps: Any) -> float:
    value = real_number(eps, "eps")
    if not value >= 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    return value


def check_momentum(momentum: Any) -> float:
    value = real_number(momentum, "momentum")
    if not 0 <= value <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return value


@functools.cache
def machine_epsilon(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps)


def gradient_dtype(weight: Any, stat_dtype: np.dtype) -> np.dtype:
    """The dtype of ``dweight`` and ``dbias``: a float weight's, else the statistics'."""
    if weight is not None and weight.dtype.kind == "f":
        return weight.dtype
    return stat_dtype
