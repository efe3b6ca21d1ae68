"""Memory shared between the array arguments of one call.

An ``out=`` that partially overlaps an input must give the result of the
same call on separate arrays, as NumPy's ufuncs do.  The question is asked
on every call that has an ``out``, so it starts with a bounds check (a
fraction of a microsecond, and "no" for almost every call); only arrays
whose bounds overlap are compared exactly.

Arrays are host (NumPy) arrays or device arrays with
``__cuda_array_interface__`` (Numba's CUDA simulator's arrays wrap a NumPy
array).  Device memory is judged by its bounds alone: arrays whose bounds
overlap count as overlapping unless they are the same elements.
"""

import numpy as np

from ._layout import c_strides

# Effort of NumPy's exact overlap test before it gives up (and the arrays
# count as overlapping): far more than strided views of ordinary arrays need.
_MAX_WORK = 1 << 16


def _host_view(a):
    """A NumPy array over ``a``'s memory, or None for a device array."""
    if isinstance(a, np.ndarray):
        return a
    if getattr(type(a), "__cuda_ndarray__", False) and hasattr(a, "_ary"):
        return a._ary  # the CUDA simulator's device array wraps a host array
    return None


def _device_layout(a):
    """``(first byte, shape, byte strides, typestr)`` of a device array."""
    interface = a.__cuda_array_interface__
    shape = tuple(interface["shape"])
    strides = interface.get("strides") or c_strides(shape, np.dtype(interface["typestr"]).itemsize)
    return interface["data"][0], shape, tuple(strides), interface["typestr"]


def _device_bounds(pointer, shape, strides, itemsize):
    """``[low, high)`` byte range spanned by a device array, or None when it is empty."""
    if 0 in shape:
        return None
    low = pointer + sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    high = pointer + sum((n - 1) * s for n, s in zip(shape, strides) if s > 0) + itemsize
    return low, high


def _device_overlap(a, b):
    layout_a, layout_b = _device_layout(a), _device_layout(b)
    bounds = [
        _device_bounds(*layout[:3], np.dtype(layout[3]).itemsize) for layout in (layout_a, layout_b)
    ]
    if None in bounds or bounds[0][1] <= bounds[1][0] or bounds[1][1] <= bounds[0][0]:
        return None
    return "same" if layout_a == layout_b else "partial"


def overlap(a, b):
    """How ``a`` and ``b`` share memory: None (not at all), ``"same"`` or ``"partial"``.

    ``"same"`` is exact aliasing: the same first element, shape, strides and
    dtype, so that element ``i`` of one is element ``i`` of the other and an
    elementwise pass may read one and write the other in place.
    """
    host_a, host_b = _host_view(a), _host_view(b)
    if host_a is None or host_b is None:
        if host_a is None and host_b is None:
            return _device_overlap(a, b)
        return None  # host and device memory are apart
    if not np.may_share_memory(host_a, host_b):
        return None
    if (
        host_a.shape == host_b.shape
        and host_a.strides == host_b.strides
        and host_a.dtype == host_b.dtype
        and host_a.__array_interface__["data"][0] == host_b.__array_interface__["data"][0]
    ):
        return "same"
    try:
        shared = np.shares_memory(host_a, host_b, max_work=_MAX_WORK)
    except np.exceptions.TooHardError:
        shared = True
    return "partial" if shared else None


def overlaps_partially(out, inputs):
    """Whether ``out`` shares memory with any of ``inputs`` (None skipped) but by exact aliasing."""
    return any(a is not None and a is not out and overlap(out, a) == "partial" for a in inputs)


def check_disjoint(named_outputs):
    """Raise ``ValueError`` if any two of the ``(name, array)`` outputs share memory.

    Writing one would change the other: no order of the writes gives both
    results.
    """
    present = [(name, a) for name, a in named_outputs if a is not None]
    for i, (name_a, a) in enumerate(present):
        for name_b, b in present[i + 1 :]:
            if a is b or overlap(a, b) is not None:
                raise ValueError(
                    f"{name_a} and {name_b} share memory: both are written, so the result "
                    f"would depend on the order of the writes; pass separate arrays"
                )
