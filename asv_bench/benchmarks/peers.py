"""The benchmark cases and the implementations the suite times them with.

asv runs today's benchmarks against past commits, so this module calls
numbanorm through its public functions only, and keeps its own table of
cases.  Every implementation of an operation is built as a zero-argument
callable over seeded data; building raises ``NotImplementedError``, which asv
reports as skipped, when a peer is not importable or has no such operation.

Directions: the forward, with ``out=``, the backward, with ``out=``, and
for batch norm the evaluation forward with the running statistics (``eval``,
``eval_out``).

Masks: ``where`` is None (every element), ``"broadcast"`` (a mask shared by
the channels, of size 1 along the channel axis, as the padding mask ``(N, 1,
T)`` of sequences ``(N, C, T)``; shared by the rows, ``(1, D)``, for a
reduction over the last axis) or ``"full"`` (a mask of the shape of ``x``);
each selects a seeded three quarters of its elements at random.  Only numbanorm
has masked normalization, from the commit that added ``where=``.

Peers on the CPU: the formulas in plain NumPy, PyTorch (``torch.nn.functional``
and autograd), ONNX Runtime (forwards only, channels-first only; its batch
normalization runs inference only, the eval direction) and JAX (``jit``).
On a GPU: numbanorm on device arrays, PyTorch CUDA and the formulas in CuPy,
each call followed by a device synchronization.  Peers are imported when a
benchmark needs them; none is a dependency.
"""

import inspect
from dataclasses import dataclass

import numpy as np

import numbanorm

IMPLEMENTATIONS = ("numbanorm", "numpy", "torch", "onnxruntime", "jax")
GPU_IMPLEMENTATIONS = ("numbanorm", "torch", "cupy")
DIRECTIONS = ("forward", "forward_out", "backward", "backward_out")
EVAL_DIRECTIONS = ("eval", "eval_out")
WHERE = (None, "broadcast", "full")
EPS = 1e-5


@dataclass(frozen=True)
class Case:
    """One input: a norm (or ``moments``), a shape and a layout.

    ``layout`` is ``"rows"`` for a reduction over the last axis, ``"NCHW"`` or
    ``"2-D"`` for a channel axis 1, ``"NHWC"`` for a channel axis -1;
    ``groups`` is group norm's number of groups.
    """

    norm: str
    shape: tuple
    layout: str
    groups: int = 0

    @property
    def label(self):
        """The case parameter of the benchmarks: layout and shape."""
        return f"{self.layout} {'x'.join(map(str, self.shape))}"

    @property
    def axis(self):
        return -1 if self.layout in ("rows", "NHWC") else 1

    @property
    def channels(self):
        return self.shape[self.axis]

    @property
    def grouped_view(self):
        """``(view shape, reduced axes, parameter shape)``: reducing the view gives each
        group's statistics, and the parameters reshaped to the parameter shape
        broadcast against it."""
        shape, C, ndim = self.shape, self.channels, len(self.shape)
        axis = self.axis % ndim
        params = tuple(C if a == axis else 1 for a in range(ndim))
        if self.layout == "rows":
            return shape, (axis,), params
        if self.norm in ("batch_norm", "moments"):
            return shape, tuple(a for a in range(ndim) if a != axis), params
        if self.norm == "instance_norm":
            return shape, tuple(a for a in range(1, ndim) if a != axis), params
        G = self.groups
        view = shape[:axis] + (G, C // G) + shape[axis + 1 :]
        reduced = tuple(a for a in range(1, ndim + 1) if a != axis)
        return view, reduced, params[:axis] + (G, C // G) + params[axis + 1 :]

    @property
    def centered(self):
        return self.norm != "rms_norm"

    @property
    def has_bias(self):
        return self.norm != "rms_norm"

    def data(self, dtype, seed=0):
        """Seeded ``x``, ``dy``, ``weight``, ``bias`` and running statistics."""
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

    def mask(self, where, seed=1):
        """The boolean mask of kind ``where`` (see ``WHERE``), None for None."""
        if where is None:
            return None
        shape = self.shape
        if where == "broadcast":
            if self.layout == "rows":
                shape = (1,) * (len(shape) - 1) + shape[-1:]
            else:
                axis = self.axis % len(shape)
                shape = shape[:axis] + (1,) + shape[axis + 1 :]
        elif where != "full":
            raise ValueError(f"unknown mask kind {where!r}")
        return np.random.default_rng(seed).random(shape) < 0.75


CASES = (
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


def cases(norm):
    """``{label: case}`` of the cases of ``norm``."""
    return {case.label: case for case in CASES if case.norm == norm}


def build(impl, direction, case, dtype, *, gpu=False, where=None):
    """A zero-argument callable running ``direction`` of ``case`` with ``impl``.

    With ``gpu``, the data are on the device and the call synchronizes it;
    ``where`` is the kind of mask (see ``WHERE``).
    """
    if where is not None:
        if impl != "numbanorm":
            raise NotImplementedError(f"{impl} has no masked normalization")
        if "where" not in inspect.signature(numbanorm.moments).parameters:
            raise NotImplementedError("this numbanorm has no where=")
        if direction in EVAL_DIRECTIONS:
            raise NotImplementedError("eval normalizes with the running statistics, unmasked")
    if case.norm == "moments" and direction != "forward":
        raise NotImplementedError("moments has only a forward")
    if direction in EVAL_DIRECTIONS and case.norm != "batch_norm":
        raise NotImplementedError("eval is batch norm's")
    if direction.endswith("_out") and impl != "numbanorm":
        raise NotImplementedError(f"{impl} has no out= {direction[:-4]}")
    data = {**case.data(np.dtype(dtype)), "where": case.mask(where)}
    if not gpu:
        return _CPU[impl](direction, case, data)
    if not numbanorm.cuda_available():
        raise NotImplementedError("no CUDA GPU")
    return _synchronized(_GPU[impl](direction, case, data))


# ----------------------------------------------------------------------------
# numbanorm


def _numbanorm(direction, case, data, place=lambda a: a):
    """numbanorm's call; ``place`` puts a host array where the call runs.

    ``where=`` is passed only with a mask, so that the unmasked calls are
    those of the commits before it.
    """
    x, dy, w, b = (place(data[k]) for k in ("x", "dy", "weight", "bias"))
    axis = case.axis
    masked = {} if data["where"] is None else {"where": place(data["where"])}
    if case.norm == "moments":
        return lambda: numbanorm.moments(x, axis=case.grouped_view[1], **masked)
    extra = (case.groups,) if case.norm == "group_norm" else ()
    params = dict(weight=w, bias=b) if case.has_bias else dict(weight=w)
    if case.norm == "batch_norm":
        params.update(
            running_mean=place(data["running_mean"].copy()),
            running_var=place(data["running_var"].copy()),
        )
    forward = getattr(numbanorm, case.norm + "_forward")
    if direction == "forward":
        return lambda: forward(x, *extra, **params, axis=axis, **masked)
    plain = getattr(numbanorm, case.norm)
    out = place(np.empty_like(data["x"])) if direction.endswith("_out") else None
    if direction in EVAL_DIRECTIONS:
        return lambda: plain(x, **params, axis=axis, out=out, training=False)
    if direction == "forward_out":
        return lambda: plain(x, *extra, **params, axis=axis, out=out, **masked)
    stats = forward(x, *extra, **params, axis=axis, **masked)[1:]
    backward = getattr(numbanorm, case.norm + "_backward")
    return lambda: backward(dy, x, *extra, *stats, w, axis=axis, out=out, **masked)


# ----------------------------------------------------------------------------
# The formulas, one array operation at a time, in NumPy or CuPy


def _formulas(direction, case, data, xp=np):
    x, dy, w, b = (xp.asarray(data[k]) for k in ("x", "dy", "weight", "bias"))
    view, axes, pshape = case.grouped_view
    w, b = w.reshape(pshape), b.reshape(pshape)
    if case.norm == "moments":
        return lambda: (x.mean(axis=axes), x.var(axis=axes))

    def statistics(xv):
        if case.centered:
            return (
                xv.mean(axis=axes, keepdims=True),
                1 / xp.sqrt(xv.var(axis=axes, keepdims=True) + EPS),
            )
        return 0, 1 / xp.sqrt(xp.mean(xv * xv, axis=axes, keepdims=True) + EPS)

    def forward(stats=statistics):
        xv = x.reshape(view)
        mean, rstd = stats(xv)
        y = (xv - mean) * rstd * w
        return (y + b if case.has_bias else y).reshape(x.shape)

    if direction == "forward":
        return forward
    if direction == "eval":
        running = (
            xp.asarray(data["running_mean"]).reshape(pshape),
            1 / xp.sqrt(xp.asarray(data["running_var"]).reshape(pshape) + EPS),
        )
        return lambda: forward(lambda xv: running)
    param_axes = tuple(a for a in range(len(view)) if pshape[a] == 1)

    def backward():
        xv, dyv = x.reshape(view), dy.reshape(view)
        mean, rstd = statistics(xv)
        xhat = (xv - mean) * rstd
        g = dyv * w
        dx = g - xhat * (g * xhat).mean(axis=axes, keepdims=True)
        if case.centered:
            dx -= g.mean(axis=axes, keepdims=True)
        grads = (dx * rstd).reshape(x.shape), (dyv * xhat).sum(axis=param_axes).reshape(-1)
        return (*grads, dyv.sum(axis=param_axes).reshape(-1)) if case.has_bias else grads

    return backward


def _cupy(direction, case, data):
    try:
        import cupy
    except ImportError as error:
        raise NotImplementedError("cupy is not importable") from error
    return _formulas(direction, case, data, xp=cupy)


# ----------------------------------------------------------------------------
# PyTorch: torch.nn.functional, autograd for the backward


def _torch(direction, case, data, device="cpu"):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as error:
        raise NotImplementedError("torch is not importable") from error
    if device == "cpu":
        import numba

        torch.set_num_threads(numba.get_num_threads())
    elif not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA device")

    def tensor(a):
        t = torch.from_numpy(a).to(device)
        return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if case.layout == "NHWC" else t

    x, dy = tensor(data["x"]), tensor(data["dy"])
    w, b = (torch.from_numpy(data[k]).to(device) for k in ("weight", "bias"))
    C = case.channels
    if case.norm == "moments":
        return lambda: torch.var_mean(x, dim=case.grouped_view[1], correction=0)[::-1]
    running = [torch.from_numpy(data[k].copy()).to(device) for k in ("running_mean", "running_var")]
    training = direction not in EVAL_DIRECTIONS
    functions = {
        "layer_norm": lambda x, w, b: F.layer_norm(x, (C,), w, b, EPS),
        "rms_norm": lambda x, w: F.rms_norm(x, (C,), w, EPS),
        "batch_norm": lambda x, w, b: F.batch_norm(x, *running, w, b, training=training, eps=EPS),
        "group_norm": lambda x, w, b: F.group_norm(x, case.groups, w, b, EPS),
        "instance_norm": lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=EPS),
    }
    forward = functions[case.norm]
    params = (w, b) if case.has_bias else (w,)
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


ONNX_OPSET = 23  # the first with RMSNormalization
_ONNX_OPS = {
    "layer_norm": ("LayerNormalization", {"axis": -1, "epsilon": EPS}),
    "rms_norm": ("RMSNormalization", {"axis": -1, "epsilon": EPS}),
    "group_norm": ("GroupNormalization", {"epsilon": EPS}),
    "instance_norm": ("InstanceNormalization", {"epsilon": EPS}),
    "batch_norm": ("BatchNormalization", {"epsilon": EPS}),
}


def _onnxruntime(direction, case, data):
    """An inference session; its outputs are views of its arena, reused once freed."""
    if case.norm == "moments" or case.layout == "NHWC":
        raise NotImplementedError("ONNX Runtime runs channels-first norms only")
    if direction != ("eval" if case.norm == "batch_norm" else "forward"):
        raise NotImplementedError(f"ONNX Runtime has no {direction} of {case.norm}")
    try:
        import numba
        import onnx
        import onnxruntime
        from onnx import helper
    except ImportError as error:
        raise NotImplementedError("onnx and onnxruntime are not importable") from error
    op, attributes = _ONNX_OPS[case.norm]
    x = data["x"]
    if case.norm == "group_norm":
        attributes = {**attributes, "num_groups": case.groups}
    constants = {"weight": data["weight"]}
    if case.has_bias:
        constants["bias"] = data["bias"]
    if case.norm == "batch_norm":
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
        raise NotImplementedError("jax is not importable") from error
    if data["x"].dtype == np.float64 and not jax.config.jax_enable_x64:
        raise NotImplementedError("jax runs float64 only with jax_enable_x64")
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
    if direction == "eval":
        mean, var = (jnp.asarray(data[k]).reshape(pshape) for k in ("running_mean", "running_var"))

        def evaluate(x, w, b):
            y = (x.reshape(view) - mean) * jax.lax.rsqrt(var + EPS) * w.reshape(pshape)
            return (y + b.reshape(pshape)).reshape(x.shape)

        run = jax.jit(evaluate)
        return lambda: jax.block_until_ready(run(x, *params))
    run = jax.jit(lambda dy, x, *params: jax.vjp(forward, x, *params)[1](dy))
    return lambda: jax.block_until_ready(run(dy, x, *params))


# ----------------------------------------------------------------------------
# On a GPU


def to_device(a):
    """``a`` on the GPU, as a CuPy array, else a PyTorch CUDA tensor, else a Numba array."""
    try:
        import cupy

        return cupy.asarray(a)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return torch.from_numpy(np.ascontiguousarray(a)).cuda()
    except ImportError:
        pass
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def _synchronized(fn):
    from numba import cuda

    def call():
        fn()
        cuda.synchronize()

    return call


def device_copy(case, dtype):
    """A device-to-device copy of the input of ``case``: the memory-bound ceiling."""
    if not numbanorm.cuda_available():
        raise NotImplementedError("no CUDA GPU")
    from numba import cuda

    src = cuda.to_device(case.data(np.dtype(dtype))["x"].reshape(-1))
    dst = cuda.device_array_like(src)
    return _synchronized(lambda: dst.copy_to_device(src))


_CPU = {
    "numbanorm": _numbanorm,
    "numpy": _formulas,
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "jax": _jax,
}
_GPU = {
    "numbanorm": lambda *args: _numbanorm(*args, place=to_device),
    "torch": lambda *args: _torch(*args, device="cuda"),
    "cupy": _cupy,
}
