"""numbanorm in a NumPy data pipeline: standardizing batches of tabular features.

A first pass over the batches accumulates each feature's exact mean and
variance with ``Moments``; a second pass standardizes every batch with them
(batch norm in evaluation mode, features on the last axis), then normalizes
each standardized row with ``layer_norm``, both writing into buffers allocated once
(``out=``).  Every result is checked against the plain NumPy formula.  Run it
with ``python examples/numpy_pipeline.py``.
"""

import numpy as np

import numbanorm as nn

BATCH, FEATURES, BATCHES = 256, 12, 8
rng = np.random.default_rng(0)
# Features of very different offsets and scales, as raw tabular data has.
offsets = rng.uniform(-1e3, 1e3, FEATURES)
scales = rng.uniform(0.1, 50, FEATURES)


def feature_batches():
    """The data set, batch by batch, reproducibly."""
    batch_rng = np.random.default_rng(1)
    for _ in range(BATCHES):
        yield (offsets + scales * batch_rng.standard_normal((BATCH, FEATURES))).astype(np.float32)


stats = nn.Moments()
for batch in feature_batches():
    stats.update(batch, axis=0)
mean, var = stats.mean.astype(np.float32), stats.var().astype(np.float32)

data = np.concatenate(list(feature_batches())).astype(np.float64)
np.testing.assert_allclose(mean, data.mean(axis=0), rtol=1e-6)
np.testing.assert_allclose(var, data.var(axis=0), rtol=1e-5)
exact_standardized = (data - data.mean(axis=0)) / data.std(axis=0)
row_deviations = exact_standardized - exact_standardized.mean(axis=1, keepdims=True)
exact_rows = row_deviations / np.sqrt(exact_standardized.var(axis=1, keepdims=True) + 1e-5)

standardized = np.empty((BATCH, FEATURES), np.float32)
row_normalized = np.empty((BATCH, FEATURES), np.float32)
standardized_error = row_error = 0.0
for batch, exact, exact_row in zip(
    feature_batches(), np.split(exact_standardized, BATCHES), np.split(exact_rows, BATCHES)
):
    nn.batch_norm(batch, mean, var, training=False, eps=0, axis=-1, out=standardized)
    nn.layer_norm(standardized, out=row_normalized)
    standardized_error = max(standardized_error, np.abs(standardized - exact).max())
    row_error = max(row_error, np.abs(row_normalized - exact_row).max())

assert max(standardized_error, row_error) < 1e-4, (standardized_error, row_error)
print(f"{BATCHES} batches of {BATCH} rows and {FEATURES} features")
print(f"standardized against NumPy, max error: {standardized_error:.2e}")
print(f"row-normalized against NumPy, max error: {row_error:.2e}")
