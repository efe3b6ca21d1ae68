"""Processes that compile one kernel at the same time all keep their cache entries.

Numba adds a cache entry by reading the kernel's index, choosing a free data
file name and writing both.  Processes that compile the same kernel for
different signatures at once (MPI ranks, a pool's workers, ``warmup``) would
otherwise overwrite each other's entries, or map one signature to another's
code.  The writers here are slowed down between reading the index and
writing it, so that without a lock each one would read the index before any
other has written it.
"""

import subprocess
import sys

from helpers import environment, run_python

KERNEL = """
from numbanorm._jit import jit


@jit
def doubled(x):
    return x + x
"""

# Compiles ``doubled`` for one argument type, reading the index slowly.
WRITER = """
import sys, time
import numpy as np
from numba.core import caching

read_index = caching.IndexDataCacheFile._load_index


def slow_read(self):
    overloads = read_index(self)
    time.sleep(1.5)
    return overloads


caching.IndexDataCacheFile._load_index = slow_read
import kernel
print(int(kernel.doubled(np.dtype(sys.argv[1]).type(3))))
"""

# Loads ``doubled`` for every argument type: each must come from the cache, right.
READER = """
import sys
import numpy as np
import kernel
for name in sys.argv[1:]:
    value = kernel.doubled(np.dtype(name).type(3))
    assert value == 6, (name, value)
print(sum(kernel.doubled.stats.cache_hits.values()),
      sum(kernel.doubled.stats.cache_misses.values()))
"""

DTYPES = ["int64", "float64", "float32", "int32"]


def test_concurrent_compilations_keep_every_cache_entry(tmp_path):
    (tmp_path / "kernel.py").write_text(KERNEL)
    env = environment(str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in DTYPES
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert out.strip() == "6"
    reader = subprocess.run(
        [sys.executable, "-c", READER, *DTYPES],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.split() == [str(len(DTYPES)), "0"]


# Statistics and outputs of a few kernels, printed as their bytes' digests.
DIGESTS = """
import hashlib
import numpy as np
import numbanorm as nbn
rng = np.random.default_rng(0)
results = []
# Rows and slab kernels, their serial variants and the parallel ones.
for shape in [(64, 128), (1024, 32)]:
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    dy = np.cos(x)
    y, *stats = nbn.layer_norm_forward(x)
    results += [*nbn.moments(x, axis=1), y, *stats, *nbn.layer_norm_backward(dy, x, *stats)]
    y, *stats = nbn.batch_norm_forward(x)
    results += [y, *stats, *nbn.batch_norm_backward(dy, x, *stats)]
print(*(hashlib.sha256(np.ascontiguousarray(r).tobytes()).hexdigest()[:16] for r in results))
"""


def test_the_compiling_process_computes_what_later_processes_load(tmp_path):
    """A kernel calls helpers; Numba links a copy of them into it, which the cache holds.

    The process that compiled a helper must not run its own compilation of it
    in place of the kernel's copy, whose rounding may differ.
    """
    env = environment(NUMBA_CACHE_DIR=str(tmp_path))
    compiling = run_python(DIGESTS, env=env)
    loading = run_python(DIGESTS, env=env)
    assert compiling == loading
