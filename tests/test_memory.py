"""No temporary the size of the input: peak memory is the outputs plus a small fraction.

Numba's allocations are invisible to ``tracemalloc``, so the peak resident
memory of each call is measured instead, in a fresh process: the kernels
are warmed up on the same shapes first (compilation and the start of the
threads do not count), Linux's peak (``VmHWM``) is reset to the current
resident size through ``/proc/self/clear_refs``, and the call runs once
more.  Every call may use, beyond its results, an eighth of its input and a
few MiB for the interpreter and the allocator, and a few float64 numbers
per group (statistics, sums); the backward also its parameter gradients with
their float64 and float32 partial sums.
"""

import json
import os
import textwrap

import pytest

from helpers import run_python

MIB = 1 << 20

# Runs in the fresh process: measures every case and prints a JSON object
# {case: [growth of the peak in bytes, bytes the call may use]}.
WORKER = textwrap.dedent(r'''
    import functools
    import gc
    import json
    import re
    import sys

    import numpy as np

    import numbanorm as nbn

    SLACK = 4 << 20


    def status(field):
        with open("/proc/self/status") as f:
            return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


    def peak_growth(call, warm_up=None):
        (warm_up or call)()  # compile or load the kernels, start the threads
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak resident size starts again from the current one
        before = status("VmRSS")
        call()
        return status("VmHWM") - before


    def data(shape, seed=0):
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


    NORMS = {
        "layer_norm": (nbn.layer_norm_forward, nbn.layer_norm_backward, (4096, 1024), -1, ()),
        "rms_norm": (nbn.rms_norm_forward, nbn.rms_norm_backward, (4096, 1024), -1, ()),
        "batch_norm NCHW": (nbn.batch_norm_forward, nbn.batch_norm_backward,
                            (128, 32, 32, 32), 1, ()),
        "batch_norm NHWC": (nbn.batch_norm_forward, nbn.batch_norm_backward,
                            (128, 32, 32, 32), -1, ()),
        "group_norm": (nbn.group_norm_forward, nbn.group_norm_backward, (128, 32, 32, 32), 1,
                       (8,)),
        "instance_norm NHWC": (nbn.instance_norm_forward, nbn.instance_norm_backward,
                               (128, 32, 32, 32), -1, ()),
        "layer_norm 1-D": (nbn.layer_norm_forward, nbn.layer_norm_backward, (1 << 22,), -1, ()),
        "rms_norm 1-D": (nbn.rms_norm_forward, nbn.rms_norm_backward, (1 << 22,), -1, ()),
        "batch_norm wide": (nbn.batch_norm_forward, nbn.batch_norm_backward, (64, 625000), 1,
                            ()),
    }
    PLAIN = {"layer_norm": nbn.layer_norm, "rms_norm": nbn.rms_norm,
             "batch_norm": nbn.batch_norm, "group_norm": nbn.group_norm,
             "instance_norm": nbn.instance_norm}


    def norm_cases(name):
        """The cases of a row of NORMS; a name ending in " where" passes a mask that
        broadcasts along the channel or normalized axis, as padding masks do."""
        masked = name.endswith(" where")
        forward, backward, shape, axis, args = NORMS[name.removesuffix(" where")]
        plain = PLAIN[name.split()[0]]
        x, dy, out = data(shape), data(shape, 1), np.empty(shape, np.float32)
        if masked:
            mask_shape = tuple(1 if a == axis % len(shape) else n for a, n in enumerate(shape))
            where = np.random.default_rng(2).random(mask_shape) < 0.8
            forward, backward, plain = (
                functools.partial(f, where=where) for f in (forward, backward, plain)
            )
        _, *stats = forward(x, *args, axis=axis)
        params = shape[axis]
        stats_bytes = sum(s.nbytes for s in stats)
        # and the kernels' float64 statistics and sums, a few per group
        slack = x.nbytes // 8 + SLACK + 4 * 8 * stats[0].size
        # dweight and dbias, their float64 sums and float32 partial sums, and
        # the weight of ones a backward without weight uses: parameter-sized,
        # which only a 1-D input makes as large as the input
        gradients = 2 * params * (4 + 8 + 4) + params * 4
        yield "forward", lambda: forward(x, *args, axis=axis), x.nbytes + stats_bytes + slack
        yield "forward out=", lambda: plain(x, *args, axis=axis, out=out), slack
        yield "forward out=x", lambda: plain(x, *args, axis=axis, out=x), slack
        yield ("backward", lambda: backward(dy, x, *args, *stats, axis=axis),
               x.nbytes + gradients + slack)
        yield ("backward out=", lambda: backward(dy, x, *args, *stats, axis=axis, out=out),
               gradients + slack)


    def wide_moments():
        x = data((64, 625000))
        yield "", lambda: nbn.moments(x, axis=0), 2 * 625000 * 4 + x.nbytes // 8 + SLACK


    def new_length():
        """1-D norms in place, warmed up on another length: nothing is kept between calls."""
        x = data(1 << 22)
        other = x[:-1].copy()
        for norm in (nbn.layer_norm, nbn.rms_norm):
            yield (norm.__name__, lambda: norm(x, out=x), lambda: norm(other, out=other),
                   x.nbytes // 8 + SLACK)


    def row_lengths():
        """Growth of the resident size over 100 calls with other row lengths (no peak)."""
        buffer = data(2 * 500_000)
        out = np.ones_like(buffer)  # resident before the measurement, as buffer is
        lengths = [400_000 + 997 * k for k in range(101)]
        for norm in (nbn.layer_norm, nbn.rms_norm):
            norm(buffer[:2 * lengths[0]].reshape(2, -1))
        gc.collect()
        before = status("VmRSS")
        for n in lengths[1:]:
            for norm in (nbn.layer_norm, nbn.rms_norm):
                norm(buffer[:2 * n].reshape(2, n))
                norm(buffer[:2 * n].reshape(2, n), out=out[:2 * n].reshape(2, n))
        gc.collect()
        return status("VmRSS") - before


    results = {}
    for group in sys.argv[1:]:
        if group == "row lengths":
            results[group] = [row_lengths(), SLACK]
            continue
        if group == "new length":
            for label, call, warm_up, allowed in new_length():
                results[f"{group} {label}"] = [peak_growth(call, warm_up), allowed]
            continue
        cases = wide_moments() if group == "moments wide" else norm_cases(group)
        for label, call, allowed in cases:
            results[f"{group} {label}".strip()] = [peak_growth(call), allowed]
            gc.collect()
    print(json.dumps(results))
''')

GROUPS = [
    "layer_norm",
    "rms_norm",
    "batch_norm NCHW",
    "batch_norm NHWC",
    "group_norm",
    "instance_norm NHWC",
    "layer_norm 1-D",
    "rms_norm 1-D",
    "batch_norm wide",
    "batch_norm NCHW where",
    "batch_norm NHWC where",
    "layer_norm where",
    "group_norm where",
    "moments wide",
    "new length",
    "row lengths",
]
LABELS = ["forward", "forward out=", "forward out=x", "backward", "backward out="]
CASES = [f"{group} {label}" for group in GROUPS[:-3] for label in LABELS] + [
    "moments wide",
    "new length layer_norm",
    "new length rms_norm",
    "row lengths",
]


def _proc_works():
    try:
        with open("/proc/self/status") as f:
            has_peak = "VmHWM" in f.read()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return has_peak
    except OSError:
        return False


@pytest.fixture(scope="module")
def measured():
    if not _proc_works():
        pytest.skip(
            "needs Linux's /proc/self/status (VmHWM) and a writable "
            "/proc/self/clear_refs to measure the peak resident memory of a call"
        )
    # Fixed thresholds: glibc's adaptive ones would keep a freed result in the
    # heap after the warm-up, and the measured call would reuse it unseen.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 18), MALLOC_TRIM_THRESHOLD_=str(1 << 20))
    return json.loads(run_python(WORKER, *GROUPS, env=env).splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_peak_memory_is_the_results_and_a_small_fraction_of_the_input(measured, case):
    growth, allowed = measured[case]
    assert growth <= allowed, (
        f"{case}: the peak resident memory grew by {growth / MIB:.1f} MiB, "
        f"{allowed / MIB:.1f} MiB allowed"
    )
