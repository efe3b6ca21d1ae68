"""``python -m numbanorm warmup``: compile every kernel a user's calls run, in parallel.

For each dtype, every norm of ``NORMS`` is called forward and backward on a
small input (at most ``SERIAL_MAX_ELEMENTS`` elements, which runs the
kernels' serial variants) and on its example input (the parallel kernels),
channels-first and channels-last for the per-channel norms, and so is
``moments``.  The first call of a kernel with new argument types compiles it
and saves it to Numba's on-disk cache; later calls, in this process or any
other, load it.

The calls are split into one unit per dtype of the kernels (float16 runs the
float32 ones), each run in a worker process, one call after the other: every
helper a unit's kernels share is compiled once in it, where units by
direction or input size compiled each one in several processes.  The
processes save different signatures of the same kernels at once, which the
cache's lock keeps from losing entries (see ``numbanorm._jit``).
"""

import contextlib
import dataclasses
import math
import multiprocessing
import os
import queue
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import numbanorm

from .._jit import cache_directory
from .._kernels import SERIAL_MAX_ELEMENTS
from .._specs import BATCH_NORM, NORMS, Norm
from . import DTYPES, WARMUP_DTYPES


@dataclasses.dataclass(frozen=True)
class Call:
    """One public call on a seeded input: a norm's forward or backward, or ``moments``.

    Attributes
    ----------
    dtype : str
        The input's dtype.
    norm : Norm or None
        The norm; None for ``moments``.
    direction : str
        ``"forward"`` or ``"backward"`` (``moments`` counts as a forward).
    layout : str
        ``"channels-first"``, ``"channels-last"`` or ``"rows"``.
    shape : tuple of int
        The input's shape.
    axis : int or tuple of int
        The call's ``axis``.
    num_groups : int or None
        The number of groups of a grouped norm.
    """

    dtype: str
    norm: Norm | None
    direction: str
    layout: str
    shape: tuple[int, ...]
    axis: int | tuple[int, ...]
    num_groups: int | None = None

    @property
    def function(self):
        """The public function's name."""
        return "moments" if self.norm is None else f"{self.norm.name}_{self.direction}"

    def run(self):
        """Make the call (and compile or load what it runs)."""
        x = np.random.default_rng(0).standard_normal(self.shape).astype(self.dtype)
        function = getattr(numbanorm, self.function)
        if self.norm is None:
            function(x, axis=self.axis)
        elif self.direction == "forward":
            running = {}
            if self.norm.running_stats:  # what a layer passes, and their update
                channels = self.shape[self.axis]
                running = dict(
                    running_mean=np.zeros(channels, self.dtype),
                    running_var=np.ones(channels, self.dtype),
                )
            arguments = self.norm.forward_arguments(x, num_groups=self.num_groups, **running)
            function(*arguments, axis=self.axis)
        else:
            # Statistics of the right shape will do: which kernels run depends on
            # the types and the shape only, and a forward here would compile the
            # forward's kernels in this unit too.
            shape = self.norm.layout(self.shape, self.axis, self.num_groups).stat_shape
            stats = [np.ones(shape, self.dtype) for _ in self.norm.statistics]
            function(
                *self.norm.backward_arguments(x, x, stats, num_groups=self.num_groups),
                axis=self.axis,
            )


def small_shape(shape, keep):
    """``shape`` with its largest axes halved until it has at most ``SERIAL_MAX_ELEMENTS``
    elements; axis ``keep`` (the channels, or the normalized axis) is halved last."""
    shape = list(shape)
    while math.prod(shape) > SERIAL_MAX_ELEMENTS:
        largest = max(range(len(shape)), key=lambda a: (a != keep and shape[a] > 1, shape[a]))
        shape[largest] = -(-shape[largest] // 2)
    return tuple(shape)


def _inputs(norm, small):
    """``(layout, shape, axis)`` of the inputs ``norm`` is called on."""
    shape = norm.example_shape
    axis = norm.default_axis % len(shape)
    if small:
        shape = small_shape(shape, axis)
    if not norm.per_channel:
        return [("rows", shape, axis)]
    last = shape[:axis] + shape[axis + 1 :] + (shape[axis],)
    return [("channels-first", shape, axis), ("channels-last", last, len(shape) - 1)]


def calls(dtype, direction, small):
    """The calls of one dtype, direction and input size, ``moments`` with the forwards."""
    found = []
    for norm in NORMS:
        for layout, shape, axis in _inputs(norm, small):
            groups = shape[axis] // 2 if norm.grouped else None  # two channels a group
            found.append(Call(dtype, norm, direction, layout, shape, axis, groups))
    if direction == "forward":
        # Per-channel moments, the statistics of batch norm's channels-first input.
        layout, shape, axis = _inputs(BATCH_NORM, small)[0]
        found.append(
            Call(
                dtype,
                None,
                direction,
                layout,
                shape,
                tuple(a for a in range(len(shape)) if a != axis),
            )
        )
    return found


def kernel_dtype(dtype):
    """The dtype of the kernels that calls on ``dtype`` compile."""
    return "float32" if dtype == "float16" else dtype


def plan(dtypes):
    """The warmup's calls, one unit per kernel dtype, each unit's backwards first."""
    units = {}
    for dtype in dtypes:
        unit = units.setdefault(kernel_dtype(dtype), [])
        for small in (False, True):
            for direction in ("backward", "forward"):
                unit.extend(calls(dtype, direction, small))
    return list(units.values())


def check_dtypes(dtypes):
    """``dtypes`` without repeats; a ValueError names any that is not in ``DTYPES``."""
    unknown = [dtype for dtype in dtypes if dtype not in DTYPES]
    if unknown:
        raise ValueError(f"cannot warm up {', '.join(unknown)}: the dtypes are {', '.join(DTYPES)}")
    return list(dict.fromkeys(dtypes))


def worker_count(units):
    """One worker process per CPU this process may run on, at most one per unit."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return min(cpus, len(units))


# Set in each worker process: where it reports the calls it has made.
_finished = None


def _report_to(finished):
    global _finished
    _finished = finished


def _run_unit(unit):
    for call in unit:
        start = time.perf_counter()
        call.run()
        _finished.put((call, time.perf_counter() - start))


def _next_report(finished, futures):
    """The next ``(call, seconds)`` a worker reports, or a failed unit's error."""
    while True:
        try:
            return finished.get(timeout=0.5)
        except queue.Empty:
            for future in futures:
                if future.done():
                    future.result()


def run(units, *, workers=None, progress=None):
    """Make the calls of ``units``, each unit in order in a worker process.

    Parameters
    ----------
    units : list of list of Call
        Units that share no kernel signature (see :func:`plan`).
    workers : int, optional
        The number of worker processes; by default :func:`worker_count`.
    progress : callable, optional
        Called here as each call completes, with the number of calls
        completed, their total, the call and its seconds.

    Returns
    -------
    dict
        The seconds each dtype's calls took, summed over the workers.
    """
    total = sum(map(len, units))
    timings = {call.dtype: 0.0 for unit in units for call in unit}
    # Not fork: Numba's threads may be running in this process.
    context = multiprocessing.get_context("spawn")
    finished = context.Queue()
    with ProcessPoolExecutor(
        workers or worker_count(units),
        mp_context=context,
        initializer=_report_to,
        initargs=(finished,),
    ) as pool:
        futures = [pool.submit(_run_unit, unit) for unit in units]
        try:
            for done in range(1, total + 1):
                call, seconds = _next_report(finished, futures)
                timings[call.dtype] += seconds
                if progress:
                    progress(done, total, call, seconds)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return timings


def warmup(dtypes=WARMUP_DTYPES, *, progress=None):
    """Compile (or load from the on-disk cache) every kernel for the given dtypes.

    Parameters
    ----------
    dtypes : sequence of str
        Input dtypes, among ``DTYPES`` (float16 runs the float32 kernels).
    progress : callable, optional
        As in :func:`run`.

    Returns
    -------
    dict
        The seconds each dtype's calls took, summed over the worker processes.
    """
    return run(plan(check_dtypes(dtypes)), progress=progress)


def progress_line(done, total, call, seconds):
    """``[ 3/68] float32 batch_norm_forward ...  2.1 s``: one completed call."""
    shape = "x".join(map(str, call.shape))
    return (
        f"[{done:>{len(str(total))}}/{total}] {call.dtype:<7} {call.function:<22} "
        f"{call.layout:<14} {shape:<12} {seconds:5.1f} s"
    )


def print_progress(done, total, call, seconds):
    """Print :func:`progress_line`."""
    print(progress_line(done, total, call, seconds), flush=True)


@contextlib.contextmanager
def _bar(tqdm, total):
    """A ``progress`` that prints each call's line above a ``tqdm`` bar of the calls."""
    # No remaining time: the first calls compile the helpers the later ones
    # share, and take most of it.
    with tqdm(
        total=total,
        file=sys.stdout,
        unit="call",
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} calls [{elapsed}]",
    ) as bar:

        def progress(done, total, call, seconds):
            bar.write(progress_line(done, total, call, seconds))
            bar.update()

        yield progress


def _display(total, quiet):
    """A context giving what shows the calls as they end: nothing, a tqdm bar on a
    terminal where tqdm is importable, else plain lines (as in a log)."""
    if quiet:
        return contextlib.nullcontext(None)
    if sys.stdout.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return _bar(tqdm, total)
    return contextlib.nullcontext(print_progress)


def command(dtypes, *, quiet=False):
    """``python -m numbanorm warmup``: :func:`warmup`, showing the calls as they end
    (unless ``quiet``), then the totals."""
    units = plan(check_dtypes(dtypes))
    workers = worker_count(units)
    total = sum(map(len, units))
    if not quiet:
        print(
            f"numbanorm warmup: {total} calls in {workers} process{'es' if workers > 1 else ''}; "
            f"a kernel's first call compiles it (the first calls take longest), "
            f"later ones load it",
            flush=True,
        )
        print(f"compiled code cached in {cache_directory()}", flush=True)
    start = time.perf_counter()
    with _display(total, quiet) as progress:
        timings = run(units, workers=workers, progress=progress)
    print(
        "  ".join(f"{dtype}: {seconds:.1f} s" for dtype, seconds in timings.items())
        + f"  (total {time.perf_counter() - start:.1f} s wall)",
        flush=True,
    )
    return timings
