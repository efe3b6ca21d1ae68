"""Fork safety, and every norm from many Python threads at once.

A process forked from a parent that started Numba's GNU OpenMP threading layer
aborts (or hangs) at its first parallel launch, so numbanorm runs the serial
kernels there.  Every fork scenario runs in a fresh subprocess with a timeout,
so that a worker that aborts and leaves its pool waiting fails the test
instead of hanging pytest.
"""

import ast
import multiprocessing
import os
import sys

import numpy as np
import pytest

import numbanorm as nbn

import reference as ref
from helpers import (
    PACKAGE_ROOT,
    assert_close,
    environment,
    random_array,
    run_concurrently,
    run_in_own_session,
)

DTYPE = np.float32
# Above the size that runs serially (16,384 elements), so that the parent runs
# the parallel kernels.
ROWS_SHAPE = (256, 1024)
CHANNELS_SHAPE = (16, 32, 64)
GROUPS = 8
RMS_EPS = 1e-5
# Parameter gradients are sums over many elements.
REDUCED_SCALE = 10.0
TIMEOUT = 300

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(),
    reason="the fork start method is unavailable",
)


def norm_cases(seed):
    """Every norm forward and backward on inputs large enough to run in parallel.

    Returns
    -------
    dict
        ``{name: (call, expected)}``: ``call()`` returns numbanorm's results,
        ``expected`` the float64 reference of each of them.
    """
    rng = np.random.default_rng(seed)

    def data(shape, loc=0.5, scale=2.0):
        return random_array(rng, shape, DTYPE, loc=loc, scale=scale)

    x, dy = data(ROWS_SHAPE), data(ROWS_SHAPE, loc=0.0, scale=1.0)
    weight, bias = data(ROWS_SHAPE[-1:], loc=1.0, scale=0.5), data(ROWS_SHAPE[-1:])
    xc, dyc = data(CHANNELS_SHAPE), data(CHANNELS_SHAPE, loc=0.0, scale=1.0)
    weightc, biasc = data(CHANNELS_SHAPE[1:2], loc=1.0, scale=0.5), data(CHANNELS_SHAPE[1:2])
    ln = ref.layer_norm_forward(x, weight, bias)
    rms = ref.rms_norm_forward(x, weight, eps=RMS_EPS)
    bn = ref.batch_norm_forward(xc, weight=weightc, bias=biasc)
    gn = ref.group_norm_forward(xc, GROUPS, weightc, biasc)
    inst = ref.instance_norm_forward(xc, weight=weightc, bias=biasc)
    return {
        "layer_norm_forward": (lambda: nbn.layer_norm_forward(x, weight, bias), ln),
        "layer_norm_backward": (
            lambda: nbn.layer_norm_backward(dy, x, *ln[1:], weight),
            ref.layer_norm_backward(dy, x, *ln[1:], weight),
        ),
        "rms_norm_forward": (lambda: nbn.rms_norm_forward(x, weight, eps=RMS_EPS), rms),
        "rms_norm_backward": (
            lambda: nbn.rms_norm_backward(dy, x, rms[1], weight),
            ref.rms_norm_backward(dy, x, rms[1], weight),
        ),
        "batch_norm_forward": (lambda: nbn.batch_norm_forward(xc, weight=weightc, bias=biasc), bn),
        "batch_norm_backward": (
            lambda: nbn.batch_norm_backward(dyc, xc, *bn[1:], weightc),
            ref.batch_norm_backward(dyc, xc, *bn[1:], weightc),
        ),
        "group_norm_forward": (lambda: nbn.group_norm_forward(xc, GROUPS, weightc, biasc), gn),
        "group_norm_backward": (
            lambda: nbn.group_norm_backward(dyc, xc, GROUPS, *gn[1:], weightc),
            ref.group_norm_backward(dyc, xc, GROUPS, *gn[1:], weightc),
        ),
        "instance_norm_forward": (
            lambda: nbn.instance_norm_forward(xc, weight=weightc, bias=biasc),
            inst,
        ),
        "instance_norm_backward": (
            lambda: nbn.instance_norm_backward(dyc, xc, *inst[1:], weightc),
            ref.instance_norm_backward(dyc, xc, *inst[1:], weightc),
        ),
    }


def check_case(cases, name):
    """Run case ``name`` of :func:`norm_cases` and compare every result with its reference."""
    call, expected = cases[name]
    actual = call()
    assert len(actual) == len(expected), name
    for index, (result, truth) in enumerate(zip(actual, expected)):
        scale = REDUCED_SCALE if name.endswith("backward") and index else 1.0
        assert_close(result, truth, DTYPE, scale=scale, err_msg=f"{name}[{index}]")


def _run_isolated(script):
    """Run ``script`` in a fresh interpreter and session; ``(stdout, stderr)`` once it succeeds.

    On timeout the whole session, forked workers included, is killed.
    """
    return run_in_own_session(
        [sys.executable, "-c", script],
        env=environment(PACKAGE_ROOT, TESTS_DIR),
        timeout=TIMEOUT,
        what="a forked worker (it aborted or hung)",
    )


# The last line printed reports the parent's threading layer, its OpenMP
# vendor (None for other layers) and what the forked processes found.
PREAMBLE = """
import multiprocessing
import sys
import numba
import numpy as np
import numbanorm
from numbanorm import _threading

def report(children):
    openmp = sys.modules.get("numba.np.ufunc.omppool")
    vendor = getattr(openmp, "openmp_vendor", None) if numba.threading_layer() == "omp" else None
    print(repr((numba.threading_layer(), vendor, children)))
"""

POOL_SCRIPT = (
    PREAMBLE
    + """
import test_fork
cases = test_fork.norm_cases(0)
for name in cases:
    test_fork.check_case(cases, name)

def work(name):
    test_fork.check_case(cases, name)
    return _threading.parallel_unsafe()

with multiprocessing.get_context("fork").Pool(2) as pool:
    report(sorted(set(pool.map(work, sorted(cases)))))
"""
)

# The parent starts the threading layer with Numba code of its own; a forked
# child forks a grandchild, both of which normalize after the fork.
OTHER_NUMBA_SCRIPT = (
    PREAMBLE
    + """
import reference

@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += x[i]
    return s

x = np.random.default_rng(0).standard_normal((256, 1024))
expected = reference.layer_norm_forward(x)[0]

def normalize(queue, depth):
    if depth:
        inner = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=normalize,
                                                             args=(inner, depth - 1))
        child.start()
        found = inner.get()
        child.join()
    else:
        found = []
    correct = np.allclose(numbanorm.layer_norm(x), expected, rtol=1e-10, atol=1e-10)
    queue.put([(_threading.parallel_unsafe(), correct)] + found)

total(x.ravel())
queue = multiprocessing.get_context("fork").Queue()
child = multiprocessing.get_context("fork").Process(target=normalize, args=(queue, 1))
child.start()
found = queue.get()
child.join()
report(found)
"""
)


def _parse(out):
    layer, vendor, children = ast.literal_eval(out.strip().splitlines()[-1])
    return layer, layer == "omp" and vendor == "GNU", children


@needs_fork
def test_fork_pool_after_parallel_use_of_every_norm():
    """A fork pool works after the parent ran every norm's parallel kernels."""
    layer, unsafe, flags = _parse(_run_isolated(POOL_SCRIPT)[0])
    # Workers of a GNU OpenMP parent run serially; other layers stay parallel.
    assert flags == [unsafe], layer


@needs_fork
def test_fork_after_other_numba_code_and_grandchild():
    """Other Numba code started the layer: the child and grandchild still work."""
    layer, unsafe, found = _parse(_run_isolated(OTHER_NUMBA_SCRIPT)[0])
    assert found == [(unsafe, True), (unsafe, True)], layer


THREADS = 8
ITERATIONS = 3


def test_eight_threads_every_norm_forward_and_backward():
    """Eight Python threads run different norms, forward and backward, at once."""
    cases = norm_cases(1)
    names = sorted(cases)

    def work(index):
        # Each thread starts at another case, so different kernels overlap.
        for step in range(ITERATIONS * len(names)):
            check_case(cases, names[(index + step) % len(names)])

    run_concurrently(work, THREADS)
