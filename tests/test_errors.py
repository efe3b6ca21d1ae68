import re

import numpy as np
import pytest

import numbanorm as nbn

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
