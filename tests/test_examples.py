"""Every script in examples/ runs, and the results it says agree do agree.

A script prints a line ending in ``max error: <number>`` for each result
that must equal its reference up to rounding; a deliberately wrong result is
printed otherwise (``off by``), and not checked here.
"""

import functools
import pathlib
import re
import subprocess
import sys

import pytest

from helpers import environment

EXAMPLES_DIR = pathlib.Path(__file__).parent.parent / "examples"
EXAMPLES = sorted(path.name for path in EXAMPLES_DIR.glob("*.py"))
MAX_ERROR = re.compile(r"max error: (\S+)$", re.MULTILINE)


@functools.cache
def output_of(name):
    """The standard output of the example ``name``, which must exit with 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / name)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_there_are_examples():
    assert "padded_sequences.py" in EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_its_errors_are_small(name):
    output = output_of(name)
    errors = [float(error) for error in MAX_ERROR.findall(output)]
    assert errors, output
    assert max(errors) < 1e-4, output


def test_padded_sequences_shows_that_the_padding_biases_batch_norm():
    output = output_of("padded_sequences.py")
    off_by = re.search(r"^padded batch norm, off by: (\S+)$", output, re.MULTILINE)
    assert float(off_by[1]) > 0.1, output
