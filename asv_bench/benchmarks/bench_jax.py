"""numbanorm.jax under jax.jit: the per-call overhead of the JAX path, beside jax.numpy."""

import numpy as np


def _jax_numpy_layer_norm(x, weight, bias):
    import jax.numpy as jnp

    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1 / jnp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + 1e-5)
    return centered * rstd * weight + bias


class JaxLayerNorm:
    """``jit`` of layer norm and of the gradient of its sum, small and large inputs."""

    params = [["numbanorm.jax", "jax.numpy"], ["forward", "grad"], ["32x64", "8192x1024"]]
    param_names = ["impl", "call", "shape"]
    timeout = 300

    def setup(self, impl, call, shape):
        try:
            import jax

            import numbanorm.jax
        except ImportError as error:
            raise NotImplementedError("jax is not importable") from error
        rows, count = map(int, shape.split("x"))
        rng = np.random.default_rng(0)
        args = (
            jax.numpy.asarray(rng.standard_normal((rows, count), dtype=np.float32)),
            jax.numpy.ones(count, np.float32),
            jax.numpy.zeros(count, np.float32),
        )
        layer_norm = numbanorm.jax.layer_norm if impl == "numbanorm.jax" else _jax_numpy_layer_norm
        if call == "forward":
            fn = jax.jit(layer_norm)
        else:
            fn = jax.jit(jax.grad(lambda *a: layer_norm(*a).sum(), argnums=(0, 1, 2)))
        self.run = lambda: jax.block_until_ready(fn(*args))
        self.run()

    def time_call(self, impl, call, shape):
        self.run()
