"""Per-channel mean and variance of a chunked dask array with ``numbanorm.dask.moments``.

Each chunk is reduced to its (count, mean, M2) state by numbanorm's kernels
and the states are merged in dask's tree reduction, here on dask's default
threaded scheduler.  The data are float32 with an offset of 1e4, where the
textbook ``E[x**2] - E[x]**2`` in float32 loses the variance; the merged
states keep it.  With ``ddof=1`` these are a ``BatchNorm`` layer's population
statistics, for data sets larger than memory.  The script checks them against
NumPy in float64 on the materialized data.  Run it with
``python examples/dask_moments.py``.
"""

import dask
import dask.array as da
import numpy as np

from numbanorm.dask import moments

# Signals (N, C, T), in chunks of 100 samples.
signals = 1e4 + da.random.default_rng(0).standard_normal(
    (1000, 8, 16), chunks=(100, 8, 16), dtype=np.float32
)
mean, var = moments(signals, axis=(0, 2), ddof=1)  # lazy, one shared reduction
mean, var = dask.compute(mean, var)

exact = signals.compute().astype(np.float64)
exact_mean, exact_var = exact.mean(axis=(0, 2)), exact.var(axis=(0, 2), ddof=1)
# Relative: the float32 mean near 1e4 is itself rounded by up to 5e-4.
mean_error = np.abs(mean / exact_mean - 1).max()
var_error = np.abs(var / exact_var - 1).max()
assert max(mean_error, var_error) < 1e-6, (mean_error, var_error)

textbook_var = (signals**2).mean(axis=(0, 2)) - signals.mean(axis=(0, 2)) ** 2
textbook_error = np.abs(textbook_var.compute() / exact.var(axis=(0, 2)) - 1).max()

print(f"{signals.numblocks[0]} chunks of {signals.chunksize}, {signals.dtype}")
print(f"mean against NumPy in float64, relative max error: {mean_error:.2e}")
print(f"variance against NumPy in float64, relative max error: {var_error:.2e}")
print(f"E[x**2] - E[x]**2 in float32, relatively off by: {textbook_error:.2e}")
