"""Benchmark cases and the implementations they are timed with.

Shared by ``python -m numbanorm bench`` and the asv suite, so that both time
the same calls.  Every implementation of an operation is built as a
zero-argument callable over preallocated, seeded data; building raises
:class:`PeerUnavailable` (a ``NotImplementedError``, which asv reads as
"skip") when a peer is not importable or has no such operation.

Peers: a naive NumPy version of the formulas, PyTorch (``torch.nn.functional``
and autograd), ONNX Runtime (forward only, channels-first only) and JAX
(``jit``).  Peers are imported lazily; none is a dependency.
"""

import math
from dataclasses import dataclass

import numpy as np

IMPLEMENTATIONS = ("numbanorm", "numpy", "torch", "onnxruntime", "jax")
DIRECTIONS = ("forward", "forward_out", "backward", "backward_out")
EPS = 1e-5


class PeerUnavailable(NotImplementedError):
    """The implementation is not importable, or has no such operation."""


@dataclass(frozen=True)
class Case:
    """One benchmark input: a norm, a shape and a layout.

    ``layout`` is ``"rows"`` for layer/RMS norm and ``moments`` over the last
    axis, ``"NCHW"`` or ``"2-D"`` for a channel axis 1, ``"NHWC"`` for a
    channel axis -1.  ``groups`` is group norm's number of groups.
    """

    norm: str
    shape: tuple
    layout: str
    groups: int = 0

    @property
    def label(self):
        return f"{self.norm} {self.layout} {'x'.join(map(str, self.shape))}"

    @property
    def channel_axis(self):
        return -1 if self.layout in ("rows", "NHWC") else 1

    @property
    def channels(self):
        return self.shape[self.channel_axis]

    @property
    def grouped_view(self):
        """``(shape, reduced axes, parameter shape)`` of a view with one axis per group index.

        Reducing the view over the reduced axes gives each group's statistics;
        the parameters reshaped to the parameter shape broadcast against it.
        """
        shape, C = self.shape, self.channels
        if self.layout == "rows":
            return shape, (len(shape) - 1,), (C,)
        spatial = tuple(range(2, len(shape))) if self.layout != "NHWC" else ()
        if self.norm in ("batch_norm", "moments"):
            axes = (0, *spatial) if self.layout != "NHWC" else tuple(range(len(shape) - 1))
            pshape = (C,) if self.layout != "NCHW" else (1, C) + (1,) * (len(shape) - 2)
            return shape, axes, pshape
        if self.norm == "instance_norm":
            if self.layout == "NHWC":
                return shape, tuple(range(1, len(shape) - 1)), (C,)
            return shape, spatial, (1, C) + (1,) * (len(shape) - 2)
        G = self.groups
        if self.layout == "NHWC":
            view = (*shape[:-1], G, C // G)
            return view, (*range(1, len(shape) - 1), len(view) - 1), (G, C // G)
        view = (shape[0], G, C // G, *shape[2:])
        return view, tuple(range(2, len(view))), (1, G, C // G) + (1,) * (len(shape) - 2)

    @property
    def centered(self):
        return self.norm != "rms_norm"

    @property
    def has_bias(self):
        return self.norm != "rms_norm"

    def bytes_moved(self, direction, itemsize):
        """Bytes that must move: read x and write y; the backward also reads dy."""
        arrays = 3 if direction.startswith("backward") else 2
        if self.norm == "moments":
            arrays = 1
        return arrays * math.prod(self.shape) * itemsize

    def data(self, dtype=np.float32, seed=0):
        """Seeded ``x``, ``dy``, ``weight`` and ``bias`` (``(C,)``, float32 or float64)."""
        rng = np.random.default_rng(seed)
        C = self.channels
        return {
            "x": rng.standard_normal(self.shape, dtype=np.float32).astype(dtype, copy=False),
            "dy": rng.standard_normal(self.shape, dtype=np.float32).astype(dtype, copy=False),
            "weight": (1 + 0.1 * rng.standard_normal(C)).astype(dtype),
            "bias": (0.1 * rng.standard_normal(C)).astype(dtype),
        }


BENCHMARK_CASES = (
    Case("layer_norm", (8192, 1024), "rows"),
    Case("layer_norm", (65536, 256), "rows"),
    Case("rms_norm", (8192, 1024), "rows"),
    Case("batch_norm", (32, 64, 56, 56), "NCHW"),
    Case("batch_norm", (65536, 256), "2-D"),
    Case("batch_norm", (32, 56, 56, 64), "NHWC"),
    Case("group_norm", (32, 64, 56, 56), "NCHW", groups=32),
    Case("group_norm", (32, 56, 56, 64), "NHWC", groups=32),
    Case("instance_norm", (32, 64, 56, 56), "NCHW"),
    Case("moments", (8192, 1024), "rows"),
    Case("moments", (32, 64, 56, 56), "NCHW"),
)


def check_operation(impl, implementations, direction, case):
    """Raise unless ``impl`` is known and can run ``direction`` of ``case``."""
    if impl not in implementations:
        raise ValueError(f"unknown implementation {impl!r}")
    if case.norm == "moments" and direction != "forward":
        raise PeerUnavailable("moments has only a forward")
    if direction.endswith("_out") and impl != "numbanorm":
        raise PeerUnavailable(f"{impl} has no out= {direction[:-4]}")


def build(impl, direction, case, data):
    """A zero-argument callable running ``direction`` of ``case`` with ``impl``."""
    check_operation(impl, IMPLEMENTATIONS, direction, case)
    return globals()[f"_{impl}"](direction, case, data)


# ----------------------------------------------------------------------------
# numbanorm


def _numbanorm(direction, case, data, place=None):
    """numbanorm's call; ``place`` moves a host array to where the call runs (the GPU)."""
    import numbanorm as nn

    place = place or (lambda a: a)
    x, dy, w, b = (place(data[k]) for k in ("x", "dy", "weight", "bias"))
    axis = case.channel_axis
    if case.norm == "moments":
        return lambda: nn.moments(x, axis=case.grouped_view[1])
    extra = (case.groups,) if case.norm == "group_norm" else ()
    params = dict(weight=w, bias=b) if case.has_bias else dict(weight=w)
    if case.norm == "batch_norm":
        params.update(running_mean=place(np.zeros(case.channels, data["x"].dtype)),
                      running_var=place(np.ones(case.channels, data["x"].dtype)))
    plain = getattr(nn, case.norm)
    forward = getattr(nn, f"{case.norm}_forward")
    if direction == "forward_out":
        out = place(np.empty_like(data["x"]))
        return lambda: plain(x, *extra, **params, axis=axis, out=out)
    if direction == "forward":
        return lambda: forward(x, *extra, **params, axis=axis)
    stats = forward(x, *extra, **params, axis=axis)[1:]
    backward = getattr(nn, f"{case.norm}_backward")
    out = place(np.empty_like(data["x"])) if direction == "backward_out" else None
    return lambda: backward(dy, x, *extra, *stats, w, axis=axis, out=out)


# ----------------------------------------------------------------------------
# naive NumPy: the formulas, one array operation at a time


def _numpy(direction, case, data, xp=np):
    """The formulas in NumPy, or in another array module ``xp`` (CuPy)."""
    x, dy, w, b = (xp.asarray(data[k]) for k in ("x", "dy", "weight", "bias"))
    view, axes, pshape = case.grouped_view
    w = w.reshape(pshape)
    b = b.reshape(pshape)
    if case.norm == "moments":
        return lambda: (x.mean(axis=axes), x.var(axis=axes))

    def statistics(xv):
        if case.centered:
            mean = xv.mean(axis=axes, keepdims=True)
            return mean, 1 / xp.sqrt(xv.var(axis=axes, keepdims=True) + EPS)
        return 0, 1 / xp.sqrt(xp.mean(xv * xv, axis=axes, keepdims=True) + EPS)

    def forward():
        xv = x.reshape(view)
        mean, rstd = statistics(xv)
        y = (xv - mean) * rstd * w
        return (y + b if case.has_bias else y).reshape(x.shape)

    if direction == "forward":
        return forward
    param_axes = tuple(a for a in range(len(view))
                       if a < len(view) - len(pshape) or pshape[a - len(view)] == 1)

    def backward():
        xv = x.reshape(view)
        dyv = dy.reshape(view)
        mean, rstd = statistics(xv)
        xhat = (xv - mean) * rstd
        g = dyv * w
        dx = g - xhat * (g * xhat).mean(axis=axes, keepdims=True)
        if case.centered:
            dx -= g.mean(axis=axes, keepdims=True)
        grads = (dx * rstd).reshape(x.shape), (dyv * xhat).sum(axis=param_axes).reshape(-1)
        return (*grads, dyv.sum(axis=param_axes).reshape(-1)) if case.has_bias else grads

    return backward


# ----------------------------------------------------------------------------
# PyTorch: torch.nn.functional, autograd for the backward


def _torch(direction, case, data, device="cpu"):
    """``torch.nn.functional`` on the CPU (numba's thread count) or on ``device``."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as error:
        raise PeerUnavailable("torch is not importable") from error
    if device == "cpu":
        import numba

        torch.set_num_threads(numba.get_num_threads())
    elif not torch.cuda.is_available():
        raise PeerUnavailable("torch has no CUDA device")

    def tensor(a):
        t = torch.from_numpy(a).to(device)
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if case.layout == "NHWC" else t

    x, dy = tensor(data["x"]), tensor(data["dy"])
    w, b = (torch.from_numpy(data[k]).to(device) for k in ("weight", "bias"))
    C = case.channels
    if case.norm == "moments":
        return lambda: torch.var_mean(x, dim=case.grouped_view[1], correction=0)[::-1]
    running = (torch.zeros(C, dtype=x.dtype, device=device),
               torch.ones(C, dtype=x.dtype, device=device))

    def forward(x, w, b):
        if case.norm == "layer_norm":
            return F.layer_norm(x, (C,), w, b, EPS)
        if case.norm == "rms_norm":
            return F.rms_norm(x, (C,), w, EPS)
        if case.norm == "batch_norm":
            return F.batch_norm(x, *running, w, b, training=True, eps=EPS)
        if case.norm == "group_norm":
            return F.group_norm(x, case.groups, w, b, EPS)
        return F.instance_norm(x, weight=w, bias=b, eps=EPS)

    if direction == "forward":
        def run():
            with torch.no_grad():
                return forward(x, w, b)
        return run
    inputs = [t.detach().requires_grad_() for t in (x, w, b)]
    y = forward(*inputs)
    if not case.has_bias:
        inputs.pop()
    return lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)


# ----------------------------------------------------------------------------
# ONNX Runtime: the standard operators, channels-first, inference only


# Opset 23 is the first with RMSNormalization.
ONNX_OPSET = 23
_ONNX_OPS = {
    "layer_norm": ("LayerNormalization", {"axis": -1, "epsilon": EPS}),
    "rms_norm": ("RMSNormalization", {"axis": -1, "epsilon": EPS}),
    "group_norm": ("GroupNormalization", {"epsilon": EPS}),
    "instance_norm": ("InstanceNormalization", {"epsilon": EPS}),
    "batch_norm": ("BatchNormalization", {"epsilon": EPS}),
}


def _onnxruntime(direction, case, data):
    if direction != "forward" or case.norm == "moments" or case.layout == "NHWC":
        raise PeerUnavailable("ONNX Runtime runs channels-first forwards only")
    try:
        import numba
        import onnx
        import onnxruntime
        from onnx import helper
    except ImportError as error:
        raise PeerUnavailable("onnx and onnxruntime are not importable") from error

    op, attributes = _ONNX_OPS[case.norm]
    x = data["x"]
    if case.norm == "group_norm":
        attributes = {**attributes, "num_groups": case.groups}
    constants = {"weight": data["weight"], "bias": data["bias"]}
    if case.norm == "batch_norm":
        # The operator runs in inference mode: given the batch's own statistics
        # it computes what training mode computes, with the same memory traffic.
        axes = case.grouped_view[1]
        constants.update(mean=x.mean(axis=axes), var=x.var(axis=axes))
    if case.norm == "rms_norm":
        del constants["bias"]
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", *constants], ["y"], **attributes)], "norm",
        [helper.make_tensor_value_info("x", elem, x.shape)],
        [helper.make_tensor_value_info("y", elem, x.shape)],
        [onnx.numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = numba.get_num_threads()
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


# ----------------------------------------------------------------------------
# JAX: jit of the formulas; the backward is jax.vjp, jitted


def _jax(direction, case, data):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as error:
        raise PeerUnavailable("jax is not importable") from error
    if np.dtype(data["x"].dtype) == np.float64 and not jax.config.jax_enable_x64:
        raise PeerUnavailable("jax runs float64 only with jax_enable_x64")
    view, axes, pshape = case.grouped_view
    x, dy, w, b = (jnp.asarray(data[k]) for k in ("x", "dy", "weight", "bias"))

    if case.norm == "moments":
        run = jax.jit(lambda x: (x.mean(axis=axes), x.var(axis=axes)))
        return lambda: jax.block_until_ready(run(x))

    params = (w, b) if case.has_bias else (w,)

    def forward(x, w, b=None):
        xv = x.reshape(view)
        if case.centered:
            xv = xv - xv.mean(axis=axes, keepdims=True)
        y = xv * jax.lax.rsqrt((xv * xv).mean(axis=axes, keepdims=True) + EPS) * w.reshape(pshape)
        return (y if b is None else y + b.reshape(pshape)).reshape(x.shape)

    if direction == "forward":
        run = jax.jit(forward)
        return lambda: jax.block_until_ready(run(x, *params))
    run = jax.jit(lambda dy, x, *params: jax.vjp(forward, x, *params)[1](dy))
    return lambda: jax.block_until_ready(run(dy, x, *params))
