"""Array subclasses and odd array types: each works as NumPy treats it, or is refused.

Refusals are ``TypeError`` or ``ValueError`` naming the argument; no Numba
error reaches the caller.  Decisions: ``np.matrix`` and other subclasses
are read as plain arrays (results are plain arrays; an ``out`` of a
subclass is written and returned as given); masked arrays are refused (the
kernels would ignore the mask); dtypes NumPy cannot compute with here
(bfloat16, void, complex, strings, datetimes, objects) are refused;
non-native byte order works everywhere, ``out`` included.
"""

import warnings

import numpy as np
import pytest

import numbanorm as nbn

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

SHAPE, C = (4, 6, 5), 6


def _base(rng):
    x = rng.standard_normal(SHAPE)
    _, mean, rstd = nbn.batch_norm_forward(x)
    _, ln_mean, ln_rstd = nbn.layer_norm_forward(x)
    return dict(
        x=x,
        dy=rng.standard_normal(SHAPE),
        out=np.empty(SHAPE),
        running_mean=np.zeros(C),
        running_var=np.ones(C),
        weight=1 + rng.random(C),
        bias=rng.standard_normal(C),
        mean=mean,
        rstd=rstd,
        ln_weight=1 + rng.random(5),
        ln_bias=rng.standard_normal(5),
        ln_mean=ln_mean,
        ln_rstd=ln_rstd,
    )


# Each call: the function of the arguments, and the array arguments it takes.
CALLS = {
    "batch_norm": (
        lambda a: nbn.batch_norm(
            a["x"], a["running_mean"], a["running_var"], a["weight"], a["bias"], out=a["out"]
        ),
        ("x", "running_mean", "running_var", "weight", "bias", "out"),
    ),
    "batch_norm eval": (
        lambda a: nbn.batch_norm(a["x"], a["running_mean"], a["running_var"], training=False),
        ("running_mean", "running_var"),
    ),
    "batch_norm_backward": (
        lambda a: nbn.batch_norm_backward(
            a["dy"], a["x"], a["mean"], a["rstd"], a["weight"], out=a["out"]
        ),
        ("dy", "x", "mean", "rstd", "weight", "out"),
    ),
    "group_norm": (
        lambda a: nbn.group_norm(a["x"], 3, a["weight"], a["bias"], out=a["out"]),
        ("x", "weight", "bias", "out"),
    ),
    "instance_norm_forward": (
        lambda a: nbn.instance_norm_forward(
            a["x"], a["running_mean"], a["running_var"], a["weight"], a["bias"]
        ),
        ("x", "running_mean", "running_var", "weight", "bias"),
    ),
    "layer_norm": (
        lambda a: nbn.layer_norm(a["x"], a["ln_weight"], a["ln_bias"], out=a["out"]),
        ("x", "ln_weight", "ln_bias", "out"),
    ),
    "layer_norm_backward": (
        lambda a: nbn.layer_norm_backward(
            a["dy"], a["x"], a["ln_mean"], a["ln_rstd"], a["ln_weight"], out=a["out"]
        ),
        ("dy", "x", "ln_mean", "ln_rstd", "ln_weight", "out"),
    ),
    "rms_norm": (
        lambda a: nbn.rms_norm(a["x"], a["ln_weight"], out=a["out"]),
        ("x", "ln_weight", "out"),
    ),
    "rms_norm_backward": (
        lambda a: nbn.rms_norm_backward(
            a["dy"], a["x"], a["ln_rstd"], a["ln_weight"], out=a["out"]
        ),
        ("dy", "x", "ln_rstd", "ln_weight", "out"),
    ),
    "moments": (lambda a: nbn.moments(a["x"], axis=(0, 2)), ("x",)),
}
# The public name of each argument, as error messages give it.
PUBLIC = dict(ln_weight="weight", ln_bias="bias", ln_mean="mean", ln_rstd="rrms|rstd")
# Arguments written in place: they must be writable arrays.
WRITTEN = {
    ("batch_norm", "running_mean"),
    ("batch_norm", "running_var"),
    ("instance_norm_forward", "running_mean"),
    ("instance_norm_forward", "running_var"),
}
WRITTEN.update((call, "out") for call, (_, arguments) in CALLS.items() if "out" in arguments)

ARGUMENT_CASES = [
    (call, argument) for call, (_, arguments) in CALLS.items() for argument in arguments
]
ARGUMENT_IDS = [f"{call}-{argument}" for call, argument in ARGUMENT_CASES]


def _bfloat16(a):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return a.astype(ml_dtypes.bfloat16)


def _torch_bfloat16(a):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)


REFUSED = {
    "masked": lambda a: np.ma.masked_array(a, mask=np.zeros(a.shape, bool)),
    "masked, some masked": lambda a: np.ma.masked_greater(a, 0.5),
    "object": lambda a: a.astype(object),
    "complex": lambda a: a.astype(np.complex128),
    "string": lambda a: a.astype(str),
    "datetime": lambda a: a.astype(np.int64).astype("M8[s]"),
    "timedelta": lambda a: a.astype(np.int64).astype("m8[s]"),
    # What an ml_dtypes-style bfloat16 looks like to a program that does not know it.
    "void bfloat16": lambda a: a.astype(np.float32).view(np.dtype((np.void, 2)))[..., ::2],
    "bfloat16": _bfloat16,
    "torch bfloat16": _torch_bfloat16,
}


def _run(call, arrays):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return CALLS[call][0](arrays)


@pytest.mark.parametrize("kind", REFUSED)
@pytest.mark.parametrize("call, argument", ARGUMENT_CASES, ids=ARGUMENT_IDS)
def test_unsupported_arrays_are_refused_naming_the_argument(rng, call, argument, kind):
    arrays = _base(rng)
    before = {name: arrays[name].copy() for name in ("running_mean", "running_var")}
    arrays[argument] = REFUSED[kind](arrays[argument])
    name = PUBLIC.get(argument, argument)
    with pytest.raises((TypeError, ValueError), match=rf"(^|\W)({name})\W"):
        _run(call, arrays)
    if kind.startswith("masked"):
        with pytest.raises(TypeError, match="masked"):
            _run(call, arrays)
    for stat, value in before.items():
        if stat != argument:
            np.testing.assert_array_equal(arrays[stat], value)


def test_a_masked_array_is_refused_also_after_plain_calls(rng):
    x = rng.standard_normal((3, 8))
    for _ in range(2):
        nbn.layer_norm(x)
        nbn.layer_norm(x, axis=0)
    with pytest.raises(TypeError, match="masked"):
        nbn.layer_norm(np.ma.masked_array(x, mask=x > 0))


ACCEPTED = {
    "matrix": lambda a: np.matrix(a) if a.ndim == 2 else None,
    "memmap-like subclass": lambda a: a.view(type("Tagged", (np.ndarray,), {})),
    "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "read-only": lambda a: np.lib.stride_tricks.as_strided(a, writeable=False),
    "list": lambda a: a.tolist(),
    "Fortran order": np.asfortranarray,
}


def _as_2d(arrays):
    """``_base`` arrays whose ``x``-shaped members are 2-D, so that ``np.matrix`` holds them."""
    for name in ("x", "dy", "out"):
        arrays[name] = arrays[name].reshape(SHAPE[0], -1)
    arrays["ln_weight"], arrays["ln_bias"] = (
        np.resize(arrays[k], SHAPE[1] * SHAPE[2]) for k in ("ln_weight", "ln_bias")
    )
    arrays["weight"], arrays["bias"] = (
        np.resize(arrays[k], SHAPE[1] * SHAPE[2]) for k in ("weight", "bias")
    )
    arrays["running_mean"], arrays["running_var"] = (
        np.zeros(SHAPE[1] * SHAPE[2]),
        np.ones(SHAPE[1] * SHAPE[2]),
    )
    for norm, names in (("batch_norm", ("mean", "rstd")), ("layer_norm", ("ln_mean", "ln_rstd"))):
        _, *stats = getattr(nbn, f"{norm}_forward")(arrays["x"])
        arrays.update(zip(names, stats))
    return arrays


def _plain_results(results):
    return tuple(np.asarray(r) for r in (results if isinstance(results, tuple) else (results,)))


@pytest.mark.parametrize("kind", ACCEPTED)
@pytest.mark.parametrize("call, argument", ARGUMENT_CASES, ids=ARGUMENT_IDS)
def test_accepted_arrays_give_the_results_of_plain_arrays(rng, call, argument, kind):
    arrays = _base(rng)
    if kind == "matrix":
        if call in ("moments", "instance_norm_forward") or argument not in ("x", "dy", "out"):
            pytest.skip("np.matrix is 2-D: only x-shaped arguments of a 2-D call")
        arrays = _as_2d(arrays)
    if kind in ("list", "read-only") and (call, argument) in WRITTEN:
        pytest.skip("written in place: must be a writable array")
    plain = {k: np.array(v, copy=True) for k, v in arrays.items()}
    expected = _plain_results(_run(call, plain))
    odd = dict(arrays)
    odd[argument] = ACCEPTED[kind](arrays[argument])
    results = _run(call, odd)
    first = results[0] if isinstance(results, tuple) else results
    if argument == "out":
        assert first is odd["out"]
    else:
        assert all(type(r) in (np.ndarray, np.float64) for r in _plain_results(results))
    for actual, wanted in zip(_plain_results(results), expected):
        # another memory layout may sum in another order
        np.testing.assert_allclose(actual, wanted, rtol=1e-12, atol=1e-12)
    if argument == "out":
        np.testing.assert_array_equal(np.asarray(odd["out"]), expected[0])
    if argument in ("running_mean", "running_var") and kind != "list":
        np.testing.assert_array_equal(np.asarray(odd[argument]), plain[argument])


def test_a_matrix_gives_a_plain_array(rng):
    x = np.matrix(rng.standard_normal((4, 8)))
    y = nbn.layer_norm(x)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, nbn.layer_norm(np.asarray(x)))
    out = np.matrix(np.empty((4, 8)))
    assert nbn.batch_norm(x, out=out) is out
    np.testing.assert_array_equal(out, nbn.batch_norm(np.asarray(x)))


@pytest.mark.parametrize(
    "value",
    [np.array(2.5), 2.5, np.float32(2.5), [2.5]],
    ids=["0-d array", "float", "NumPy scalar", "list"],
)
def test_moments_of_a_scalar_is_numpys(value):
    mean, var = nbn.moments(value)
    assert mean == np.mean(value) and var == np.var(value)
    assert np.asarray(mean).dtype == np.mean(value).dtype


@pytest.mark.parametrize(
    "call",
    [
        lambda x: nbn.layer_norm(x),
        lambda x: nbn.rms_norm_forward(x),
        lambda x: nbn.batch_norm(x),
        lambda x: nbn.group_norm(x, 1),
        lambda x: nbn.instance_norm(x),
    ],
    ids=["layer_norm", "rms_norm_forward", "batch_norm", "group_norm", "instance_norm"],
)
@pytest.mark.parametrize("value", [np.array(2.5), 2.5], ids=["0-d array", "float"])
def test_norms_of_a_scalar_are_refused(call, value):
    with pytest.raises(ValueError, match=r"dimension|dimensions"):
        call(value)


def test_ragged_lists_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="^x "):
        nbn.layer_norm([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="^weight "):
        nbn.layer_norm(np.ones((2, 2)), [[1.0, 2.0], [3.0]])


# norm, shape, positional arguments after x, forward options, backward options
ZERO_SIZE = {
    "layer_norm rows": ("layer_norm", (0, 5), (), {}, {}),
    "layer_norm rows, axes": ("layer_norm", (0, 3, 5), (), dict(axis=(1, 2)), dict(axis=(1, 2))),
    "rms_norm rows": ("rms_norm", (0, 5), (), {}, {}),
    "group_norm samples": ("group_norm", (0, 4, 5), (2,), {}, {}),
    "instance_norm samples": ("instance_norm", (0, 4, 5), (), {}, {}),
    "batch_norm eval, no samples": (
        "batch_norm",
        (0, 4, 5),
        (np.zeros(4), np.ones(4)),
        dict(training=False),
        dict(training=False),
    ),
    "batch_norm no channels": ("batch_norm", (3, 0, 5), (), {}, {}),
}


@pytest.mark.parametrize("case", ZERO_SIZE.values(), ids=ZERO_SIZE)
def test_zero_size_axes_give_empty_results(case):
    norm, shape, args, forward_options, backward_options = case
    x = np.ones(shape)
    y, *stats = getattr(nbn, f"{norm}_forward")(x, *args, **forward_options)
    assert y.shape == shape
    groups = args if norm == "group_norm" else ()
    dx, *grads = getattr(nbn, f"{norm}_backward")(
        np.ones(shape), x, *groups, *stats, **backward_options
    )
    assert dx.shape == shape
    assert all(np.all(g == 0) for g in grads)


@pytest.mark.parametrize(
    "call, shape",
    [
        (lambda x: nbn.layer_norm(x), (3, 0)),
        (lambda x: nbn.layer_norm(x, axis=(0, 1)), (3, 0, 2)),
        (lambda x: nbn.group_norm(x, 2), (3, 4, 0)),
        (lambda x: nbn.batch_norm(x), (0, 4)),
    ],
    ids=["layer_norm", "layer_norm axes", "group_norm", "batch_norm training"],
)
def test_normalizing_an_empty_set_is_refused(call, shape):
    with pytest.raises(ValueError):
        call(np.ones(shape))


def test_moments_of_zero_size_axes_are_numpys():
    x = np.ones((0, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for axis in (0, 1, None):
            for got, expected in zip(
                nbn.moments(x, axis=axis), (np.mean(x, axis=axis), np.var(x, axis=axis))
            ):
                np.testing.assert_array_equal(got, expected)


def test_big_endian_out_receives_the_result(rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)
    out = np.empty(x.shape, ">f4")
    assert nbn.layer_norm(x, out=out) is out
    np.testing.assert_array_equal(out, nbn.layer_norm(x))
    running_mean, running_var = np.zeros(40, ">f8"), np.ones(40, ">f8")
    expected_mean, expected_var = np.zeros(40), np.ones(40)
    nbn.batch_norm(x, running_mean, running_var, axis=-1)
    nbn.batch_norm(x, expected_mean, expected_var, axis=-1)
    np.testing.assert_array_equal(running_mean, expected_mean)
    np.testing.assert_array_equal(running_var, expected_var)
