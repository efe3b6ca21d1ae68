"""The backend contract, and the choice of a backend for a call.

A backend is the set of array operations that the driver (``_driver.py``)
runs on one kind of memory: :class:`~numbanorm._host.HostBackend` for NumPy
arrays (Numba CPU kernels), :class:`~numbanorm._cuda.CudaBackend` for GPU
arrays (Numba CUDA kernels).  Both implement :class:`Backend`, with the
same names, argument meanings and return conventions; one contract test
suite (``tests/test_backend_contract.py``) runs against both.

Conventions shared by every method:

- ``canon`` is the canonical ``(B, O, C, I)`` view of the input (see
  ``_layout.py``): statistics are ``(B, C)`` arrays, one per group, affine
  parameters ``(C, W)`` arrays, one per (group, weight index).
- ``x`` is read in its *compute* dtype, which :meth:`Backend.input` gives:
  float16 becomes float32 on the host and stays float16 on the device
  (which computes in float32); ``y`` and ``dx`` come out in it.
- Statistics and parameter gradients are held in float64 on both; results
  that leave the backend are converted by :meth:`Backend.stats_out`,
  :meth:`Backend.gradient_out` and :meth:`Backend.deliver`.
- ``input_stats`` says that the statistics were computed from the input
  (training), so that the backward differentiates through them; without
  it they are constants (evaluation mode).
- ``centered`` is False for RMS norm: its ``mean`` is zero and its ``rstd``
  the reciprocal root mean square.
- The backward's group sums are ``sum(dy * w)`` and ``sum(dy * w * x_hat)``
  with ``x_hat = (x - mean) * rstd``.
- ``mask`` is None or a boolean ``(B, O, C, I)`` view from :meth:`Backend.mask`
  (zero strides where the user's ``where`` broadcasts): the statistics
  cover the elements it selects, and the terms the backward feeds back
  through them reach those elements only.  A group with none selected has
  ``mean = rstd = 0``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ._host import HOST
from ._layout import CanonicalView


class Backend(Protocol):
    """The array operations of one kind of memory, as the driver uses them."""

    def input(self, x: Any) -> tuple[Any, np.dtype, np.dtype]:
        """``(x in its compute dtype, result dtype, statistics dtype)``."""

    def array(self, value: Any, name: str) -> Any:
        """An optional argument as an array of this backend (``name`` for errors)."""

    def out_array(self, out: Any) -> Any:
        """``out`` as an array of this backend, or a ``TypeError``."""

    def writeable(self, a: Any) -> bool:
        """Whether ``a`` may be written."""

    def check_updatable(self, value: Any, name: str) -> None:
        """Raise unless ``value`` is a float array that can be updated in place."""

    def reshaped(self, a: Any, shape: tuple[int, ...]) -> Any:
        """``a`` reshaped without a copy, writes passing through to ``a``."""

    def view(self, xc: Any, shape: tuple[int, ...], roles: str) -> CanonicalView:
        """The canonical view of ``xc`` reshaped to ``shape`` with axis ``roles``."""

    def mask(self, canon: CanonicalView, where: Any, shape: tuple[int, ...]) -> Any:
        """The ``(B, O, C, I)`` view of a boolean ``where`` that broadcasts to ``shape``.

        ``shape`` is the input's; ``canon`` views it reshaped.  Broadcast axes
        keep zero strides wherever the view's blocks allow.
        """

    def group_counts(self, mask: Any) -> np.ndarray:
        """``(B, C)`` host float64: how many elements of each group ``mask`` selects."""

    def param2(self, value: Any, shape2: tuple[int, int], fill: float) -> Any:
        """A ``(C, W)`` affine parameter (a copy), ``fill`` everywhere when None."""

    def running_groups(
        self, running: tuple[Any, Any], shape2: tuple[int, int], eps: float
    ) -> tuple[Any, Any]:
        """``(mean, rstd)`` groups from running statistics ``(mean, var)``."""

    def normalize(
        self,
        canon: CanonicalView,
        weight2: Any,
        bias2: Any,
        out: Any,
        *,
        eps: float,
        centered: bool,
        stats: tuple[Any, Any] | None,
        update: tuple[Any, Any, float, float] | None,
        mask: Any = None,
    ) -> tuple[Any, Any, Any, Any, Any]:
        """``y = (x - mean) * rstd * w + b``, into ``out`` where its layout allows.

        With ``stats`` None the group statistics are computed from ``x``
        (from the elements ``mask`` selects); otherwise they are ``(mean,
        rstd)``.  ``update``, ``(running_mean, running_var, momentum,
        unbias)``, folds the computed statistics into the running ones as
        :meth:`update_running` does (never with a mask).  Returns ``(y,
        mean, var, rstd, count)`` (``var`` None when ``stats`` are given;
        ``count``, the ``(B, C)`` selected counts, None without a mask);
        ``y`` is in the compute dtype of ``x``.
        """

    def backward(
        self,
        canon: CanonicalView,
        dy: Any,
        mean: Any,
        rstd: Any,
        weight2: Any,
        input_stats: bool,
        centered: bool,
        *,
        out: Any,
        gradients: tuple[tuple[int, ...], np.dtype, bool],
        mask: Any = None,
    ) -> tuple[Any, Any, Any]:
        """``(dx, dweight2, dbias2)``; ``dx`` into ``out`` where its layout allows.

        ``mask`` (with ``input_stats`` only) is the forward's selection.

        ``gradients`` is ``(shape, dtype, bias)`` of the public parameter
        gradients (``bias``: whether ``dbias`` is one).  A backend may write
        them there at once; :meth:`gradient_out` then returns those arrays.
        """

    def parameter_sums(
        self, canon: CanonicalView, dy: Any, mean: Any, rstd: Any, weight2: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(dweight2, dbias2)`` as host float64, for a backward whose ``dx`` comes later."""

    def input_gradient(
        self,
        canon: CanonicalView,
        dy: Any,
        mean: Any,
        rstd: Any,
        weight2: Any,
        group_g: np.ndarray,
        group_gxhat: np.ndarray,
        count: Any,
        mask: Any = None,
    ) -> Any:
        """``dx`` of a centered norm with input statistics, from host group sums.

        ``count`` is the number of elements the statistics cover, which may
        exceed the group's part in ``x`` (synchronized batch norm); with a
        ``mask``, a ``(B, C)`` host array of the selected counts.
        """

    def deliver(
        self, result: Any, target: Any, out: Any, shape: tuple[int, ...], dtype: np.dtype
    ) -> Any:
        """``result`` as the public array: ``out`` (holding it) or a new one of ``dtype``.

        ``target`` is ``out`` as the kernels saw it; they wrote into it
        unless its layout did not allow that.
        """

    def stats_out(self, canon: CanonicalView, stat: Any, axes: list[int], dtype: np.dtype) -> Any:
        """``(B, C)`` statistics as a public array shaped by the kept ``axes``."""

    def group_zeros(self, canon: CanonicalView) -> Any:
        """``(B, C)`` zeros: RMS norm's mean."""

    def update_running(
        self,
        running_mean: Any,
        running_var: Any,
        mean: Any,
        var: Any,
        momentum: float,
        unbias: float,
    ) -> None:
        """Blend the ``(B, C)`` statistics' sample average into the running statistics."""

    def gradient_out(self, g2: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A ``(C, W)`` parameter gradient as a public array of ``shape``."""

    def welford_state(
        self, xc: Any, axes: tuple[int, ...], where: Any = None
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        """``(count, mean, M2)`` over ``axes``, host float64 (NaN where ``count`` is 0).

        ``count`` is a number, or with ``where`` an array of the kept axes.
        """

    def moments(
        self,
        xc: Any,
        axes: tuple[int, ...],
        ddof: int,
        keepdims: bool,
        result_dtype: np.dtype,
        where: Any = None,
    ) -> tuple[Any, Any, Any]:
        """``(mean, var, count)`` over ``axes``, as ``numbanorm.moments`` with its counts.

        The variance's divisor is ``n - ddof``.  ``where``, a checked boolean
        array that broadcasts to ``xc``, selects the elements; a slice
        without any has NaN statistics.  ``count`` is on the host: a number,
        or with ``where`` an array of the kept axes' shape.
        """

    def to_host(self, a: Any) -> np.ndarray:
        """``a`` in host memory."""

    def from_host(self, a: np.ndarray) -> Any:
        """A host array in this backend's memory."""


def is_device_array(value: Any) -> bool:
    """Whether ``value`` is a GPU array (CUDA array interface, or the CUDA simulator's)."""
    kind = type(value)
    if kind is np.ndarray or value is None:
        return False
    if getattr(kind, "__cuda_ndarray__", False):
        return True
    if kind.__module__.startswith("torch"):
        return bool(getattr(value, "is_cuda", False))
    return hasattr(value, "__cuda_array_interface__")


def backend_for(x: Any, *arrays: Any) -> Backend:
    """The backend of ``x``: the host's, or the GPU's for a device array.

    The other (optional) array arguments must live where ``x`` does.
    """
    on_device = is_device_array(x)
    for value in arrays:
        if value is not None and is_device_array(value) != on_device:
            where = ("device", "host") if on_device else ("host", "device")
            raise TypeError(
                f"cannot mix host and device arrays in one call: x is a {where[0]} array, "
                f"another argument is a {where[1]} array"
            )
    if not on_device:
        return HOST
    from ._cuda import CudaBackend

    return CudaBackend(x)


def cuda_available() -> bool:
    """Return whether the GPU backend can run: a CUDA GPU and driver, or the Numba CUDA simulator.

    Device arrays (CuPy, PyTorch CUDA tensors, Numba device arrays) passed
    to any public function then run on the GPU.  The backend needs Numba's
    CUDA target: the "cuda" extra brings it (``pip install ".[cuda]"`` in a
    numbanorm clone: ``numba-cuda`` with the CUDA 12 toolkit's compiler
    libraries), and a driver for CUDA 12 or later must be installed.  With
    ``NUMBA_ENABLE_CUDASIM=1`` in the environment, Numba's CUDA simulator
    runs the kernels on the CPU instead, slowly, and this returns True.

    Returns
    -------
    bool
        True when Numba's CUDA target imports and finds a usable GPU (or is
        the simulator); False otherwise, never an exception.

    See Also
    --------
    numbanorm.moments : One of the functions that take device arrays.

    Examples
    --------
    >>> import numbanorm as nn
    >>> nn.cuda_available() in (True, False)
    True
    """
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # no CUDA target installed, or no usable driver
        return False
