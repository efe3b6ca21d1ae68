"""Concurrent calls from several Python threads return correct results."""

import numpy as np

import numbanorm as nbn

import reference as ref
from helpers import assert_close, environment, run_concurrently, run_python

THREADS = 4
ITERATIONS = 40


def test_concurrent_layer_norm_and_batch_norm(rng):
    # Above the size that runs serially, so that the parallel kernels run concurrently.
    inputs = [rng.standard_normal((64, 512)) + i for i in range(THREADS)]
    channels_inputs = [rng.standard_normal((64, 16, 32)) * (i + 1) for i in range(THREADS)]
    expected_ln = [ref.layer_norm_forward(x)[0] for x in inputs]
    expected_bn = [ref.batch_norm_forward(x)[0] for x in channels_inputs]
    expected_running = [
        ref.batch_norm_running_stats(x, np.zeros(16), np.ones(16), momentum=1.0)
        for x in channels_inputs
    ]

    def work(index):
        for _ in range(ITERATIONS):
            assert_close(nbn.layer_norm(inputs[index]), expected_ln[index], np.float64)
            running_mean, running_var = np.zeros(16), np.ones(16)
            y = nbn.batch_norm(channels_inputs[index], running_mean, running_var, momentum=1.0)
            assert_close(y, expected_bn[index], np.float64)
            assert_close(running_mean, expected_running[index][0], np.float64)
            assert_close(running_var, expected_running[index][1], np.float64)

    run_concurrently(work, THREADS)


WORKQUEUE_SCRIPT = """
import threading
import numpy as np
import numbanorm as nbn
inputs = [np.random.default_rng(i).standard_normal((256, 512)) + i for i in range(4)]
expected = [(x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
            for x in inputs]
wrong = []
def work(i):
    for _ in range(30):
        if not np.allclose(nbn.layer_norm(inputs[i]), expected[i], rtol=1e-10, atol=1e-10):
            wrong.append(i)
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
import numba
print(numba.threading_layer(), len(wrong))
"""


def test_concurrent_calls_under_workqueue_layer():
    """Numba's workqueue layer aborts on concurrent launches; numbanorm must serialize them."""
    output = run_python(WORKQUEUE_SCRIPT, env=environment(NUMBA_THREADING_LAYER="workqueue"))
    assert output.split() == ["workqueue", "0"]
