import re

import numpy as np
import pytest

import numbanorm as nbn

from norms import NORM_CASES

BN_ONE_VALUE = "Expected more than 1 value per channel when training"
IN_ONE_ELEMENT = "Expected more than 1 spatial element when training"


def mentions(*fragments):
    """Regex matching a message that contains every fragment, in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(fragment)})" for fragment in fragments)


def _x(shape, dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _running(channels):
    return np.zeros(channels), np.ones(channels)


# --------------------------------------------------------------------------
# wrong shapes of weight, bias and running statistics
# --------------------------------------------------------------------------

PARAMETER_SHAPE_CASES = [
    ("batch_norm weight", lambda: nbn.batch_norm(_x((4, 3, 5)), weight=np.ones(4)), "weight", (3,)),
    (
        "batch_norm 2-d weight",
        lambda: nbn.batch_norm(_x((4, 3, 5)), weight=np.ones((3, 1))),
        "weight",
        (3,),
    ),
    ("batch_norm bias", lambda: nbn.batch_norm(_x((4, 3, 5)), bias=np.ones(5)), "bias", (3,)),
    (
        "batch_norm channels-last weight",
        lambda: nbn.batch_norm(_x((4, 3, 5)), weight=np.ones(3), axis=-1),
        "weight",
        (5,),
    ),
    (
        "batch_norm running_mean",
        lambda: nbn.batch_norm(_x((4, 3, 5)), np.zeros(4), np.ones(3)),
        "running_mean",
        (3,),
    ),
    (
        "batch_norm running_var",
        lambda: nbn.batch_norm(_x((4, 3, 5)), np.zeros(3), np.ones(2)),
        "running_var",
        (3,),
    ),
    (
        "batch_norm eval running_var",
        lambda: nbn.batch_norm(_x((4, 3, 5)), np.zeros(3), np.ones(2), training=False),
        "running_var",
        (3,),
    ),
    (
        "batch_norm_forward weight",
        lambda: nbn.batch_norm_forward(_x((4, 3, 5)), weight=np.ones(2)),
        "weight",
        (3,),
    ),
    ("layer_norm weight", lambda: nbn.layer_norm(_x((2, 3, 5)), np.ones(3)), "weight", (5,)),
    (
        "layer_norm outer-axes weight",
        lambda: nbn.layer_norm(_x((2, 3, 5)), np.ones(3), axis=(0, 2)),
        "weight",
        (2, 5),
    ),
    (
        "layer_norm transposed bias",
        lambda: nbn.layer_norm(_x((2, 3, 5)), None, np.ones((5, 2)), axis=(0, 2)),
        "bias",
        (2, 5),
    ),
    (
        "layer_norm_forward weight",
        lambda: nbn.layer_norm_forward(_x((2, 3, 5)), np.ones((3, 5, 1)), axis=(1, 2)),
        "weight",
        (3, 5),
    ),
    ("group_norm weight", lambda: nbn.group_norm(_x((2, 6, 5)), 3, np.ones(3)), "weight", (6,)),
    ("group_norm bias", lambda: nbn.group_norm(_x((2, 6, 5)), 3, None, np.ones(5)), "bias", (6,)),
    (
        "group_norm_forward weight",
        lambda: nbn.group_norm_forward(_x((2, 5, 6)), 3, np.ones(5), axis=-1),
        "weight",
        (6,),
    ),
    (
        "instance_norm weight",
        lambda: nbn.instance_norm(_x((2, 3, 5)), weight=np.ones(2)),
        "weight",
        (3,),
    ),
    ("instance_norm bias", lambda: nbn.instance_norm(_x((2, 3, 5)), bias=np.ones(6)), "bias", (3,)),
    (
        "instance_norm running_mean",
        lambda: nbn.instance_norm(_x((2, 3, 5)), np.zeros(2), np.ones(3)),
        "running_mean",
        (3,),
    ),
    (
        "instance_norm_forward running_var",
        lambda: nbn.instance_norm_forward(_x((2, 3, 5)), np.zeros(3), np.ones((2, 3))),
        "running_var",
        (3,),
    ),
    ("rms_norm weight", lambda: nbn.rms_norm(_x((2, 3, 5)), np.ones(3)), "weight", (5,)),
    (
        "rms_norm_forward weight",
        lambda: nbn.rms_norm_forward(_x((2, 3, 5)), np.ones(5), axis=(0, 1)),
        "weight",
        (2, 3),
    ),
]


@pytest.mark.parametrize(
    "call, argument, expected_shape",
    [case[1:] for case in PARAMETER_SHAPE_CASES],
    ids=[case[0] for case in PARAMETER_SHAPE_CASES],
)
def test_wrong_parameter_shape(call, argument, expected_shape):
    with pytest.raises(ValueError, match=mentions(argument, str(expected_shape))):
        call()


# --------------------------------------------------------------------------
# wrong shapes of backward arguments
# --------------------------------------------------------------------------


def _bn_backward(**overrides):
    x = _x((4, 3, 5))
    _, mean, rstd = nbn.batch_norm_forward(x)
    args = dict(dy=np.ones_like(x), x=x, mean=mean, rstd=rstd, weight=None)
    args.update(overrides)
    return nbn.batch_norm_backward(
        args["dy"], args["x"], args["mean"], args["rstd"], args["weight"]
    )


def _ln_backward(**overrides):
    x = _x((2, 3, 5))
    _, mean, rstd = nbn.layer_norm_forward(x, axis=(0, 2))
    args = dict(dy=np.ones_like(x), x=x, mean=mean, rstd=rstd, weight=None)
    args.update(overrides)
    return nbn.layer_norm_backward(
        args["dy"], args["x"], args["mean"], args["rstd"], args["weight"], axis=(0, 2)
    )


def _gn_backward(**overrides):
    x = _x((2, 6, 5))
    _, mean, rstd = nbn.group_norm_forward(x, 3)
    args = dict(dy=np.ones_like(x), x=x, mean=mean, rstd=rstd, weight=None)
    args.update(overrides)
    return nbn.group_norm_backward(
        args["dy"], args["x"], 3, args["mean"], args["rstd"], args["weight"]
    )


def _in_backward(**overrides):
    x = _x((2, 3, 5))
    _, mean, rstd = nbn.instance_norm_forward(x)
    args = dict(dy=np.ones_like(x), x=x, mean=mean, rstd=rstd, weight=None)
    args.update(overrides)
    return nbn.instance_norm_backward(
        args["dy"], args["x"], args["mean"], args["rstd"], args["weight"]
    )


def _rms_backward(**overrides):
    x = _x((2, 3, 5))
    _, rrms = nbn.rms_norm_forward(x)
    args = dict(dy=np.ones_like(x), x=x, rrms=rrms, weight=None)
    args.update(overrides)
    return nbn.rms_norm_backward(args["dy"], args["x"], args["rrms"], args["weight"])


BACKWARD_SHAPE_CASES = [
    ("batch_norm dy", lambda: _bn_backward(dy=np.ones((4, 3, 4))), "dy", (4, 3, 5)),
    ("batch_norm mean", lambda: _bn_backward(mean=np.zeros(4)), "mean", (3,)),
    ("batch_norm rstd", lambda: _bn_backward(rstd=np.ones((3, 1))), "rstd", (3,)),
    ("batch_norm weight", lambda: _bn_backward(weight=np.ones(5)), "weight", (3,)),
    ("layer_norm dy", lambda: _ln_backward(dy=np.ones((2, 5, 3))), "dy", (2, 3, 5)),
    ("layer_norm mean", lambda: _ln_backward(mean=np.zeros(2)), "mean", (3,)),
    ("layer_norm rstd", lambda: _ln_backward(rstd=np.ones((3, 1))), "rstd", (3,)),
    ("layer_norm weight", lambda: _ln_backward(weight=np.ones(5)), "weight", (2, 5)),
    ("group_norm dy", lambda: _gn_backward(dy=np.ones((2, 6))), "dy", (2, 6, 5)),
    ("group_norm mean", lambda: _gn_backward(mean=np.zeros((2, 6))), "mean", (2, 3)),
    ("group_norm rstd", lambda: _gn_backward(rstd=np.ones(6)), "rstd", (2, 3)),
    ("group_norm weight", lambda: _gn_backward(weight=np.ones(3)), "weight", (6,)),
    ("instance_norm dy", lambda: _in_backward(dy=np.ones((3, 3, 5))), "dy", (2, 3, 5)),
    ("instance_norm mean", lambda: _in_backward(mean=np.zeros(3)), "mean", (2, 3)),
    ("instance_norm rstd", lambda: _in_backward(rstd=np.ones((3, 2))), "rstd", (2, 3)),
    ("rms_norm dy", lambda: _rms_backward(dy=np.ones((2, 3))), "dy", (2, 3, 5)),
    ("rms_norm rrms", lambda: _rms_backward(rrms=np.ones(2)), "rrms", (2, 3)),
    ("rms_norm weight", lambda: _rms_backward(weight=np.ones((5, 1))), "weight", (5,)),
]


@pytest.mark.parametrize(
    "call, argument, expected_shape",
    [case[1:] for case in BACKWARD_SHAPE_CASES],
    ids=[case[0] for case in BACKWARD_SHAPE_CASES],
)
def test_wrong_backward_argument_shape(call, argument, expected_shape):
    with pytest.raises(ValueError, match=mentions(argument, str(expected_shape))):
        call()


# --------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------

PLAIN_CALLS = {
    "batch_norm": lambda x, out: nbn.batch_norm(x, out=out),
    "layer_norm": lambda x, out: nbn.layer_norm(x, out=out),
    "group_norm": lambda x, out: nbn.group_norm(x, 2, out=out),
    "instance_norm": lambda x, out: nbn.instance_norm(x, out=out),
    "rms_norm": lambda x, out: nbn.rms_norm(x, out=out),
    "batch_norm_backward": lambda x, out: nbn.batch_norm_backward(
        x, x, *nbn.batch_norm_forward(x)[1:], out=out
    ),
    "layer_norm_backward": lambda x, out: nbn.layer_norm_backward(
        x, x, *nbn.layer_norm_forward(x)[1:], out=out
    ),
    "group_norm_backward": lambda x, out: nbn.group_norm_backward(
        x, x, 2, *nbn.group_norm_forward(x, 2)[1:], out=out
    ),
    "instance_norm_backward": lambda x, out: nbn.instance_norm_backward(
        x, x, *nbn.instance_norm_forward(x)[1:], out=out
    ),
    "rms_norm_backward": lambda x, out: nbn.rms_norm_backward(
        x, x, *nbn.rms_norm_forward(x)[1:], out=out
    ),
}


@pytest.mark.parametrize("name", list(PLAIN_CALLS))
def test_out_of_wrong_shape(name):
    x = _x((2, 4, 5))
    with pytest.raises(ValueError, match=mentions("out", "(2, 4, 5)")):
        PLAIN_CALLS[name](x, np.empty((2, 5, 4)))


@pytest.mark.parametrize(
    "x_dtype, out_dtype",
    [
        (np.float64, np.float32),
        (np.float32, np.float64),
        (np.float16, np.float32),
        (np.int64, np.int64),
    ],
)
@pytest.mark.parametrize("name", list(PLAIN_CALLS))
def test_out_of_wrong_dtype(name, x_dtype, out_dtype):
    x = _x((2, 4, 5), x_dtype)
    with pytest.raises((TypeError, ValueError), match="out"):
        PLAIN_CALLS[name](x, np.empty(x.shape, dtype=out_dtype))


@pytest.mark.parametrize("name", list(PLAIN_CALLS))
def test_read_only_out(name):
    x = _x((2, 4, 5))
    out = np.empty_like(x)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        PLAIN_CALLS[name](x, out)


# --------------------------------------------------------------------------
# degenerate training batches
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axis", [((1, 3), 1), ((1, 3, 1, 1), 1), ((1, 1, 3), -1), ((0, 3, 4), 1), ((0, 3), 1)]
)
def test_batch_norm_training_needs_more_than_one_value_per_channel(shape, axis):
    x = _x(shape)
    with pytest.raises(ValueError, match=re.escape(BN_ONE_VALUE)):
        nbn.batch_norm(x, axis=axis)
    with pytest.raises(ValueError, match=re.escape(BN_ONE_VALUE)):
        nbn.batch_norm_forward(x, axis=axis)


@pytest.mark.parametrize("shape, axis", [((2, 3, 1), 1), ((4, 3, 1, 1), 1), ((2, 1, 3), -1)])
def test_instance_norm_training_needs_more_than_one_spatial_element(shape, axis):
    x = _x(shape)
    with pytest.raises(ValueError, match=re.escape(IN_ONE_ELEMENT)):
        nbn.instance_norm(x, axis=axis)
    with pytest.raises(ValueError, match=re.escape(IN_ONE_ELEMENT)):
        nbn.instance_norm_forward(x, axis=axis)


# --------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------

AXIS_CASES = [
    ("batch_norm too large", lambda: nbn.batch_norm(_x((4, 3, 5)), axis=3)),
    ("batch_norm too small", lambda: nbn.batch_norm(_x((4, 3, 5)), axis=-4)),
    (
        "batch_norm_backward",
        lambda: nbn.batch_norm_backward(_x((4, 3)), _x((4, 3)), np.zeros(3), np.ones(3), axis=2),
    ),
    ("layer_norm too large", lambda: nbn.layer_norm(_x((2, 3, 5)), axis=3)),
    ("layer_norm too small in tuple", lambda: nbn.layer_norm(_x((2, 3, 5)), axis=(0, -4))),
    ("layer_norm repeated", lambda: nbn.layer_norm(_x((2, 3, 5)), axis=(0, 0))),
    ("layer_norm repeated negative", lambda: nbn.layer_norm(_x((2, 3, 5)), axis=(1, -2))),
    ("layer_norm empty tuple", lambda: nbn.layer_norm(_x((2, 3, 5)), axis=())),
    ("layer_norm_forward repeated", lambda: nbn.layer_norm_forward(_x((2, 3, 5)), axis=(2, -1))),
    ("group_norm", lambda: nbn.group_norm(_x((2, 6, 5)), 3, axis=3)),
    ("instance_norm", lambda: nbn.instance_norm(_x((2, 3, 5)), axis=-4)),
    ("rms_norm too large", lambda: nbn.rms_norm(_x((2, 3, 5)), axis=7)),
    ("rms_norm repeated", lambda: nbn.rms_norm(_x((2, 3, 5)), axis=(1, 1))),
    ("rms_norm empty tuple", lambda: nbn.rms_norm(_x((2, 3, 5)), axis=())),
    ("moments too large", lambda: nbn.moments(_x((2, 3)), axis=2)),
    ("moments repeated", lambda: nbn.moments(_x((2, 3)), axis=(0, -2))),
]


@pytest.mark.parametrize(
    "call", [case[1] for case in AXIS_CASES], ids=[case[0] for case in AXIS_CASES]
)
def test_bad_axis(call):
    with pytest.raises(ValueError, match="axis"):
        call()


# --------------------------------------------------------------------------
# scalar arguments
# --------------------------------------------------------------------------


@pytest.mark.parametrize("num_groups", [0, -2, 4])
def test_bad_num_groups(num_groups):
    x = _x((2, 6, 5))
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm(x, num_groups)
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm_forward(x, num_groups)
    with pytest.raises(ValueError, match="num_groups"):
        nbn.group_norm_backward(x, x, num_groups, np.zeros((2, 3)), np.ones((2, 3)))


NEGATIVE_EPS_CALLS = {
    "batch_norm": lambda x: nbn.batch_norm(x, eps=-1e-5),
    "batch_norm_forward": lambda x: nbn.batch_norm_forward(x, eps=-1e-5),
    "layer_norm": lambda x: nbn.layer_norm(x, eps=-1e-5),
    "layer_norm_forward": lambda x: nbn.layer_norm_forward(x, eps=-1e-5),
    "group_norm": lambda x: nbn.group_norm(x, 2, eps=-1e-5),
    "group_norm_forward": lambda x: nbn.group_norm_forward(x, 2, eps=-1e-5),
    "instance_norm": lambda x: nbn.instance_norm(x, eps=-1e-5),
    "instance_norm_forward": lambda x: nbn.instance_norm_forward(x, eps=-1e-5),
    "rms_norm": lambda x: nbn.rms_norm(x, eps=-1e-5),
    "rms_norm_forward": lambda x: nbn.rms_norm_forward(x, eps=-1e-5),
}


@pytest.mark.parametrize("name", list(NEGATIVE_EPS_CALLS))
def test_negative_eps(name):
    with pytest.raises(ValueError, match="eps"):
        NEGATIVE_EPS_CALLS[name](_x((2, 4, 5)))


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_momentum_outside_unit_interval(momentum):
    x = _x((4, 3, 5))
    for call in (
        nbn.batch_norm,
        nbn.batch_norm_forward,
        nbn.instance_norm,
        nbn.instance_norm_forward,
    ):
        running_mean, running_var = _running(3)
        with pytest.raises(ValueError, match="momentum"):
            call(x, running_mean, running_var, momentum=momentum)


# --------------------------------------------------------------------------
# empty normalized sets and input rank
# --------------------------------------------------------------------------

EMPTY_NORMALIZED_CALLS = {
    "layer_norm": lambda: nbn.layer_norm(np.zeros((3, 0))),
    "layer_norm tuple": lambda: nbn.layer_norm(np.zeros((2, 0, 3)), axis=(1, 2)),
    "layer_norm_forward": lambda: nbn.layer_norm_forward(np.zeros((3, 0))),
    "rms_norm": lambda: nbn.rms_norm(np.zeros((3, 0))),
    "group_norm": lambda: nbn.group_norm(np.zeros((2, 4, 0)), 2),
    "instance_norm": lambda: nbn.instance_norm(np.zeros((2, 3, 0))),
}


@pytest.mark.parametrize("name", list(EMPTY_NORMALIZED_CALLS))
def test_empty_normalized_set(name):
    with pytest.raises(ValueError, match=r"(?i)empty|more than 1"):
        EMPTY_NORMALIZED_CALLS[name]()


RANK_CASES = {
    "batch_norm": lambda: nbn.batch_norm(_x((5,)), axis=0),
    "batch_norm_forward": lambda: nbn.batch_norm_forward(_x((5,)), axis=0),
    "group_norm": lambda: nbn.group_norm(_x((6,)), 2, axis=0),
    "instance_norm": lambda: nbn.instance_norm(_x((2, 3))),
    "instance_norm_forward": lambda: nbn.instance_norm_forward(_x((2, 3))),
}


@pytest.mark.parametrize("name", list(RANK_CASES))
def test_input_rank_too_small(name):
    with pytest.raises(ValueError, match=r"(?i)dim|rank"):
        RANK_CASES[name]()


# --------------------------------------------------------------------------
# running statistics
# --------------------------------------------------------------------------


def test_eval_mode_needs_running_stats():
    x = _x((4, 3, 5))
    with pytest.raises(ValueError, match=r"running_(mean|var)"):
        nbn.batch_norm(x, training=False)
    with pytest.raises(ValueError, match=r"running_(mean|var)"):
        nbn.batch_norm_forward(x, training=False)
    with pytest.raises(ValueError, match=r"running_(mean|var)"):
        nbn.instance_norm(x, use_input_stats=False)
    with pytest.raises(ValueError, match=r"running_(mean|var)"):
        nbn.instance_norm_forward(x, use_input_stats=False)


@pytest.mark.parametrize("training", [True, False])
def test_running_stats_come_in_pairs(training):
    x = _x((4, 3, 5))
    running_mean, running_var = _running(3)
    for call in (nbn.batch_norm, nbn.batch_norm_forward):
        with pytest.raises(ValueError, match=r"running_(mean|var)"):
            call(x, running_mean, training=training)
        with pytest.raises(ValueError, match=r"running_(mean|var)"):
            call(x, None, running_var, training=training)
    for call in (nbn.instance_norm, nbn.instance_norm_forward):
        with pytest.raises(ValueError, match=r"running_(mean|var)"):
            call(x, running_mean, use_input_stats=training)
    np.testing.assert_array_equal(running_mean, 0.0)
    np.testing.assert_array_equal(running_var, 1.0)


def _read_only(array):
    array.setflags(write=False)
    return array


@pytest.mark.parametrize(
    "running_mean, running_var",
    [
        (_read_only(np.zeros(3)), np.ones(3)),
        (np.zeros(3), _read_only(np.ones(3))),
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
        (np.zeros(3, dtype=np.int64), np.ones(3, dtype=np.int64)),
    ],
    ids=["read-only mean", "read-only var", "lists", "integer"],
)
def test_training_needs_writable_float_running_stats(running_mean, running_var):
    x = _x((4, 3, 5))
    for call in (nbn.batch_norm, nbn.instance_norm):
        with pytest.raises((TypeError, ValueError), match=r"running_(mean|var)"):
            call(x, running_mean, running_var)
    np.testing.assert_array_equal(running_mean, 0)
    np.testing.assert_array_equal(running_var, 1)


FAILING_TRAINING_CALLS = {
    "batch_norm weight": lambda x, rm, rv: nbn.batch_norm(x, rm, rv, weight=np.ones(4)),
    "batch_norm bias": lambda x, rm, rv: nbn.batch_norm_forward(x, rm, rv, bias=np.ones(2)),
    "batch_norm momentum": lambda x, rm, rv: nbn.batch_norm(x, rm, rv, momentum=2.0),
    "batch_norm eps": lambda x, rm, rv: nbn.batch_norm(x, rm, rv, eps=-1.0),
    "batch_norm one value": lambda x, rm, rv: nbn.batch_norm(x[:1, :, :1], rm, rv),
    "batch_norm out": lambda x, rm, rv: nbn.batch_norm(x, rm, rv, out=np.empty((4, 3))),
    "batch_norm read-only out": lambda x, rm, rv: nbn.batch_norm(
        x, rm, rv, out=_read_only(np.empty_like(x))
    ),
    "batch_norm running_var shape": lambda x, rm, rv: nbn.batch_norm(x, rm, np.ones(4)),
    "batch_norm read-only running_var": lambda x, rm, rv: nbn.batch_norm(
        x, rm, _read_only(rv.copy())
    ),
    "batch_norm axis": lambda x, rm, rv: nbn.batch_norm(x, rm, rv, axis=5),
    "instance_norm weight": lambda x, rm, rv: nbn.instance_norm(x, rm, rv, weight=np.ones(4)),
    "instance_norm one element": lambda x, rm, rv: nbn.instance_norm_forward(x[:, :, :1], rm, rv),
    "instance_norm momentum": lambda x, rm, rv: nbn.instance_norm(x, rm, rv, momentum=-1.0),
    "instance_norm running_var shape": lambda x, rm, rv: nbn.instance_norm(x, rm, np.ones((1, 3))),
}


@pytest.mark.parametrize("name", list(FAILING_TRAINING_CALLS))
def test_failed_call_leaves_running_stats_untouched(name):
    x = _x((4, 3, 5))
    running_mean = np.array([0.1, 0.2, 0.3])
    running_var = np.array([1.1, 1.2, 1.3])
    with pytest.raises((TypeError, ValueError)):
        FAILING_TRAINING_CALLS[name](x, running_mean, running_var)
    np.testing.assert_array_equal(running_mean, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(running_var, [1.1, 1.2, 1.3])


# --------------------------------------------------------------------------
# unsupported dtypes
# --------------------------------------------------------------------------

UNSUPPORTED_DTYPE_CALLS = {
    "moments": lambda x: nbn.moments(x),
    "batch_norm": lambda x: nbn.batch_norm(x),
    "batch_norm_forward": lambda x: nbn.batch_norm_forward(x),
    "layer_norm": lambda x: nbn.layer_norm(x),
    "layer_norm_forward": lambda x: nbn.layer_norm_forward(x),
    "group_norm": lambda x: nbn.group_norm(x, 2),
    "instance_norm": lambda x: nbn.instance_norm(x),
    "rms_norm": lambda x: nbn.rms_norm(x),
    "rms_norm_forward": lambda x: nbn.rms_norm_forward(x),
}


@pytest.mark.parametrize("dtype", [np.complex128, object])
@pytest.mark.parametrize("name", list(UNSUPPORTED_DTYPE_CALLS))
def test_complex_and_object_inputs_raise_type_error(name, dtype):
    x = np.ones((2, 4, 5), dtype=dtype)
    x[0, 0, 0] = 2
    with pytest.raises(TypeError):
        UNSUPPORTED_DTYPE_CALLS[name](x)


# --------------------------------------------------------------------------
# arguments of the wrong type or rank, on every public function and path
# --------------------------------------------------------------------------

FUNCTIONS = [name + kind for name in NORM_CASES for kind in ("", "_forward", "_backward")]
FORWARDS = [f for f in FUNCTIONS if not f.endswith("_backward")]
PATHS = ["fast", "general"]
SHAPE = (4, 6, 5)


def _case(function):
    return NORM_CASES[function.removesuffix("_forward").removesuffix("_backward")]


def _input(path):
    """A C-contiguous float32 input, which the fast path takes, or a strided one."""
    if path == "fast":
        return _x(SHAPE, np.float32)
    return _x(SHAPE[:-1] + (2 * SHAPE[-1],), np.float32)[..., ::2]


def _call(function, x, *, num_groups=None, running=(None, None), **options):
    """The public ``function`` on ``x`` (and ``dy = x``), positional arguments as documented."""
    norm = _case(function).norm
    num_groups = _case(function).num_groups if num_groups is None else num_groups
    if function.endswith("_backward"):
        stats = _case(function).forward(_x(SHAPE))[1:]
        arguments = norm.backward_arguments(x, x, stats, num_groups=num_groups)
    else:
        arguments = norm.forward_arguments(
            x, num_groups=num_groups, running_mean=running[0], running_var=running[1]
        )
    return getattr(nbn, function)(*arguments, **options)


@pytest.mark.parametrize(
    "x", [np.float64(3.0), np.array(3.0, np.float32)], ids=["NumPy scalar", "0-d array"]
)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_zero_dimensional_input(function, x):
    case = _case(function)
    expected = mentions(case.name, f"x with at least {case.norm.min_ndim} dimension", "0-d array")
    with pytest.raises(ValueError, match=expected):
        _call(function, x)


# Each wrong axis, from the norm's default, and the name of its type in the message.
WRONG_AXES = {
    "float": (float, "float"),
    "string": (str, "str"),
    "bool": (lambda default: True, "bool"),
    "None": (lambda default: None, "None"),
    "float in a tuple": (lambda default: (0, float(default % 3)), "tuple"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("wrong", WRONG_AXES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_axis_of_wrong_type(function, wrong, path):
    x = _input(path)
    default = _case(function).norm.default_axis
    make, type_name = WRONG_AXES[wrong]
    _call(function, x)  # a plan for the int axis, which an equal float or bool must not reuse
    with pytest.raises(TypeError, match=mentions("axis must be an int", type_name)):
        _call(function, x, axis=make(default))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_numpy_integers_are_axes_as_in_numpy(function, path):
    x = _input(path)
    default = _case(function).norm.default_axis
    expected = _call(function, x)
    for axis in (np.int64(default), np.array(default)):
        for got, want in zip(_call(function, x, axis=axis), expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "eps, type_name", [("1e-5", "str"), (1j, "complex"), (np.array([1e-5, 1e-5]), "ndarray")]
)
@pytest.mark.parametrize("function", FORWARDS)
def test_eps_of_wrong_type(function, eps, type_name, path):
    with pytest.raises(TypeError, match=mentions("eps must be a real number", type_name)):
        _call(function, _input(path), eps=eps)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("function", [f for f in FORWARDS if _case(f).norm.default_eps])
def test_eps_none_is_only_for_rms_norm(function, path):
    with pytest.raises(TypeError, match=mentions("eps must be a real number", "None")):
        _call(function, _input(path), eps=None)


RUNNING_FORWARDS = [f for f in FORWARDS if _case(f).norm.running_stats]
MODE_FUNCTIONS = [f for f in FUNCTIONS if _case(f).norm.running_stats]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("momentum, type_name", [("0.1", "str"), (None, "None")])
@pytest.mark.parametrize("function", RUNNING_FORWARDS)
def test_momentum_of_wrong_type(function, momentum, type_name, path):
    running_mean, running_var = _running(SHAPE[1])
    with pytest.raises(TypeError, match=mentions("momentum must be a real number", type_name)):
        _call(function, _input(path), running=(running_mean, running_var), momentum=momentum)
    np.testing.assert_array_equal(running_mean, 0.0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode, type_name", [("no", "str"), (None, "None"), (1, "int")])
@pytest.mark.parametrize("function", MODE_FUNCTIONS)
def test_mode_of_wrong_type(function, mode, type_name, path):
    argument = _case(function).norm.mode_argument
    running_mean, running_var = _running(SHAPE[1])
    with pytest.raises(TypeError, match=mentions(f"{argument} must be a bool", type_name)):
        _call(function, _input(path), running=(running_mean, running_var), **{argument: mode})
    np.testing.assert_array_equal(running_mean, 0.0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("function", MODE_FUNCTIONS)
def test_numpy_bools_are_modes(function, path):
    argument = _case(function).norm.mode_argument
    x = _input(path)
    running = _running(SHAPE[1])
    for mode in (np.True_, np.False_):
        expected = _call(function, x, running=running, **{argument: bool(mode)})
        got = _call(function, x, running=running, **{argument: mode})
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("function", RUNNING_FORWARDS)
def test_integer_running_statistics_name_their_dtype(function, path):
    running_mean, running_var = np.zeros(SHAPE[1], int), np.ones(SHAPE[1], int)
    expected = mentions("running_mean must be a floating-point array", "dtype int64")
    with pytest.raises(TypeError, match=expected):
        _call(function, _input(path), running=(running_mean, running_var))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "num_groups, type_name",
    [(3.0, "float"), ("3", "str"), (True, "bool"), (np.float64(3.0), "float64")],
)
@pytest.mark.parametrize("function", [f for f in FUNCTIONS if _case(f).norm.grouped])
def test_num_groups_of_wrong_type(function, num_groups, type_name, path):
    x = _input(path)
    _call(function, x, num_groups=3)  # a plan for 3 groups, which 3.0 must not reuse
    with pytest.raises(TypeError, match=mentions("num_groups must be an int", type_name)):
        _call(function, x, num_groups=num_groups)


@pytest.mark.parametrize("path", PATHS)
def test_group_norm_needs_num_groups(path):
    x = _input(path)
    with pytest.raises(TypeError, match=mentions("num_groups must be an int", "None")):
        nbn.group_norm(x, None)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(axis=1.0), ("axis must be an int or a tuple of ints", "float 1.0")),
        (dict(axis="1"), ("axis must be an int or a tuple of ints", "str '1'")),
        (dict(axis=True), ("axis must be an int or a tuple of ints", "bool True")),
        (dict(axis=(0, 1.0)), ("axis must be an int or a tuple of ints", "tuple (0, 1.0)")),
        (dict(ddof="1"), ("ddof must be a real number", "str '1'")),
        (dict(ddof=None), ("ddof must be a real number", "None")),
    ],
    ids=["float axis", "string axis", "bool axis", "float in axis", "string ddof", "None ddof"],
)
def test_moments_arguments_of_wrong_type(options, message, path):
    with pytest.raises(TypeError, match=mentions(*message)):
        nbn.moments(_input(path), **options)


def test_moments_takes_numpy_integer_axes_and_real_ddof_as_numpy():
    x = _x(SHAPE)
    mean, var = nbn.moments(x, axis=(np.int64(0), np.array(2)), ddof=1.5)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)))
    np.testing.assert_allclose(var, x.var(axis=(0, 2), ddof=1.5))


LAYER_CASES = [
    ("BatchNorm eps", lambda: nbn.BatchNorm(64, eps="x"), TypeError, ("eps", "str 'x'")),
    ("BatchNorm eps None", lambda: nbn.BatchNorm(64, eps=None), TypeError, ("eps", "None")),
    ("LayerNorm eps None", lambda: nbn.LayerNorm(5, eps=None), TypeError, ("eps", "None")),
    ("GroupNorm eps", lambda: nbn.GroupNorm(2, 4, eps="x"), TypeError, ("eps", "str 'x'")),
    ("RMSNorm eps", lambda: nbn.RMSNorm(5, eps="x"), TypeError, ("eps", "str 'x'")),
    (
        "BatchNorm momentum",
        lambda: nbn.BatchNorm(3, momentum="0.1"),
        TypeError,
        ("momentum must be None or a real number", "str '0.1'"),
    ),
    (
        "BatchNorm num_features float",
        lambda: nbn.BatchNorm(2.5),
        TypeError,
        ("num_features must be an int", "float 2.5"),
    ),
    (
        "BatchNorm num_features bool",
        lambda: nbn.BatchNorm(True),
        TypeError,
        ("num_features must be an int", "bool True"),
    ),
    (
        "BatchNorm num_features zero",
        lambda: nbn.BatchNorm(0),
        ValueError,
        ("num_features must be a positive integer", "0"),
    ),
    (
        "InstanceNorm num_features string",
        lambda: nbn.InstanceNorm("3"),
        TypeError,
        ("num_features must be an int", "str '3'"),
    ),
    (
        "GroupNorm num_channels float",
        lambda: nbn.GroupNorm(2, 4.0),
        TypeError,
        ("num_channels must be an int", "float 4.0"),
    ),
    (
        "GroupNorm num_channels string",
        lambda: nbn.GroupNorm(2, "4"),
        TypeError,
        ("num_channels must be an int", "str '4'"),
    ),
    (
        "GroupNorm num_groups float",
        lambda: nbn.GroupNorm(2.0, 4),
        TypeError,
        ("num_groups must be an int", "float 2.0"),
    ),
    (
        "GroupNorm num_groups bool",
        lambda: nbn.GroupNorm(True, 4),
        TypeError,
        ("num_groups must be an int", "bool True"),
    ),
    (
        "BatchNorm axis bool",
        lambda: nbn.BatchNorm(3, axis=True),
        TypeError,
        ("axis must be an int", "bool True"),
    ),
    (
        "LayerNorm normalized_shape float",
        lambda: nbn.LayerNorm(2.5),
        TypeError,
        ("normalized_shape must be an int or a tuple of ints", "float 2.5"),
    ),
    (
        "LayerNorm normalized_shape string",
        lambda: nbn.LayerNorm("5"),
        TypeError,
        ("normalized_shape must be an int or a tuple of ints", "str '5'"),
    ),
    (
        "RMSNorm float in normalized_shape",
        lambda: nbn.RMSNorm((5, 2.0)),
        TypeError,
        ("normalized_shape must be an int or a tuple of ints", "tuple (5, 2.0)"),
    ),
    (
        "LayerNorm axis float",
        lambda: nbn.LayerNorm(5, axis=1.0),
        TypeError,
        ("axis must be an int or a tuple of ints", "float 1.0"),
    ),
    (
        "LayerNorm axis string",
        lambda: nbn.LayerNorm(5, axis="1"),
        TypeError,
        ("axis must be an int or a tuple of ints", "str '1'"),
    ),
]


@pytest.mark.parametrize(
    "make, error, fragments",
    [case[1:] for case in LAYER_CASES],
    ids=[case[0] for case in LAYER_CASES],
)
def test_layer_arguments_of_wrong_type_or_value(make, error, fragments):
    with pytest.raises(error, match=mentions(*fragments)):
        make()
