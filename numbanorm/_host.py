"""The host backend: NumPy arrays, Numba CPU kernels (``_engine.py``).

It implements :class:`numbanorm._backends.Backend`; see there for the
conventions of every method.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _engine, _kernels
from ._arrays import host_array, host_input
from ._layout import CanonicalView


def welford_state(
    x: np.ndarray, axes: tuple[int, ...], where: np.ndarray | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(count, mean, M2)`` of ``x`` reduced over ``axes``, statistics in float64.

    ``x`` is a float array as :func:`numbanorm._arrays.host_input` returns
    it; ``mean`` and ``M2`` have the shape of the kept axes (NaN where the
    count is 0).  With a boolean ``where`` broadcastable to ``x``, only the
    elements it selects count, and ``count`` is an array of the kept axes'
    shape; without it, a number.  This is :func:`numbanorm.moments` before
    rounding to the result dtype, the state that :class:`numbanorm.Moments`
    merges.
    """
    roles = "".join("R" if a in axes else "K" for a in range(x.ndim))
    kept = [a for a in range(x.ndim) if a not in axes]
    canon = CanonicalView(x, roles)
    if where is None:
        count = math.prod(x.shape[a] for a in axes)
        if count == 0:
            mean = np.full(canon.shape4[::2], np.nan)
            m2 = mean.copy()
        else:
            mean, m2, _ = _engine.group_moments(canon)
    else:
        mean, m2, counts = _engine.group_moments(canon, canon.mask(np.broadcast_to(where, x.shape)))
        mean[counts == 0] = np.nan
        m2[counts == 0] = np.nan
        count = canon.stats_to_axes(counts, kept)
    return count, canon.stats_to_axes(mean, kept), canon.stats_to_axes(m2, kept)


class HostBackend:
    """The backend of NumPy arrays; see :class:`numbanorm._backends.Backend`."""

    @staticmethod
    def input(x: Any) -> tuple[np.ndarray, np.dtype, np.dtype]:
        return host_input(x)

    @staticmethod
    def array(value: Any, name: str) -> np.ndarray:
        return host_array(value, name)

    @staticmethod
    def out_array(out: Any) -> np.ndarray:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        return host_array(out, "out")

    @staticmethod
    def writeable(a: np.ndarray) -> bool:
        return a.flags.writeable

    @staticmethod
    def check_updatable(value: Any, name: str) -> None:
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"{name} must be a numpy array to be updated in place, got {type(value).__name__}"
            )
        if value.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating-point array, got dtype {value.dtype}")
        if not value.flags.writeable:
            raise ValueError(f"{name} must be writable to be updated in place")

    @staticmethod
    def reshaped(a: Any, shape: tuple[int, ...]) -> np.ndarray:
        # np.asarray: an ``out`` of a subclass (np.matrix) is written through a plain view
        return np.asarray(a).reshape(shape)

    @staticmethod
    def view(xc: np.ndarray, shape: tuple[int, ...], roles: str) -> CanonicalView:
        return CanonicalView(xc.reshape(shape), roles)

    @staticmethod
    def param2(value: Any, shape2: tuple[int, int], fill: float) -> np.ndarray:
        # Without a parameter, float32 holds ``fill`` exactly and spares a float32
        # input the cast of a full-size parameter; ``shape2`` may then be (C, 1).
        if value is None:
            return np.full(shape2, fill, np.float32)
        return np.array(value, dtype=np.float64, order="C").reshape(shape2)

    @staticmethod
    def running_groups(
        running: tuple[Any, Any], shape2: tuple[int, int], eps: float
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, var = (np.broadcast_to(np.asarray(s, np.float64), shape2).copy() for s in running)
        return mean, 1.0 / np.sqrt(var + eps)

    @staticmethod
    def mask(canon, where, shape):
        return canon.mask(np.broadcast_to(where, shape).reshape(canon.shape))

    @staticmethod
    def group_counts(mask):
        return _engine.group_counts(mask)

    @staticmethod
    def normalize(canon, weight2, bias2, out, *, eps, centered, stats, update, mask=None):
        y, out4 = canon.output(out)
        mean, var, rstd, count = _engine.normalize(
            canon.x4, weight2, bias2, out4, eps=eps, centered=centered, stats=stats, mask4=mask
        )
        if update is not None:
            HostBackend.update_running(*update[:2], mean, var, *update[2:])
        return y, mean, var, rstd, count

    @staticmethod
    def backward(
        canon, dy, mean, rstd, weight2, input_stats, centered, *, out, gradients, mask=None
    ):
        """The gradients stay float64 ``(C, W)``: :meth:`gradient_out` converts them."""
        return _engine.backward(
            canon, dy, mean, rstd, weight2, input_stats, centered, out=out, mask4=mask
        )

    @staticmethod
    def parameter_sums(canon, dy, mean, rstd, weight2):
        return _engine.gradient_sums(canon, dy, mean, rstd, weight2)[2:]

    @staticmethod
    def input_gradient(canon, dy, mean, rstd, weight2, group_g, group_gxhat, count, mask=None):
        # The engine takes sum(dy * w * (x - mean)), which divides out of x_hat
        # (0 for a group with no selected element, whose rstd is 0).
        with np.errstate(divide="ignore", invalid="ignore"):
            group_gx = np.where(rstd != 0, group_gxhat / rstd, 0.0)
        return _engine.input_gradient(
            canon, dy, mean, rstd, weight2, group_g, group_gx, count, mask4=mask
        )

    @staticmethod
    def deliver(result, target, out, shape, dtype):
        if out is None:
            return result.reshape(shape).astype(dtype, copy=False)
        if result is not target:
            target[...] = result
        return out

    @staticmethod
    def stats_out(canon, stat, axes, dtype):
        return canon.stats_to_axes(stat, axes).astype(dtype)

    @staticmethod
    def group_zeros(canon):
        return np.zeros(canon.shape4[::2])

    @staticmethod
    def update_running(running_mean, running_var, mean, var, momentum, unbias):
        running = (running_mean, running_var)
        # The kernel computes in float64 and stores float32 or float64; other
        # dtypes (float16) are updated through float64 copies.
        native = all(r.dtype in (np.float32, np.float64) for r in running)
        targets = running if native else tuple(r.astype(np.float64) for r in running)
        _kernels.update_running(*targets, mean, var, momentum, unbias)
        if not native:
            for r, t in zip(running, targets):
                r[...] = t

    @staticmethod
    def gradient_out(g2, shape, dtype):
        return g2.reshape(shape).astype(dtype)

    @staticmethod
    def welford_state(xc, axes, where=None):
        return welford_state(xc, axes, where)

    @staticmethod
    def moments(xc, axes, ddof, keepdims, result_dtype, where=None):
        count, mean, m2 = welford_state(xc, axes, where)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = m2 / np.maximum(count - ddof, 0)
        results = []
        for stat in (mean, var):
            if keepdims:
                stat = np.expand_dims(stat, axes)
            stat = np.array(stat, dtype=result_dtype)
            results.append(stat[()] if stat.ndim == 0 else stat)  # NumPy scalars, as np.mean
        return (*results, count)

    @staticmethod
    def to_host(a):
        return a

    @staticmethod
    def from_host(a):
        return a


HOST = HostBackend()
