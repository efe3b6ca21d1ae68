"""The GPU backend's tests (``tests/gpu``) under the Numba CUDA simulator.

The simulator must be switched on before Numba is imported, so the suite runs
in a separate process.  On a machine with a CUDA GPU, ``tests/gpu`` also runs
in this session, on the hardware.
"""

import os
import pathlib
import re
import subprocess
import sys

GPU_TESTS = pathlib.Path(__file__).parent / "gpu"


def test_gpu_backend_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(GPU_TESTS)],
        env=env, capture_output=True, text=True, cwd=GPU_TESTS.parent.parent)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 70, report
