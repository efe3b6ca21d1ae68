"""The GPU backend's tests run where a GPU backend can: on a CUDA GPU, or under
the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before Numba is imported,
which ``tests/test_gpu_simulator.py`` arranges in a separate process)."""

import zlib

import numpy as np
import pytest

import numbanorm

if not numbanorm.cuda_available():
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test gets its own stable data."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
