"""``python -m numbanorm warmup``: compile every kernel into the on-disk cache."""

import time

import numpy as np


def warmup(dtypes=("float32", "float64")):
    """Compile (or load from the cache) every kernel for the given dtypes.

    Small inputs run the kernels' serial variants and large ones the
    parallel kernels, so both sizes are run.  Returns the seconds spent on
    each dtype.
    """
    import numbanorm as nn

    timings = {}
    for name in dtypes:
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        for spatial, row_length in ((5, 40), (32, 4096)):
            images = rng.standard_normal((4, 8, spatial, spatial)).astype(name)
            rows = rng.standard_normal((6, row_length)).astype(name)
            channels_last = np.ascontiguousarray(np.moveaxis(images, 1, -1))
            for x, axis in ((images, 1), (channels_last, -1)):
                for forward, backward, extra in (
                    (nn.batch_norm_forward, nn.batch_norm_backward, ()),
                    (nn.instance_norm_forward, nn.instance_norm_backward, ()),
                    (nn.group_norm_forward, nn.group_norm_backward, (4,)),
                ):
                    y, mean, rstd = forward(x, *extra, axis=axis)
                    backward(y, x, *extra, mean, rstd, axis=axis)
            y, mean, rstd = nn.layer_norm_forward(rows)
            nn.layer_norm_backward(y, rows, mean, rstd)
            y, rrms = nn.rms_norm_forward(rows)
            nn.rms_norm_backward(y, rows, rrms)
            nn.moments(images, axis=(0, 2, 3))
        timings[name] = time.perf_counter() - start
    return timings
