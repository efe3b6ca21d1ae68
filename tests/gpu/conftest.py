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


@pytest.fixture
def regimes(monkeypatch):
    """The regimes the calls of a test ran in, True for the rows regime."""
    from numbanorm import _cuda

    ran = []
    rows_regime = _cuda._rows_regime
    monkeypatch.setattr(
        _cuda, "_rows_regime", lambda shape4: ran.append(rows_regime(shape4)) or ran[-1]
    )
    return ran
