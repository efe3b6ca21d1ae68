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
    """Free output buffers by size, holding at most ``max_bytes`` of them; thread-safe.

    The pool behind :func:`set_output_pool`, which makes one and has
    numbanorm's CPU functions take their large outputs from it.  An array
    from :meth:`empty` is a view of a buffer, and when the last array
    using the buffer is freed, the buffer comes back to the pool (up to
    ``max_bytes`` of free buffers) for the next array of the same number
    of bytes, whose pages are then already mapped.

    Parameters
    ----------
    max_bytes : int
        The most bytes of free buffers the pool holds; buffers in use do not
        count.

    Attributes
    ----------
    max_bytes : int
        The limit given.

    See Also
    --------
    set_output_pool : Make a pool and use it for numbanorm's outputs.

    Notes
    -----
    Only arrays of at least 1 MiB are pooled (``np.empty`` serves smaller
    ones), and a free buffer serves only a request of exactly its size.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> pool = nn.OutputPool(8 << 20)
    >>> a = pool.empty((512, 1024), np.float32)  # 2 MiB: a pooled buffer
    >>> del a  # the buffer goes back to the pool
    >>> pool.held_bytes
    2097152
    >>> b = pool.empty((1024, 512), np.float32)  # the same bytes again
    >>> pool.held_bytes
    0
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: dict[int, list[np.ndarray]] = {}
        self._held = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        """Bytes of the free buffers the pool holds, not counting those in use.

        At most :attr:`max_bytes`; 0 after :meth:`close`.  The buffers of
        arrays that are still alive are their owners' and do not count.

        See Also
        --------
        close : Free the buffers the pool holds.

        Examples
        --------
        >>> import numbanorm as nn
        >>> nn.OutputPool(1 << 30).held_bytes
        0
        """
        return self._held

    def empty(self, shape, dtype):
        """Return an uninitialized array, backed by a pooled buffer when it is large enough.

        As ``np.empty(shape, dtype)`` (C order).  An array of at least
        1 MiB is a view of a free buffer of exactly its size taken from the
        pool, or of a new one; the buffer returns to the pool when the last
        array using it is freed.

        Parameters
        ----------
        shape : tuple of ints
            Shape of the array.
        dtype : data-type
            Its dtype.

        Returns
        -------
        ndarray
            The array, whose contents are whatever the buffer held.

        Raises
        ------
        TypeError
            If ``shape`` is not a sequence of ints or ``dtype`` not a dtype.
        ValueError
            If ``shape`` has a negative size.

        See Also
        --------
        numpy.empty : The same without a pool.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> pool = nn.OutputPool(4 << 20)
        >>> a = pool.empty((256, 1024), np.float64)
        >>> a.shape, a.dtype, a.flags.c_contiguous
        ((256, 1024), dtype('float64'), True)
        """
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
        """Keep a buffer no array uses any more, if the limit allows; else free it.

        Called when the last array using a buffer from :meth:`empty` is
        freed; there is no need to call it directly.  After :meth:`close`
        every buffer given back is freed.

        Parameters
        ----------
        buffer : ndarray
            A 1-D uint8 array that nothing else uses; it serves requests of
            its number of bytes.

        See Also
        --------
        empty : Takes the buffers back out.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> pool = nn.OutputPool(1 << 20)
        >>> pool.give_back(np.empty(1 << 20, np.uint8))
        >>> pool.give_back(np.empty(1 << 20, np.uint8))  # over the limit: freed
        >>> pool.held_bytes
        1048576
        """
        with self._lock:
            if not self._closed and self._held + buffer.nbytes <= self.max_bytes:
                self._free.setdefault(buffer.nbytes, []).append(buffer)
                self._held += buffer.nbytes

    def close(self):
        """Free every buffer the pool holds, and the buffers given back later.

        Arrays already taken from the pool stay valid; their buffers are
        freed with them.  :func:`set_output_pool` closes the pool it
        replaces.  The pool still serves :meth:`empty` afterwards, with new
        buffers that it does not keep.

        See Also
        --------
        set_output_pool : Closes the previous pool.

        Examples
        --------
        >>> import numpy as np
        >>> import numbanorm as nn
        >>> pool = nn.OutputPool(4 << 20)
        >>> a = pool.empty((1 << 20,), np.uint8)
        >>> pool.close()
        >>> del a  # freed, not kept
        >>> pool.held_bytes
        0
        """
        with self._lock:
            self._closed = True
            self._free.clear()
            self._held = 0


_active: OutputPool | None = None


def set_output_pool(max_bytes: int | None) -> OutputPool | None:
    """Pool the buffers of numbanorm's large outputs, or stop pooling them.

    A new array larger than glibc's mmap threshold gets fresh pages from
    the operating system, which it faults in and zeroes on first write:
    about 3 ms for a 33.5 MB output on 2 cores, as much as the norm's own
    work.  With a pool, the outputs of a loop's allocating calls reuse the
    pages of the outputs freed before them, as ONNX Runtime's arena does.
    Off by default, so that numbanorm holds no memory it was not asked to.
    Passing ``out=`` spares the allocation without a pool.

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

    See Also
    --------
    OutputPool : The pool itself.

    Notes
    -----
    Outputs of at least 1 MiB, ``y`` of the forwards and ``dx`` of the
    backwards on the CPU, are then views of pooled buffers.  When the last
    array that uses a buffer (the output or a view of it) is freed, the
    buffer returns to the pool, and a later output of the same size reuses
    its pages, which are already mapped.  A new call replaces the pool and
    frees the buffers of the old one.  The pool is thread-safe.

    Examples
    --------
    >>> import numpy as np
    >>> import numbanorm as nn
    >>> pool = nn.set_output_pool(64 << 20)
    >>> x = np.ones((512, 512), np.float32)
    >>> y = nn.layer_norm(x)  # 1 MiB: a view of a pooled buffer
    >>> del y  # the buffer returns to the pool
    >>> pool.held_bytes
    1048576
    >>> y = nn.layer_norm(x)  # and serves the next output
    >>> pool.held_bytes
    0
    >>> nn.set_output_pool(None)  # off: the pool's buffers are freed
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
