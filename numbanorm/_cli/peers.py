"""Benchmark cases and the implementations ``python -m numbanorm bench`` times them with.

A case names a norm of ``NORMS`` (or ``moments``); its calls, statistics
and parameters come from the norm's specification.  Every implementation of
an operation is built as a zero-argument callable over preallocated, seeded
data; building raises :class:`PeerUnavailable` when a peer is not importable
or has no such operation.

Directions: the training forward (``forward``), the evaluation forward of
norms with running statistics (``eval``: a pure elementwise pass), each also
into a given output (``*_out``), and the backward.

Masks (``MASKS``): the data may carry a ``where``, which numbanorm alone
takes; see :meth:`Case.mask`.

Peers: a naive NumPy version of the formulas, PyTorch (``torch.nn.functional``
and autograd), ONNX Runtime (forwards only, channels-first only; its batch
normalization is the evaluation one) and JAX (``jit``).  Peers are imported
lazily; none is a dependency.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

import numbanorm

from .._specs import NORMS

IMPLEMENTATIONS = ("numbanorm", "numpy", "torch", "onnxruntime", "jax")
DIRECTIONS = ("forward", "forward_out", "eval", "eval_out", "backward", "backward_out")
MASKS = ("broadcast", "full")
EPS = 1e-5
SPECS = {norm.name: norm for norm in NORMS}


class PeerUnavailable(NotImplementedError):
    """The implementation is not importable, or has no such operation."""


@dataclass(frozen=True)
class Case:
    """One benchmark input: a norm of ``NORMS`` or ``"moments"``, a shape and a layout.

    ``layout`` is ``"rows"`` for layer/RMS norm and ``moments`` over the last
    axis, ``"NCHW"`` or ``"2-D"`` for a channel axis 1, ``"NHWC"`` for a
    channel axis -1.  ``groups`` is the number of groups of a grouped norm.
    """

    norm: str
    shape: tuple
    layout: str
    groups: int = 0

    @property
    def label(self):
        return f"{self.norm} {self.layout} {'x'.join(map(str, self.shape))}"

    @property
    def spec(self):
        """The norm's specification; None for moments."""
        return None if self.norm == "moments" else SPECS[self.norm]

    @property
    def directions(self):
        """The directions the case has: moments a forward, eval only with running statistics."""
        if self.spec is None:
            return ("forward",)
        return tuple(d for d in DIRECTIONS if self.spec.running_stats or not d.startswith("eval"))

    @property
    def axis(self):
        """The public functions' ``axis``: the channel axis, or the normalized one."""
        return -1 if self.layout in ("rows", "NHWC") else 1

    @property
    def channels(self):
        """The length of ``axis``: the size of the parameters and running statistics."""
        return self.shape[self.axis]

    @property
    def num_groups(self):
        return self.groups or None

    @property
    def moment_axes(self):
        """The axes ``moments`` reduces: the last one of rows, all but the channel axis
        otherwise."""
        ndim = len(self.shape)
        if self.layout == "rows":
            return (ndim - 1,)
        return tuple(a for a in range(ndim) if a != self.axis % ndim)

    @property
    def grouped_view(self):
        """``(shape, reduced axes, parameter shape)`` of a view with one axis per group index.

        Reducing the view over the reduced axes gives each group's statistics;
        the parameters reshaped to the parameter shape broadcast against it.
        The view is the norm's layout (see ``numbanorm._specs``): the channel
        axis split into (group, channel in group), both parameter axes.
        """
        layout = self.spec.layout(self.shape, self.axis, self.num_groups)
        view, roles = layout.split_shape, layout.roles
        return (
            view,
            tuple(a for a, role in enumerate(roles) if role in "RW"),
            tuple(n if role in "CW" else 1 for n, role in zip(view, roles)),
        )

    def bytes_moved(self, direction, itemsize):
        """Bytes that must move: read x and write y; the backward also reads dy."""
        arrays = 3 if direction.startswith("backward") else 2
        if self.spec is None:
            arrays = 1
        return arrays * math.prod(self.shape) * itemsize

    def data(self, dtype=np.float32, seed=0):
        """Seeded ``x``, ``dy``, and ``(C,)`` ``weight``, ``bias``, ``running_mean`` and
        ``running_var`` (float32 or float64)."""
        rng = np.random.default_rng(seed)
        C = self.channels
        return {
            "x": rng.standard_normal(self.shape, dtype=np.float32).astype(dtype, copy=False),
            "dy": rng.standard_normal(self.shape, dtype=np.float32).astype(dtype, copy=False),
            "weight": (1 + 0.1 * rng.standard_normal(C)).astype(dtype),
            "bias": (0.1 * rng.standard_normal(C)).astype(dtype),
            "running_mean": (0.1 * rng.standard_normal(C)).astype(dtype),
            "running_var": (1 + 0.1 * np.abs(rng.standard_normal(C))).astype(dtype),
        }

    def mask(self, kind, seed=1):
        """A seeded ``where`` of ``kind`` (see ``MASKS``), selecting 3/4 of its elements.

        ``"broadcast"`` is shared by the channels: of size 1 along the channel
        axis, as the padding mask ``(N, 1, T)`` of sequences ``(N, C, T)``, or
        along all the others, ``(1, D)``, for a reduction over the last axis.
        ``"full"`` has the shape of ``x``.  Each element is drawn at random,
        so that no kernel is helped by runs of equal values.
        """
        shape = self.shape
        if kind == "broadcast":
            if self.layout == "rows":
                shape = (1,) * (len(shape) - 1) + shape[-1:]
            else:
                axis = self.axis % len(shape)
                shape = shape[:axis] + (1,) + shape[axis + 1 :]
        elif kind != "full":
            raise ValueError(f"unknown mask {kind!r}: the masks are {', '.join(MASKS)}")
        return np.random.default_rng(seed).random(shape) < 0.75


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
    if direction not in case.directions:
        raise PeerUnavailable(f"{case.norm} has no {direction}")
    if direction.endswith("_out") and impl != "numbanorm":
        raise PeerUnavailable(f"{impl} has no out= {direction[:-4]}")


def build(impl, direction, case, data):
    """A zero-argument callable running ``direction`` of ``case`` with ``impl``.

    A ``where`` in ``data`` (not None) masks the call; only numbanorm has masks.
    """
    check_operation(impl, IMPLEMENTATIONS, direction, case)
    if data.get("where") is not None and impl != "numbanorm":
        raise PeerUnavailable(f"{impl} has no masked normalization")
    return globals()[f"_{impl}"](direction, case, data)


# ----------------------------------------------------------------------------
# numbanorm: the public functions, with the arguments the specification orders


def _numbanorm(direction, case, data, place=None):
    """numbanorm's call; ``place`` moves a host array to where the call runs (the GPU)."""
    place = place or (lambda a: a)
    x, dy, w, b = (place(data[k]) for k in ("x", "dy", "weight", "bias"))
    where = data.get("where")
    where = None if where is None else place(where)
    norm = case.spec
    if norm is None:
        return lambda: numbanorm.moments(x, axis=case.moment_axes, where=where)
    running = {}
    if norm.running_stats:
        running = dict(
            running_mean=place(data["running_mean"].copy()),
            running_var=place(data["running_var"].copy()),
        )
    arguments = norm.forward_arguments(x, w, b, num_groups=case.num_groups, **running)
    forward = getattr(numbanorm, norm.name + "_forward")
    if direction == "forward":
        return lambda: forward(*arguments, axis=case.axis, where=where)
    plain = getattr(numbanorm, norm.name)
    out = place(np.empty_like(data["x"])) if direction.endswith("_out") else None
    if direction.startswith("eval"):
        mode = {norm.mode_argument: False}
        return lambda: plain(*arguments, axis=case.axis, out=out, where=where, **mode)
    if direction == "forward_out":
        return lambda: plain(*arguments, axis=case.axis, out=out, where=where)
    stats = forward(*arguments, axis=case.axis, where=where)[1:]
    backward = getattr(numbanorm, norm.name + "_backward")
    arguments = norm.backward_arguments(dy, x, stats, w, num_groups=case.num_groups)
    return lambda: backward(*arguments, axis=case.axis, out=out, where=where)


# ----------------------------------------------------------------------------
# naive NumPy: the formulas, one array operation at a time


def _numpy(direction, case, data, xp=np):
    """The formulas in NumPy, or in another array module ``xp`` (CuPy)."""
    x, dy, w, b = (xp.asarray(data[k]) for k in ("x", "dy", "weight", "bias"))
    norm = case.spec
    if norm is None:
        return lambda: (x.mean(axis=case.moment_axes), x.var(axis=case.moment_axes))
    view, axes, pshape = case.grouped_view
    w = w.reshape(pshape)
    b = b.reshape(pshape)

    def statistics(xv):
        if norm.centered:
            mean = xv.mean(axis=axes, keepdims=True)
            return mean, 1 / xp.sqrt(xv.var(axis=axes, keepdims=True) + EPS)
        return 0, 1 / xp.sqrt(xp.mean(xv * xv, axis=axes, keepdims=True) + EPS)

    def forward(stats=statistics):
        xv = x.reshape(view)
        mean, rstd = stats(xv)
        y = (xv - mean) * rstd * w
        return (y + b if norm.bias else y).reshape(x.shape)

    if direction == "forward":
        return forward
    if direction == "eval":
        running = (
            xp.asarray(data["running_mean"]).reshape(pshape),
            1 / xp.sqrt(xp.asarray(data["running_var"]).reshape(pshape) + EPS),
        )
        return lambda: forward(lambda xv: running)
    param_axes = tuple(a for a, n in enumerate(pshape) if n == 1)

    def backward():
        xv = x.reshape(view)
        dyv = dy.reshape(view)
        mean, rstd = statistics(xv)
        xhat = (xv - mean) * rstd
        g = dyv * w
        dx = g - xhat * (g * xhat).mean(axis=axes, keepdims=True)
        if norm.centered:
            dx -= g.mean(axis=axes, keepdims=True)
        grads = (dx * rstd).reshape(x.shape), (dyv * xhat).sum(axis=param_axes).reshape(-1)
        return (*grads, dyv.sum(axis=param_axes).reshape(-1)) if norm.bias else grads

    return backward


# ----------------------------------------------------------------------------
# PyTorch: torch.nn.functional, autograd for the backward


# Each norm's function, called with torch.nn.functional, the case, the running
# statistics as keywords (empty without them), whether it trains (norms with
# running statistics), the input and the parameters.
TORCH_FUNCTIONS = {
    "batch_norm": lambda F, case, running, training, x, w, b: F.batch_norm(
        x, **running, weight=w, bias=b, training=training, eps=EPS
    ),
    "instance_norm": lambda F, case, running, training, x, w, b: F.instance_norm(
        x, **running, weight=w, bias=b, use_input_stats=training, eps=EPS
    ),
    "group_norm": lambda F, case, running, training, x, w, b: F.group_norm(
        x, case.groups, w, b, EPS
    ),
    "layer_norm": lambda F, case, running, training, x, w, b: F.layer_norm(
        x, (case.channels,), w, b, EPS
    ),
    "rms_norm": lambda F, case, running, training, x, w: F.rms_norm(x, (case.channels,), w, EPS),
}


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
    norm = case.spec
    if norm is None:
        return lambda: torch.var_mean(x, dim=case.moment_axes, correction=0)[::-1]
    params = [torch.from_numpy(data[name]).to(device) for name in norm.parameters]
    running = {}
    if norm.running_stats:
        running = {
            name: torch.from_numpy(data[name].copy()).to(device)
            for name in ("running_mean", "running_var")
        }
    training = not direction.startswith("eval")
    forward = functools.partial(TORCH_FUNCTIONS[norm.name], F, case, running, training)
    if direction in ("forward", "eval"):

        def run():
            with torch.no_grad():
                return forward(x, *params)

        return run
    inputs = [t.detach().requires_grad_() for t in (x, *params)]
    y = forward(*inputs)
    return lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)


# ----------------------------------------------------------------------------
# ONNX Runtime: the standard operators, channels-first, inference only


# Opset 23 is the first with RMSNormalization.
ONNX_OPSET = 23
# Each norm's operator, its attributes, and whether it takes the running
# statistics as inputs: BatchNormalization runs inference only, the eval
# direction.
ONNX_OPERATORS = {
    "layer_norm": ("LayerNormalization", {"axis": -1, "epsilon": EPS}, False),
    "rms_norm": ("RMSNormalization", {"axis": -1, "epsilon": EPS}, False),
    "group_norm": ("GroupNormalization", {"epsilon": EPS}, False),
    "instance_norm": ("InstanceNormalization", {"epsilon": EPS}, False),
    "batch_norm": ("BatchNormalization", {"epsilon": EPS}, True),
}


def _onnxruntime(direction, case, data):
    """An inference session of the norm's operator; its outputs are views of its arena.

    ``session.run`` returns arrays that do not own their memory: a freed
    output's buffer returns to ONNX Runtime's arena, and the next call
    reuses its pages, as ``numbanorm.set_output_pool`` does.
    """
    if case.spec is None or case.layout == "NHWC":
        raise PeerUnavailable("ONNX Runtime runs channels-first norms only")
    if direction != ("eval" if ONNX_OPERATORS[case.norm][2] else "forward"):
        raise PeerUnavailable(f"ONNX Runtime has no {direction} of {case.norm}")
    try:
        import numba
        import onnx
        import onnxruntime
        from onnx import helper
    except ImportError as error:
        raise PeerUnavailable("onnx and onnxruntime are not importable") from error

    norm = case.spec
    op, attributes, running_inputs = ONNX_OPERATORS[norm.name]
    x = data["x"]
    if norm.grouped:
        attributes = {**attributes, "num_groups": case.groups}
    constants = {name: data[name] for name in norm.parameters}
    if running_inputs:
        constants.update(mean=data["running_mean"], var=data["running_var"])
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", *constants], ["y"], **attributes)],
        "norm",
        [helper.make_tensor_value_info("x", elem, x.shape)],
        [helper.make_tensor_value_info("y", elem, x.shape)],
        [onnx.numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = numba.get_num_threads()
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
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
    x, dy = jnp.asarray(data["x"]), jnp.asarray(data["dy"])
    norm = case.spec
    if norm is None:
        axes = case.moment_axes
        run = jax.jit(lambda x: (x.mean(axis=axes), x.var(axis=axes)))
        return lambda: jax.block_until_ready(run(x))
    view, axes, pshape = case.grouped_view
    params = [jnp.asarray(data[name]) for name in norm.parameters]

    def forward(x, w, b=None):
        xv = x.reshape(view)
        if norm.centered:
            xv = xv - xv.mean(axis=axes, keepdims=True)
        y = xv * jax.lax.rsqrt((xv * xv).mean(axis=axes, keepdims=True) + EPS) * w.reshape(pshape)
        return (y if b is None else y + b.reshape(pshape)).reshape(x.shape)

    if direction == "forward":
        run = jax.jit(forward)
        return lambda: jax.block_until_ready(run(x, *params))
    if direction == "eval":
        mean, var = (jnp.asarray(data[k]).reshape(pshape) for k in ("running_mean", "running_var"))

        def evaluate(x, w, b):
            y = (x.reshape(view) - mean) * jax.lax.rsqrt(var + EPS) * w.reshape(pshape)
            return (y + b.reshape(pshape)).reshape(x.shape)

        run = jax.jit(evaluate)
        return lambda: jax.block_until_ready(run(x, *params))
    run = jax.jit(lambda dy, x, *params: jax.vjp(forward, x, *params)[1](dy))
    return lambda: jax.block_until_ready(run(dy, x, *params))
