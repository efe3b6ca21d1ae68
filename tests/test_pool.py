"""The opt-in output pool: off by default, reused once an output is freed, bounded, thread-safe."""

import threading

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._pool import MIN_POOLED_BYTES

import reference as ref
from helpers import assert_close

SHAPE = (256, 1024)  # 1 MiB of float32: the smallest pooled output


@pytest.fixture
def pool():
    yield nbn.set_output_pool(16 * MIN_POOLED_BYTES)
    nbn.set_output_pool(None)


@pytest.fixture
def x(rng):
    return rng.standard_normal(SHAPE).astype(np.float32)


def _address(a):
    return a.__array_interface__["data"][0]


def test_outputs_own_their_memory_without_a_pool(x):
    y = nbn.layer_norm(x)
    assert y.flags.owndata and y.base is None


def test_a_freed_output_is_reused_and_the_results_are_right(pool, x):
    y = nbn.layer_norm(x)
    address = _address(y)
    del y
    assert pool.held_bytes == x.nbytes
    y = nbn.layer_norm(x)
    assert _address(y) == address
    assert pool.held_bytes == 0
    assert_close(y, ref.layer_norm_forward(x.astype(np.float64))[0], np.float32)


def test_a_view_keeps_its_buffer_out_of_the_pool(pool, x):
    y = nbn.layer_norm(x)
    view = y[::2]
    kept = view.copy()
    del y
    assert pool.held_bytes == 0
    z = nbn.layer_norm(2 * x)
    assert _address(z) != _address(view)
    np.testing.assert_array_equal(view, kept)


def test_backward_gradients_come_from_the_pool_too(pool, rng, x):
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    _, mean, rstd = nbn.layer_norm_forward(x)
    dx = nbn.layer_norm_backward(dy, x, mean, rstd)[0]
    address = _address(dx)
    del dx
    assert _address(nbn.layer_norm_backward(dy, x, mean, rstd)[0]) == address


def test_small_outputs_are_not_pooled(pool, rng):
    y = nbn.layer_norm(rng.standard_normal((4, 64)).astype(np.float32))
    del y
    assert pool.held_bytes == 0


def test_the_pool_holds_at_most_its_limit(x):
    pool = nbn.set_output_pool(x.nbytes)
    try:
        y, z = nbn.layer_norm(x), nbn.layer_norm(x)
        del y, z
        assert pool.held_bytes == x.nbytes
    finally:
        nbn.set_output_pool(None)


def test_turning_the_pool_off_frees_what_it_holds_and_what_comes_back(pool, x):
    kept = nbn.layer_norm(x)
    y = nbn.layer_norm(x)
    del y
    assert pool.held_bytes == x.nbytes
    assert nbn.set_output_pool(None) is None
    assert pool.held_bytes == 0
    del kept
    assert pool.held_bytes == 0
    assert nbn.layer_norm(x).flags.owndata


def test_threads_share_the_pool(pool, rng):
    inputs = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(4)]
    expected = [nbn.layer_norm(a).copy() for a in inputs]
    errors = []

    def work(i):
        for _ in range(20):
            y = nbn.layer_norm(inputs[i])
            if not np.array_equal(y, expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 0 < pool.held_bytes <= pool.max_bytes
