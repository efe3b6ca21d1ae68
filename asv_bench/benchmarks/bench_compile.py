"""First calls with an empty kernel cache: what a new user waits for, and its floor.

Each measurement runs in a fresh interpreter whose ``NUMBA_CACHE_DIR`` is a
new empty directory, and counts the seconds after ``import``.  The floor is
the compile time of the smallest Numba kernels that make layer norm's passes
(statistics and the affine output in one parallel loop over rows; the
backward's row sums, ``dx`` and per-block parameter sums in another), with
numbanorm's compile options; numbanorm's own kernels add what they cover
beyond it: every layout, float32 and float64 arithmetic around a rounded
mean, overflow and NaN handling, and the optional arguments.
"""

import os
import subprocess
import sys
import tempfile

INPUTS = {
    "layer_norm": ("(256, 1024)", "layer_norm", "()"),
    "batch_norm": ("(32, 64, 28, 28)", "batch_norm", "(None, None)"),
    "batch_norm_2d": ("(4096, 256)", "batch_norm", "(None, None)"),
}

FIRST_CALL = """
import time
import numpy as np
import numbanorm
x = np.random.default_rng(0).standard_normal({shape}, dtype=np.float32)
start = time.perf_counter()
y, *stats = numbanorm.{norm}_forward(x, *{running})
if {backward}:
    numbanorm.{norm}_backward(y, x, *stats)
print(time.perf_counter() - start)
"""

FLOOR = """
import math
import time
import numpy as np
from numba import njit, prange

FASTMATH = {{"reassoc", "contract", "arcp", "nsz", "afn"}}
options = dict(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")

@njit(**options)
def forward(x, w, b, eps, y, mean, rstd):
    n, d = x.shape
    for i in prange(n):
        total = 0.0
        for j in range(d):
            total += x[i, j]
        m = total / d
        m2 = 0.0
        for j in range(d):
            m2 += (x[i, j] - m) ** 2
        r = 1.0 / math.sqrt(m2 / d + eps)
        for j in range(d):
            y[i, j] = (x[i, j] - m) * r * w[j] + b[j]
        mean[i] = m
        rstd[i] = r

@njit(**options)
def backward(dy, x, mean, rstd, w, dx, dw_blocks, db_blocks):
    n, d = x.shape
    blocks = dw_blocks.shape[0]
    for k in prange(blocks):
        for i in range(k * n // blocks, (k + 1) * n // blocks):
            g = 0.0
            gx = 0.0
            for j in range(d):
                xhat = (x[i, j] - mean[i]) * rstd[i]
                g += dy[i, j] * w[j]
                gx += dy[i, j] * w[j] * xhat
                dw_blocks[k, j] += dy[i, j] * xhat
                db_blocks[k, j] += dy[i, j]
            for j in range(d):
                xhat = (x[i, j] - mean[i]) * rstd[i]
                dx[i, j] = (dy[i, j] * w[j] - (g + xhat * gx) / d) * rstd[i]

x = np.random.default_rng(0).standard_normal((256, 1024), dtype=np.float32)
w, b = np.ones(1024, np.float32), np.zeros(1024, np.float32)
y, dx = np.empty_like(x), np.empty_like(x)
mean, rstd = np.empty(256, np.float32), np.empty(256, np.float32)
start = time.perf_counter()
forward(x, w, b, 1e-5, y, mean, rstd)
if {backward}:
    blocks = np.zeros((2, 16, 1024), np.float32)
    backward(y, x, mean, rstd, w, dx, blocks[0], blocks[1])
    blocks.sum(axis=1)
print(time.perf_counter() - start)
"""


def _seconds_with_empty_cache(script):
    with tempfile.TemporaryDirectory() as directory:
        # A file, not ``-c``: Numba caches only functions defined in one.
        path = os.path.join(directory, "first_call.py")
        with open(path, "w") as file:
            file.write(script)
        run = subprocess.run(
            [sys.executable, path],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "NUMBA_CACHE_DIR": os.path.join(directory, "cache")},
        )
    return float(run.stdout)


class ColdFirstCall:
    """Seconds of a norm's first float32 call after ``import``, compiling every kernel it runs."""

    params = (list(INPUTS), ["forward", "forward+backward"])
    param_names = ["input", "calls"]
    timeout = 300

    def track_cold_first_call(self, name, calls):
        shape, norm, running = INPUTS[name]
        script = FIRST_CALL.format(
            shape=shape, norm=norm, running=running, backward=calls != "forward"
        )
        return _seconds_with_empty_cache(script)

    track_cold_first_call.unit = "seconds"


class CompileFloor:
    """The same for the smallest kernels making layer norm's passes (see the module)."""

    params = ["forward", "forward+backward"]
    param_names = ["calls"]
    timeout = 300

    def track_compile_floor(self, calls):
        return _seconds_with_empty_cache(FLOOR.format(backward=calls != "forward"))

    track_compile_floor.unit = "seconds"
