import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test gets its own stable data."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
