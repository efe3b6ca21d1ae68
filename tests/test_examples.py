"""Every script in examples/ runs, and the results it says agree do agree.

A script asserts its own results, and prints a line ending in
``max error: <number>`` for each result that must equal its reference up to
rounding; a deliberately wrong result is printed otherwise (``off by``), and
not checked here.  A script that imports an optional dependency (jax, dask,
mpi4py, numba.cuda) at its top level is skipped without it; one that imports
mpi4py runs on 2 ranks under ``mpiexec``, one that imports ``numba.cuda``
under the Numba CUDA simulator unless a GPU is present.
"""

import ast
import functools
import importlib.util
import pathlib
import re
import sys

import pytest

import numbanorm

from helpers import OPEN_MPI_ENV, environment, mpiexec_path, run_in_own_session

EXAMPLES_DIR = pathlib.Path(__file__).parent.parent / "examples"
EXAMPLES = sorted(path.name for path in EXAMPLES_DIR.glob("*.py"))
MAX_ERROR = re.compile(r"max error: (\S+)$", re.MULTILINE)
# Cold, an example compiles its kernels (and JAX its functions) first.
TIMEOUT = 300


def module_of(name):
    """The syntax tree of the example ``name``."""
    return ast.parse((EXAMPLES_DIR / name).read_text(), name)


def imported_names(name):
    """``(modules, names)``: the modules that the example ``name`` imports at its top level,
    and the dotted names its imports bind (``M.N`` for ``from M import N``).  Imports in a
    block, such as a ``try`` for an optional comparison, are not listed."""
    modules, names = set(), set()
    for statement in module_of(name).body:
        if isinstance(statement, ast.Import):
            modules.update(alias.name for alias in statement.names)
            names.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            modules.add(statement.module)
            names.update(f"{statement.module}.{alias.name}" for alias in statement.names)
    return modules, names


def launch(name):
    """The command and environment that run the example ``name``, or a skip of the test
    where a module it needs is missing."""
    modules, names = imported_names(name)
    # Top-level packages only, which are found without importing them; numba.cuda is the
    # one optional part of a package numbanorm needs.
    needed = {module.partition(".")[0] for module in modules} | names & {"numba.cuda"}
    for module in sorted(needed):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name} needs {module}")
    command, env = [sys.executable, str(EXAMPLES_DIR / name)], environment()
    if "mpi4py.MPI" in names:
        mpiexec = mpiexec_path()
        if mpiexec is None:
            pytest.skip("no mpiexec beside the Python interpreter or on the PATH")
        # python -m mpi4py aborts every rank when one raises, instead of leaving the others
        # waiting in a collective until the timeout.
        command = [mpiexec, "-n", "2", sys.executable, "-m", "mpi4py", *command[1:]]
        env = environment(**OPEN_MPI_ENV)
    if "numba.cuda" in names and not numbanorm.cuda_available():
        env = environment(NUMBA_ENABLE_CUDASIM="1")
    return command, env


@functools.cache
def output_of(name):
    """The standard output of the example ``name``, which must exit with 0."""
    command, env = launch(name)
    return run_in_own_session(command, env=env, timeout=TIMEOUT, what=name)[0]


def test_there_are_examples():
    assert "padded_sequences.py" in EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_says_what_it_shows(name):
    docstring = ast.get_docstring(module_of(name))
    assert docstring, f"{name} has no module docstring"
    summary, _, body = docstring.partition("\n\n")
    assert summary.endswith(".") and body, f"{name}: a summary line, then what it shows"


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
