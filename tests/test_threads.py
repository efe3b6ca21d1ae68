"""Concurrent calls from several Python threads return correct results."""

import threading

import numpy as np

import numbanorm as nbn
import reference as ref
from helpers import assert_close

THREADS = 4
ITERATIONS = 40


def test_concurrent_layer_norm_and_batch_norm(rng):
    inputs = [rng.standard_normal((64, 256)) + i for i in range(THREADS)]
    channels_inputs = [rng.standard_normal((32, 16, 8)) * (i + 1) for i in range(THREADS)]
    expected_ln = [ref.layer_norm_forward(x)[0] for x in inputs]
    expected_bn = [ref.batch_norm_forward(x)[0] for x in channels_inputs]
    expected_running = [ref.batch_norm_running_stats(x, np.zeros(16), np.ones(16), momentum=1.0)
                        for x in channels_inputs]
    barrier = threading.Barrier(THREADS)
    failures = []

    def work(index):
        try:
            barrier.wait()
            for _ in range(ITERATIONS):
                assert_close(nbn.layer_norm(inputs[index]), expected_ln[index], np.float64)
                running_mean, running_var = np.zeros(16), np.ones(16)
                y = nbn.batch_norm(channels_inputs[index], running_mean, running_var, momentum=1.0)
                assert_close(y, expected_bn[index], np.float64)
                assert_close(running_mean, expected_running[index][0], np.float64)
                assert_close(running_var, expected_running[index][1], np.float64)
        except Exception as error:
            failures.append((index, repr(error)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
