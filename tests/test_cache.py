"""The on-disk cache: a second process loads the kernels instead of compiling them."""

import os
import subprocess
import sys

import numbanorm as nbn

SCRIPT = """
import numpy as np
import numbanorm
from numbanorm import _kernels
numbanorm.layer_norm(np.ones((4, 8), np.float32))  # the serial variant
numbanorm.layer_norm(np.ones((8, 4096), np.float32))  # the parallel kernel
stats = [_kernels.normalize.stats, _kernels.SERIAL[_kernels.normalize].stats]
print(sum(sum(s.cache_hits.values()) for s in stats),
      sum(sum(s.cache_misses.values()) for s in stats))
"""


def _run(cache_dir):
    package_root = os.path.dirname(os.path.dirname(nbn.__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    hits, misses = map(int, result.stdout.split())
    return hits, misses


def test_second_process_loads_kernels_from_cache(tmp_path):
    assert _run(tmp_path) == (0, 2)
    assert _run(tmp_path) == (2, 0)
