"""How numbanorm compiles its CPU code: :func:`jit`.

Every kernel and helper is compiled with NumPy's error model, so that a
division by zero gives inf or NaN in the serial variants as in the parallel
kernels (Python's model raises ``ZeroDivisionError``), and with the
fast-math flags below.  Kernels called from Python are cached on disk.

The on-disk cache only saves time: a directory that cannot be used, a
corrupted cache file or a failed save makes numbanorm compile the kernel
instead, with one :class:`CompileCacheWarning` per kind of problem and
process.
"""

import contextlib
import os
import warnings

from numba import njit
from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher

try:
    import fcntl
except ImportError:  # Windows: Numba's own writes, without a lock between processes
    fcntl = None  # type: ignore[assignment]

# Reassociation lets LLVM vectorize the reductions; 'nnan' and 'ninf' are left
# out on purpose so that NaN and Inf propagate into their own groups.
FASTMATH = frozenset({"reassoc", "contract", "arcp", "nsz", "afn"})

_HOW_TO_FIX = (
    "set the environment variable NUMBA_CACHE_DIR to a writable directory "
    "to keep the compiled kernels between processes"
)


class CompileCacheWarning(RuntimeWarning):
    """The on-disk cache of compiled kernels could not be used; they are compiled instead."""


_warned: set[str] = set()


def _warn_once(kind, message):
    """Issue ``message`` unless a warning of this ``kind`` was already issued."""
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, CompileCacheWarning, stacklevel=3)


def _describe(error):
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def _entries_locked(index_path, exclusive):
    """Hold the lock of one kernel's cache entries: shared to read, exclusive to add one.

    Numba adds an entry by reading the kernel's index, choosing a free data
    file name and writing both, with no lock: processes compiling one kernel
    at once (MPI ranks, a pool's workers) would drop each other's entries,
    or map one signature to another's code, and a reader could find an
    index entry whose data file is not written yet.
    """
    descriptor = None
    if fcntl is not None:
        try:
            descriptor = os.open(index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only cache: nothing will be written to it
            pass
    if descriptor is None:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)


class _FallbackCache(FunctionCache):
    """Numba's on-disk cache of a kernel, whose errors cost a compilation, never a failure.

    Numba keys a cache entry on the kernel's source and signature, not on the
    compilation options: the entries here are also keyed on ``options`` (the
    dispatcher's), so that a change of them in this module is never answered
    with code compiled before it, such as Python's error model.
    """

    def __init__(self, py_func, options):
        super().__init__(py_func)
        self._options = repr(
            sorted(
                (name, sorted(value) if isinstance(value, (set, frozenset)) else value)
                for name, value in options.items()
            )
        )

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), self._options)

    def load_overload(self, sig, target_context):
        try:
            with _entries_locked(self._cache_file._index_path, exclusive=False):
                return super().load_overload(sig, target_context)
        except Exception as error:
            _warn_once(
                "load",
                f"numbanorm could not read a compiled kernel from the cache in "
                f"{self.cache_path!r} ({_describe(error)}); it is compiled "
                f"again and the cache entry replaced.",
            )
            try:
                # An empty index makes the save after the compilation start afresh,
                # where the unreadable one would fail it again.
                self.flush()
            except Exception:
                self.disable()
            return None

    def save_overload(self, sig, data):
        try:
            with _entries_locked(self._cache_file._index_path, exclusive=True):
                super().save_overload(sig, data)
        except Exception as error:
            _warn_once(
                "save",
                f"numbanorm could not save a compiled kernel to the cache in "
                f"{self.cache_path!r} ({_describe(error)}); it will be compiled "
                f"again in the next process.  To avoid that, {_HOW_TO_FIX}.",
            )


def _enable_cache(dispatcher):
    """Give ``dispatcher`` an on-disk cache, or warn that it compiles on every start."""
    try:
        dispatcher._cache = _FallbackCache(dispatcher.py_func, dispatcher.targetoptions)
    except Exception as error:
        _warn_once(
            "locate",
            f"numbanorm cannot cache its compiled kernels on disk "
            f"({_describe(error)}); they will be compiled on every start, "
            f"which takes tens of seconds.  To fix it, {_HOW_TO_FIX}.",
        )


def jit(py_func=None, *, parallel=False, helper=False, inline=False, fastmath=True):
    """Compile ``py_func`` with numbanorm's options.

    Parameters
    ----------
    py_func : function, optional
        The function to compile; without it, ``jit`` returns a decorator.
    parallel : bool, optional
        Compile ``prange`` loops to run on Numba's threads.
    helper : bool, optional
        Mark a function that is only called from other compiled code: it
        is compiled once per process and specialization, and linked into
        the kernels that call it, whose cache entries hold it.  LLVM
        inlines the linked copy: a call would resolve, in the process that
        compiled the helper, to that compilation instead of the kernel's
        copy, which LLVM optimized again and may round differently, and
        that process alone would compute other bits than the cached
        kernels.  Anything else is a kernel, cached on disk.
    inline : bool, optional
        A helper that Numba inlines into its callers, for a function called
        per element or per group, where a call would keep a loop from
        vectorizing or cost more than the work.  Inlined into a ``prange``
        body, it would be compiled several times over.
    fastmath : bool, optional
        Compile with the flags of ``FASTMATH``.

    Returns
    -------
    Dispatcher or callable
        The compiled function, or the decorator when ``py_func`` is None.
    """

    def decorate(function):
        # No wrapper to call the function through a C function pointer, which
        # numbanorm never does; a helper is not called from Python either.
        options = dict(error_model="numpy", parallel=parallel, no_cfunc_wrapper=True)
        if fastmath:
            options["fastmath"] = set(FASTMATH)
        if helper or inline:
            return njit(
                no_cpython_wrapper=True,
                inline="always" if inline else "never",
                forceinline=helper,
                **options,
            )(function)
        dispatcher = njit(**options)(function)
        # Numba's own cache=True raises at decoration when no cache directory is
        # usable, and lets a corrupted cache file fail the first call.
        if isinstance(dispatcher, Dispatcher):
            _enable_cache(dispatcher)
        return dispatcher

    return decorate if py_func is None else decorate(py_func)


def cache_directory() -> str | None:
    """The directory the CPU kernels' compiled code is cached in, or None without a cache.

    Numba puts it beside the kernels' source, in the ``__pycache__`` of the
    package that was imported, or under ``NUMBA_CACHE_DIR`` when that is set.
    """
    from . import _kernels

    for value in vars(_kernels).values():
        cache = getattr(value, "_cache", None)
        if isinstance(cache, _FallbackCache):
            return cache.cache_path
    return None
