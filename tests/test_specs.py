"""Every norm specification has its public functions, its layer and its JAX wrapper.

The specifications drive the driver, the layers, warmup, the benchmarks and
the tests' table; these tests check that each is wired to what it describes.
"""

import inspect

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._specs import NORMS

from norms import NORM_CASES

NAMES = [norm.name for norm in NORMS]


@pytest.mark.parametrize("norm", NORMS, ids=NAMES)
def test_public_functions_and_layer_exist(norm):
    for suffix in ("", "_forward", "_backward"):
        assert callable(getattr(nbn, norm.name + suffix))
        assert norm.name + suffix in nbn.__all__
    layer = getattr(nbn, norm.layer)
    assert layer.norm is norm


@pytest.mark.parametrize("norm", NORMS, ids=NAMES)
def test_signatures_follow_the_specification(norm):
    forward = inspect.signature(getattr(nbn, norm.name + "_forward")).parameters
    assert forward["axis"].default == norm.default_axis
    assert forward["eps"].default == norm.default_eps
    assert ("bias" in forward) == norm.bias
    assert ("num_groups" in forward) == norm.grouped
    assert ("running_mean" in forward) == norm.running_stats
    if norm.mode_argument is not None:
        assert forward[norm.mode_argument].default is True
    backward = inspect.signature(getattr(nbn, norm.name + "_backward")).parameters
    assert all(name in backward for name in norm.statistics)


@pytest.mark.parametrize("norm", NORMS, ids=NAMES)
def test_results_have_the_specified_statistics_and_gradients(rng, norm):
    case = NORM_CASES[norm.name]
    x = rng.standard_normal((4, 6, 5))
    y, *stats = case.forward(x)
    assert y.shape == x.shape and len(stats) == len(norm.statistics)
    grads = case.backward(np.ones_like(x), x, stats)
    assert len(grads) == 1 + len(norm.gradients)


@pytest.mark.parametrize("norm", NORMS, ids=NAMES)
def test_the_jax_wrapper_exists(norm):
    jax_module = pytest.importorskip("numbanorm.jax")
    assert norm.name in jax_module.__all__
