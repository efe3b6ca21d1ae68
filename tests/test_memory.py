"""No temporary the size of the input: peak memory is the outputs plus O(groups).

NumPy reports its allocations to ``tracemalloc``; the kernels' own scratch
(per-task, a few rows) is allocated by Numba and is not counted, but none of
it grows with the input.  The backward keeps one float64 partial sum of each
parameter gradient per task.
"""

import tracemalloc

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._kernels import TARGET_TASKS

CASES = {
    "layer_norm": (lambda x: nbn.layer_norm_forward(x), nbn.layer_norm_backward, (512, 1024), -1),
    "rms_norm": (lambda x: nbn.rms_norm_forward(x), nbn.rms_norm_backward, (512, 1024), -1),
    "batch_norm NCHW": (lambda x: nbn.batch_norm_forward(x), nbn.batch_norm_backward,
                        (16, 32, 32, 32), 1),
    "batch_norm NHWC": (lambda x: nbn.batch_norm_forward(x, axis=-1), nbn.batch_norm_backward,
                        (16, 32, 32, 32), -1),
    "group_norm": (lambda x: nbn.group_norm_forward(x, 8),
                   lambda dy, x, *stats, **kwargs: nbn.group_norm_backward(dy, x, 8, *stats,
                                                                            **kwargs),
                   (16, 32, 32, 32), 1),
    "instance_norm NHWC": (lambda x: nbn.instance_norm_forward(x, axis=-1),
                           nbn.instance_norm_backward, (16, 32, 32, 32), -1),
}


def _peak_bytes(call):
    call()  # compile and warm up outside the measurement
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward_allocate_only_their_results(rng, name):
    forward, backward, shape, axis = CASES[name]
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    _, *stats = forward(x)
    n_params = shape[axis]
    slack = 64 * 1024 + x.nbytes // 16 + 2 * TARGET_TASKS * n_params * 8
    assert _peak_bytes(lambda: forward(x)) < x.nbytes + slack
    assert _peak_bytes(lambda: backward(dy, x, *stats, axis=axis)) < x.nbytes + slack
    out = np.empty_like(x)
    assert _peak_bytes(lambda: backward(dy, x, *stats, axis=axis, out=out)) < slack
