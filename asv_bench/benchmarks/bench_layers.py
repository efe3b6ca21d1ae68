"""The stateful layers: a training step, an inference forward, exact population statistics."""

import numpy as np

import numbanorm

LAYERS = {
    "BatchNorm NCHW": (lambda dtype: numbanorm.BatchNorm(64, dtype=dtype), (32, 64, 28, 28)),
    "BatchNorm NHWC": (
        lambda dtype: numbanorm.BatchNorm(64, axis=-1, dtype=dtype),
        (32, 28, 28, 64),
    ),
    "GroupNorm NCHW": (lambda dtype: numbanorm.GroupNorm(32, 64, dtype=dtype), (32, 64, 28, 28)),
    "LayerNorm": (lambda dtype: numbanorm.LayerNorm(1024, dtype=dtype), (4096, 1024)),
    "RMSNorm": (lambda dtype: numbanorm.RMSNorm(1024, dtype=dtype), (4096, 1024)),
}


class Layer:
    """``layer(x)`` then ``layer.backward(dy)``, and the forward in evaluation mode."""

    params = [list(LAYERS), ["float32", "float64"]]
    param_names = ["layer", "dtype"]

    def setup(self, name, dtype):
        make, shape = LAYERS[name]
        rng = np.random.default_rng(0)
        self.layer = make(dtype)
        self.x = rng.standard_normal(shape).astype(dtype)
        self.dy = rng.standard_normal(shape).astype(dtype)
        self.time_train_step(name, dtype)
        self.layer.eval()
        self.layer(self.x)
        self.layer.train()

    def time_train_step(self, name, dtype):
        self.layer(self.x)
        self.layer.backward(self.dy)

    def time_eval_forward(self, name, dtype):
        self.layer.eval()
        self.layer(self.x)
        self.layer.train()


class RecomputeStats:
    """Exact population statistics of a batch-norm layer over 16 batches."""

    params = [["NCHW", "NHWC"]]
    param_names = ["layout"]

    def setup(self, layout):
        rng = np.random.default_rng(0)
        axis = 1 if layout == "NCHW" else -1
        shape = (32, 64, 28, 28) if layout == "NCHW" else (32, 28, 28, 64)
        self.layer = numbanorm.BatchNorm(64, axis=axis)
        self.batches = [rng.standard_normal(shape, dtype=np.float32) for _ in range(16)]
        numbanorm.recompute_stats(self.layer, self.batches[:1])

    def time_recompute_stats(self, layout):
        numbanorm.recompute_stats(self.layer, self.batches)
