"""Shared helpers for the numbanorm tests: tolerances, comparisons and harnesses."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import numbanorm

# The directory holding the numbanorm under test, for subprocesses to import it.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(numbanorm.__file__)))

TOLERANCES = {
    np.dtype(np.float16): dict(rtol=1e-2, atol=1e-2),
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tolerance(dtype):
    """``rtol``/``atol`` for results computed from inputs of ``dtype``.

    Integer and bool inputs are computed in float64.
    """
    dtype = np.dtype(dtype)
    return TOLERANCES.get(dtype, TOLERANCES[np.dtype(np.float64)])


def assert_close(actual, expected, dtype, *, scale=1.0, err_msg=""):
    """Assert ``actual`` matches the float64 ``expected`` to the tolerance of ``dtype``.

    ``scale`` widens both tolerances, for quantities that accumulate rounding
    error (gradients of weights summed over many elements).
    """
    tol = tolerance(dtype)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg} shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected,
        rtol=tol["rtol"] * scale,
        atol=tol["atol"] * scale,
        err_msg=err_msg,
    )


def random_array(rng, shape, dtype=np.float64, *, loc=0.5, scale=2.0):
    """Normal random data of ``dtype`` (ints and bools drawn to suit the type)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-20, 20, size=shape).astype(dtype)
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def channel_count(shape, axis):
    return shape[axis % len(shape)]


def normalized_shape(shape, axis):
    """Shape of LN/RMS ``weight``: sizes of the normalized axes in sorted order."""
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(shape[a] for a in sorted(a % len(shape) for a in axes))


def layer_stats_shape(shape, axis):
    """Shape of LN ``mean``/``rstd`` and RMS ``rrms``: ``shape`` without the normalized axes."""
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    normalized = {a % len(shape) for a in axes}
    return tuple(n for i, n in enumerate(shape) if i not in normalized)


def sample_count(shape, axis):
    """Size of the sample axis: axis 0, or axis 1 when the channel axis is 0."""
    return shape[1] if axis % len(shape) == 0 else shape[0]


BN_CASES = [
    ((8, 3), 1),
    ((8, 3), -1),
    ((4, 3, 5), 1),
    ((2, 3, 4, 5), 1),
    ((2, 4, 5, 3), -1),
    ((2, 4, 5, 3), 3),
    ((3, 4, 5), 0),
    ((2, 3, 4, 5), 2),
    ((5, 3, 2), -2),
]

LN_CASES = [
    ((4, 6), -1),
    ((4, 6), (-1,)),
    ((2, 3, 5), (-2, -1)),
    ((2, 3, 5), (1, 2)),
    ((2, 3, 5), (0, 2)),
    ((2, 3, 5), (2, 0)),
    ((2, 3, 5), 0),
    ((2, 3, 5), 1),
    ((3, 4), (0, 1)),
    ((2, 3, 4, 5), (1, 3)),
    ((7,), 0),
]

GN_CASES = [
    ((4, 6), 1, 3),
    ((2, 6, 5), 1, 2),
    ((2, 6, 5), 1, 6),
    ((2, 6, 5), 1, 1),
    ((2, 4, 3, 6), -1, 3),
    ((2, 3, 6), 2, 2),
    ((6, 2, 5), 0, 3),
    ((3, 4, 2, 2), 1, 2),
]

IN_CASES = [
    ((2, 3, 5), 1),
    ((2, 3, 4, 5), 1),
    ((2, 4, 5, 3), -1),
    ((3, 2, 5), 0),
    ((2, 5, 3), 2),
    ((1, 3, 4), 1),
]

RMS_CASES = [
    ((4, 6), -1),
    ((2, 3, 5), (-2, -1)),
    ((2, 3, 5), (0, 2)),
    ((2, 3, 5), 0),
    ((2, 3, 5), 1),
    ((7,), -1),
]


def coarser_dtype(*dtypes):
    """The least precise of the given float dtypes (integer dtypes count as float64)."""
    return max(
        (np.dtype(d) if np.dtype(d) in TOLERANCES else np.dtype(np.float64) for d in dtypes),
        key=lambda d: np.finfo(d).eps,
    )


def run_concurrently(work, n_threads):
    """Call ``work(index)`` in ``n_threads`` threads released together; fail on any error."""
    barrier = threading.Barrier(n_threads)
    failures = []

    def run(index):
        try:
            barrier.wait()
            work(index)
        except Exception as error:
            failures.append((index, repr(error)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def run_in_own_session(command, *, env, timeout, what, stderr=subprocess.PIPE):
    """``(stdout, stderr)`` of ``command`` run in a session of its own, once it succeeds.

    On timeout the whole session (forked workers, MPI ranks) is killed and
    the test fails, naming ``what``.
    """
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{what} did not finish in {timeout} s:\n{err or out}")
    assert process.returncode == 0, f"{what} failed:\n{err or out}"
    return out, err


# Lets Open MPI run as root and start more ranks than cores; MPICH ignores them.
OPEN_MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
}


def mpiexec_path():
    """The ``mpiexec`` beside the Python interpreter (an MPI from PyPI), else the one on the
    PATH, or None."""
    beside = pathlib.Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def environment(*paths, **variables):
    """``os.environ`` with ``variables`` set and ``paths`` (default: ``PACKAGE_ROOT``) first
    on ``PYTHONPATH``, for a subprocess that imports the numbanorm under test."""
    path = os.pathsep.join(
        filter(None, [*(paths or (PACKAGE_ROOT,)), os.environ.get("PYTHONPATH")])
    )
    return dict(os.environ, **variables, PYTHONPATH=path)


def run_python(script, *args, env=None, cwd=None, timeout=600):
    """The standard output of ``python -c script *args``; its failure fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def norm_functions(norm, groups, weight, bias=None):
    """``(forward, backward, leading, params)`` of a norm's public functions.

    A call is ``forward(x, *leading, *params, axis=...)``; ``leading`` holds
    the group count of group norm, ``params`` the running statistics (None)
    where the norm takes them, the weight, and the bias unless the norm has
    none (RMS norm).
    """
    forward = getattr(numbanorm, f"{norm}_forward")
    backward = getattr(numbanorm, f"{norm}_backward")
    params = (weight,) if norm == "rms_norm" else (weight, bias)
    if norm in ("batch_norm", "instance_norm"):
        params = (None, None, *params)
    return forward, backward, () if groups is None else (groups,), params
