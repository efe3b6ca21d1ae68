"""The on-disk cache: a second process loads the kernels instead of compiling them.

A cache that cannot be used only costs a compilation: an unusable cache
directory, a corrupted cache file or a failed save give the right results
and one ``CompileCacheWarning``.  Every scenario runs in a fresh process,
since Numba reads ``NUMBA_CACHE_DIR`` and numbanorm decorates its kernels at
import.
"""

import json
import os
import shutil

import pytest

import numbanorm as nbn

from helpers import environment, run_python

SCRIPT = """
import numpy as np
import numbanorm
from numbanorm import _kernels
numbanorm.layer_norm(np.ones((4, 8), np.float32))  # the serial variant
numbanorm.layer_norm(np.ones((8, 4096), np.float32))  # the parallel kernel
kernel = _kernels.ROWS.normalize  # a single weight (none given): one per row
stats = [kernel.stats, _kernels.SERIAL[kernel].stats]
print(sum(sum(s.cache_hits.values()) for s in stats),
      sum(sum(s.cache_misses.values()) for s in stats))
"""

# Imports numbanorm (decorating the kernels may warn), runs a small layer norm
# (the serial kernels) and checks it against the formula.  Prints the
# messages of numbanorm's cache warnings, the directory numbanorm was imported
# from and the cache hits and misses of the kernels.
CHECK = """
import errno, json, sys, warnings
import numpy as np
from numba.core import caching

if "--full-disk" in sys.argv:
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    caching.IndexDataCacheFile._open_for_write = no_space

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numbanorm
    from numbanorm import _jit, _kernels
    x = np.linspace(-3.0, 5.0, 32).reshape(4, 8) ** 2
    y = numbanorm.layer_norm(x)
centered = x - x.mean(axis=1, keepdims=True)
expected = centered / np.sqrt((centered ** 2).mean(axis=1, keepdims=True) + 1e-5)
np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
kernels = [*_kernels.SERIAL, *_kernels.SERIAL.values(), _kernels.merge_moments]
print(json.dumps({
    "warnings": [str(w.message) for w in caught
                 if issubclass(w.category, _jit.CompileCacheWarning)],
    "package": numbanorm.__file__,
    "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
    "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
}))
"""


# A kernel whose options, not its source, depend on the environment.
PROBE = """
import os
from numbanorm._jit import jit


@jit(fastmath=os.environ["PROBE_FASTMATH"] == "1")
def ratio(a, b):
    return a / b
"""

PROBE_SCRIPT = """
import probe
assert probe.ratio(1.0, 4.0) == 0.25
stats = probe.ratio.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def _run(cache_dir):
    hits, misses = map(
        int, run_python(SCRIPT, env=environment(NUMBA_CACHE_DIR=str(cache_dir))).split()
    )
    return hits, misses


def _copy_package(site):
    shutil.copytree(
        os.path.dirname(nbn.__file__),
        site / "numbanorm",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory holding a copy of the package, whose sources stay as they are."""
    return _copy_package(tmp_path_factory.mktemp("site"))


def _check(site, cache_dir, *args, **extra):
    """Run :data:`CHECK` on the copy of the package in ``site``; return its report."""
    env = environment(str(site), NUMBA_CACHE_DIR=str(cache_dir), **extra)
    # From ``site``, not from a checkout that ``python -c`` would import.
    report = json.loads(run_python(CHECK, *args, env=env, cwd=site))
    assert report["package"].startswith(str(site))
    return report


def test_second_process_loads_kernels_from_cache(tmp_path):
    assert _run(tmp_path) == (0, 2)
    assert _run(tmp_path) == (2, 0)


def test_unusable_cache_directory_compiles_with_one_warning(tmp_path):
    # Every place Numba looks for a cache directory lies under a regular file,
    # so that it cannot be created even by root, for whom permissions do not
    # count: NUMBA_CACHE_DIR, the user's cache directory, and the __pycache__
    # next to the sources of a copy of the package.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    site = _copy_package(tmp_path / "site")
    (site / "numbanorm" / "__pycache__").write_text("")

    report = _check(
        site, blocker / "numba", HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache")
    )

    assert len(report["warnings"]) == 1, report["warnings"]
    assert "NUMBA_CACHE_DIR" in report["warnings"][0]
    assert report["hits"] == 0


@pytest.fixture(scope="module")
def filled_cache(site, tmp_path_factory):
    """A cache directory holding the kernels of :data:`CHECK`."""
    cache_dir = tmp_path_factory.mktemp("filled")
    report = _check(site, cache_dir)
    assert report["warnings"] == [] and report["misses"] > 0
    return cache_dir


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"not a pickle" * 10)


@pytest.mark.parametrize("suffix", ["nbi", "nbc"])
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupted_cache_file_is_recompiled_and_replaced(site, filled_cache, tmp_path, suffix, how):
    cache_dir = tmp_path / "cache"
    shutil.copytree(filled_cache, cache_dir)
    damaged = sorted(cache_dir.rglob(f"*.{suffix}"))
    assert damaged
    for path in damaged:
        _damage(path, how)

    report = _check(site, cache_dir)
    assert len(report["warnings"]) == 1, report["warnings"]
    assert report["misses"] > 0

    report = _check(site, cache_dir)
    assert report["warnings"] == []
    assert report["misses"] == 0 and report["hits"] > 0


def test_failed_save_compiles_with_one_warning(site, tmp_path):
    report = _check(site, tmp_path, "--full-disk")
    assert len(report["warnings"]) == 1, report["warnings"]
    assert "No space left" in report["warnings"][0]

    report = _check(site, tmp_path)
    assert report["warnings"] == []
    assert report["misses"] > 0


def test_cache_entries_are_keyed_on_the_compilation_options(site, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)

    def run(fastmath):
        env = environment(
            str(tmp_path),
            str(site),
            NUMBA_CACHE_DIR=str(tmp_path / "cache"),
            PROBE_FASTMATH=fastmath,
        )
        return tuple(map(int, run_python(PROBE_SCRIPT, env=env, cwd=tmp_path).split()))

    assert run("1") == (0, 1)
    assert run("0") == (0, 1)  # the same source, other options: compiled, not loaded
    assert run("1") == (1, 0)
    assert run("0") == (1, 0)
