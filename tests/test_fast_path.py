"""The forward's fast path for plain arrays computes exactly what the general path does."""

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._driver import _plain_forward
from numbanorm._kernels import SERIAL_MAX_ELEMENTS
from numbanorm._specs import BATCH_NORM, LAYER_NORM

from norms import NORM_CASES

# (shape, axis) per kind of norm: the default layout, another one, and an
# input large enough for the parallel kernels.
INPUTS = {
    True: [((6, 12, 5, 7), None), ((6, 5, 7, 12), -1), ((16, 12, 10, 10), None)],
    False: [((6, 5, 40), None), ((6, 5, 40), (1, 2)), ((420, 48), None)],
}
assert max(np.prod(shape) for shape, _ in INPUTS[True]) > SERIAL_MAX_ELEMENTS


def _params(rng, case, dtype, affine, shape, axis):
    if not affine:
        return None, None
    layout = case.norm.layout(shape, case.norm.default_axis if axis is None else axis, 3)
    weight = (1 + rng.standard_normal(layout.weight_shape)).astype(dtype)
    bias = rng.standard_normal(layout.weight_shape).astype(dtype) if case.norm.bias else None
    return weight, bias


def _fast(case, x, weight, bias, axis, *, running=(None, None), training=True, out=None):
    """The fast path's result for a call of ``case`` (None where it declines)."""
    norm = case.norm
    return _plain_forward(
        norm,
        x,
        weight,
        bias,
        norm.default_axis if axis is None else axis,
        norm.default_eps if case.eps is None else case.eps,
        case.num_groups,
        *running,
        training,
        0.1,
        out,
        True,
    )


def _read_only(x):
    x = x.copy()
    x.setflags(write=False)  # not eligible: takes the general path
    return x


def _assert_identical(fast, general):
    for a, b in zip(fast, general, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NORM_CASES)
def test_fast_path_matches_the_general_path(rng, name, dtype, affine):
    case = NORM_CASES[name]
    for shape, axis in INPUTS[case.norm.per_channel]:
        x = rng.standard_normal(shape).astype(dtype)
        weight, bias = _params(rng, case, dtype, affine, shape, axis)
        if axis is not None:
            case = case.with_axis(axis)
        assert _fast(case, x, weight, bias, axis) is not None
        assert _fast(case, _read_only(x), weight, bias, axis) is None
        fast = case.forward(x, weight, bias)
        general = case.forward(_read_only(x), weight, bias)
        _assert_identical(fast, general)
        out = np.empty_like(x)
        assert case.plain(x, weight, bias, out=out) is out
        np.testing.assert_array_equal(out, general[0])
        case = NORM_CASES[name]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stat_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [n for n, c in NORM_CASES.items() if c.norm.running_stats])
def test_fast_path_updates_and_uses_running_statistics_as_the_general_path(
    rng, name, stat_dtype, training
):
    case = NORM_CASES[name]
    x = rng.standard_normal((6, 12, 5, 7)).astype(np.float32)
    start = (rng.standard_normal(12).astype(stat_dtype), rng.random(12).astype(stat_dtype) + 0.5)
    fast_running = tuple(s.copy() for s in start)
    general_running = tuple(s.copy() for s in start)
    probe = tuple(s.copy() for s in start)
    assert _fast(case, x, None, None, None, running=probe, training=training) is not None
    function = getattr(nbn, name + "_forward")
    mode = {case.norm.mode_argument: training}

    def call(x, running):
        arguments = case.norm.forward_arguments(x, running_mean=running[0], running_var=running[1])
        return function(*arguments, **mode)

    _assert_identical(call(x, fast_running), call(_read_only(x), general_running))
    _assert_identical(fast_running, general_running)
    assert not training or not np.array_equal(fast_running[0], start[0])


def test_fast_path_refuses_what_the_general_path_refuses(rng):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nbn.batch_norm_forward(np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="without input statistics needs running_mean"):
        nbn.batch_norm_forward(np.ones((3, 4), np.float32), training=False)


INELIGIBLE = {
    "float16": lambda x: dict(x=x.astype(np.float16)),
    "integers": lambda x: dict(x=x.astype(np.int64)),
    "strided": lambda x: dict(x=x[:, ::2]),
    "Fortran order": lambda x: dict(x=np.asfortranarray(x)),
    "float64 weight": lambda x: dict(weight=np.ones(x.shape[-1])),
    "list weight": lambda x: dict(weight=[1.0] * x.shape[-1]),
    "list axis": lambda x: dict(axis=[-1]),
    "leading axis, whose view is a copy": lambda x: dict(axis=0),
    "Fortran out": lambda x: dict(out=np.asfortranarray(np.empty_like(x))),
    "out overlapping x": lambda x: dict(x=(rows := np.concatenate([x, x[:1]]))[1:], out=rows[:-1]),
    "out sharing the weight's memory": lambda x: dict(
        weight=(buffer := np.ones(x.size + 40, x.dtype))[:40], out=buffer[20:-20].reshape(x.shape)
    ),
    "integer eps": lambda x: dict(eps=0),
    "NumPy float eps": lambda x: dict(eps=np.float64(1e-5)),
    "negative eps": lambda x: dict(eps=-1.0),
    "empty": lambda x: dict(x=x[:0]),
}


@pytest.mark.parametrize("case", INELIGIBLE)
def test_anything_else_takes_the_general_path(rng, case):
    x = rng.standard_normal((4, 40)).astype(np.float32)
    args = dict(x=x, weight=None, bias=None, axis=-1, eps=1e-5, out=None)
    args.update(INELIGIBLE[case](x))
    running = dict(running_mean=None, running_var=None, input_stats=True, momentum=0.1)
    assert _plain_forward(LAYER_NORM, **args, num_groups=None, **running, stats=True) is None


RUNNING_INELIGIBLE = {
    "one of the two": lambda c: dict(running_var=None),
    "a list": lambda c: dict(running_mean=[0.0] * c),
    "float16": lambda c: dict(running_mean=np.zeros(c, np.float16)),
    "the same array": lambda c: dict(running_var=(shared := np.zeros(c)), running_mean=shared),
    "momentum out of range": lambda c: dict(momentum=1.5),
    "momentum None": lambda c: dict(momentum=None),
}


@pytest.mark.parametrize("case", RUNNING_INELIGIBLE)
def test_unusual_running_statistics_take_the_general_path(rng, case):
    x = rng.standard_normal((6, 4, 5)).astype(np.float32)
    args = dict(running_mean=np.zeros(4), running_var=np.ones(4), momentum=0.1)
    args.update(RUNNING_INELIGIBLE[case](4))
    plain = dict(weight=None, bias=None, axis=1, eps=1e-5, num_groups=None, out=None)
    assert _plain_forward(BATCH_NORM, x, **plain, **args, input_stats=True, stats=True) is None
