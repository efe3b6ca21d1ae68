"""An opt-in pool of output buffers for the calls that allocate their result.

A new array larger than glibc's mmap threshold (32 MiB at most) gets fresh
pages from the operating system, which it faults in and zeroes on first
write: about 3 ms for a 33.5 MB output on 2 cores, as much as the norm's
own work.  A framework's loop allocates the same shapes every step, and
ONNX Runtime answers that with its arena: a ``session.run`` output is a
view of arena memory, which returns to the arena when the array is freed.

With :func:`set_output_pool`, numbanorm does the same for the outputs of
its CPU functions (``y`` and ``dx``): an output of at least
``MIN_POOLED_BYTES`` is a view of a pooled buffer, and when the last array
using the buffer is freed, the buffer goes back to the pool instead of to
the operating system, up to the pool's byte limit.  Off by default, so
that numbanorm holds no memory its caller has not asked it to.
"""

import math
import threading

import numpy as np

MIN_POOLED_BYTES = 1 << 20


class _Lease:
    """The owner of a pooled buffer while arrays use it: it exposes the buffer as an
    array of the requested shape, and gives the buffer back when it is freed."""

    __slots__ = ("__array_interface__", "_buffer", "_pool")

    def __init__(self, pool, buffer, shape, dtype):
        self._pool = pool
        self._buffer = buffer
        self.__array_interface__ = {
            "shape": tuple(shape),
            "typestr": dtype.str,
            "data": (buffer.ctypes.data, False),
            "version": 3,
        }

    def __del__(self):
        self._pool.give_back(self._buffer)


class OutputPool:
    """Free output buffers by size, holding at most ``max_bytes`` of them; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: dict[int, list[np.ndarray]] = {}
        self._held = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        """Bytes of the free buffers the pool holds (not those in use)."""
        return self._held

    def empty(self, shape, dtype):
        """An uninitialized array, backed by a pooled buffer when it is large enough."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            free = self._free.get(nbytes)
            buffer = free.pop() if free else None
            if buffer is not None:
                self._held -= nbytes
        if buffer is None:
            buffer = np.empty(nbytes, np.uint8)
        return np.asarray(_Lease(self, buffer, shape, dtype))

    def give_back(self, buffer):
        """Keep a buffer no array uses any more, if the limit allows; else free it."""
        with self._lock:
            if not self._closed and self._held + buffer.nbytes <= self.max_bytes:
                self._free.setdefault(buffer.nbytes, []).append(buffer)
                self._held += buffer.nbytes

    def close(self):
        """Free every buffer the pool holds, and the buffers given back later."""
        with self._lock:
            self._closed = True
            self._free.clear()
            self._held = 0


_active: OutputPool | None = None


def set_output_pool(max_bytes: int | None) -> OutputPool | None:
    """Pool the buffers of numbanorm's large outputs, or stop pooling them.

    Parameters
    ----------
    max_bytes : int or None
        The most bytes of unused buffers the pool may hold; None or 0 turns
        pooling off and frees what the pool holds.  Outputs in use are
        their owners' and do not count.

    Returns
    -------
    OutputPool or None
        The new pool (its ``held_bytes`` says what it holds), or None.

    Notes
    -----
    Outputs of at least 1 MiB, ``y`` of the forwards and ``dx`` of the
    backwards on the CPU, are then views of pooled buffers.  When the last
    array that uses a buffer (the output or a view of it) is freed, the
    buffer returns to the pool, and a later output of the same size reuses
    its pages, which are already mapped.
    """
    global _active
    if _active is not None:
        _active.close()
    _active = OutputPool(max_bytes) if max_bytes else None
    return _active


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, from the output pool when one is set."""
    pool = _active
    if pool is None:
        return np.empty(shape, dtype)
    return pool.empty(shape, dtype)
