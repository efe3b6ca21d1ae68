"""Whether the parallel kernels may run in this process.

Numba's OpenMP threading layer, when built against GNU OpenMP (Numba's Linux
builds), does not survive ``fork()``: a child of a process in which the layer
had been started terminates itself (or hangs) at its first parallel launch.
That is what a ``multiprocessing`` pool with the fork start method, or a
PyTorch ``DataLoader`` worker, does after the parent has used a parallel
kernel, whether numbanorm's or any other Numba code's.  The TBB and workqueue
layers are fork-safe.

An ``os.register_at_fork`` hook notes, in each forked child, whether the parent
had started the GNU OpenMP layer; such a child, and every process forked from
it, then runs the serial variants of the kernels.  The hook is registered when
numbanorm is imported, so it sees the forks that happen after that.
"""

import os
import sys

import numba

_OPENMP_MODULE = "numba.np.ufunc.omppool"

_unsafe = False


def parallel_unsafe():
    """True where a parallel launch would abort or hang the process.

    Read on every kernel launch: the work is done once per fork, in
    :func:`_after_fork_in_child`.
    """
    return _unsafe


def _started_layer():
    """Name of Numba's threading layer if it has been started, else None; never raises."""
    try:
        return numba.threading_layer()
    except ValueError:  # raised until the first parallel launch starts the layer
        return None


def _gnu_openmp_started():
    """Whether the threading layer started in this process, or inherited, is GNU OpenMP."""
    if _started_layer() != "omp":
        return False
    # The module is loaded whenever the OpenMP layer was started; if it cannot
    # be inspected, assume the unsafe vendor.
    openmp = sys.modules.get(_OPENMP_MODULE)
    return getattr(openmp, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child():
    global _unsafe
    # Numba's state is inherited too, so the children of an unsafe child are
    # found unsafe in the same way.
    _unsafe = _gnu_openmp_started()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
