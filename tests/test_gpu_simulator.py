"""The GPU backend's tests (``tests/gpu``) and the backend contract on the GPU
backend (``tests/test_backend_contract.py``), under the Numba CUDA simulator.

The simulator must be switched on before Numba is imported, so the suite runs
in a separate process.  On a machine with a CUDA GPU, both also run in this
session, on the hardware.
"""

import pathlib
import re
import subprocess
import sys

from helpers import environment

TESTS = pathlib.Path(__file__).parent


def test_gpu_backend_under_the_cuda_simulator():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            str(TESTS / "gpu"),
            str(TESTS / "test_backend_contract.py"),
        ],
        env=environment(NUMBA_ENABLE_CUDASIM="1"),
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        timeout=1800,
    )
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    passed = re.findall(r"^PASSED (\S+?)::\S*", result.stdout, re.MULTILINE)
    gpu = sum(path.startswith("tests/gpu/") for path in passed)
    assert gpu >= 70, report
    # Every contract case ran on the CUDA backend as well as on the host.
    contract = re.findall(
        r"^PASSED tests/test_backend_contract\.py::\w+\[(host|cuda)", result.stdout, re.MULTILINE
    )
    assert contract.count("cuda") == contract.count("host") > 0, report
