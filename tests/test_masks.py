"""``where=``: statistics over the selected elements, for every norm and ``moments``.

References are float64 NumPy written from the issue's semantics: each
group's statistics come from its selected elements (``np.mean(...,
where=)``), ``y`` is computed for every element, a group with none selected
has ``mean = rstd = 0``, and the backward's feedback through the
statistics reaches the selected elements only.  The backward is also
checked by finite differences, and batch norm over padded sequences
against batch norm over the packed valid frames (numbanorm's, and
PyTorch's where it is installed).
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import numbanorm as nbn

from helpers import assert_close, random_array

EPS = 1e-5


# ----------------------------------------------------------------------------
# The reference


def _grouped(name, x, axis, num_groups):
    """``(x viewed in groups, reduced axes, weight broadcast shape)`` of a norm.

    Group norm splits its channel axis into ``(groups, channels per group)``.
    """
    ndim = x.ndim
    if name in ("layer_norm", "rms_norm"):
        axes = tuple(sorted(a % ndim for a in np.atleast_1d(axis)))
        return x, axes, tuple(n if a in axes else 1 for a, n in enumerate(x.shape))
    channel = axis % ndim
    sample = 0 if channel else 1
    weight_shape = tuple(n if a == channel else 1 for a, n in enumerate(x.shape))
    if name == "batch_norm":
        return x, tuple(a for a in range(ndim) if a != channel), weight_shape
    if name == "instance_norm":
        return x, tuple(a for a in range(ndim) if a not in (channel, sample)), weight_shape
    split = x.shape[:channel] + (num_groups, -1) + x.shape[channel + 1 :]
    reduced = tuple(a for a in range(ndim + 1) if a not in (channel, sample))
    return x.reshape(split), reduced, weight_shape


def masked_forward(name, x, where, weight=None, bias=None, *, axis, num_groups=None):
    """``(y, statistics, x_hat, count)`` in float64; statistics squeezed as numbanorm's."""
    x = np.asarray(x, np.float64)
    mask = np.broadcast_to(where, x.shape)
    xg, reduced, weight_shape = _grouped(name, x, axis, num_groups)
    mg = mask.reshape(xg.shape)
    count = mg.sum(axis=reduced, keepdims=True).astype(np.float64)
    some = np.maximum(count, 1)
    centered = name != "rms_norm"
    mean = np.where(mg, xg, 0).sum(axis=reduced, keepdims=True) / some * centered
    var = np.where(mg, (xg - mean) ** 2, 0).sum(axis=reduced, keepdims=True) / some
    rstd = np.where(count > 0, 1 / np.sqrt(var + EPS), 0.0)
    x_hat = ((xg - mean) * rstd).reshape(x.shape)
    w = 1.0 if weight is None else np.reshape(weight, weight_shape)
    b = 0.0 if bias is None else np.reshape(bias, weight_shape)
    y = x_hat * w + b
    stats = [s.squeeze(axis=reduced) for s in ((mean, rstd) if centered else (rstd,))]
    if name in ("batch_norm", "instance_norm", "group_norm") and axis % x.ndim == 0:
        stats = [s.T if s.ndim == 2 else s for s in stats]  # (N, C) with the sample axis 1
    return y, stats, x_hat, (count, rstd, reduced, xg.shape, mg)


def masked_backward(name, dy, x, where, weight=None, *, axis, num_groups=None):
    """``(dx, dweight, dbias)`` of :func:`masked_forward` in float64, from its formula."""
    dy = np.asarray(dy, np.float64)
    _, _, x_hat, (count, rstd, reduced, split, mg) = masked_forward(
        name, x, where, weight, axis=axis, num_groups=num_groups
    )
    _, _, weight_shape = _grouped(name, np.asarray(x), axis, num_groups)
    g = (dy * (1.0 if weight is None else np.reshape(weight, weight_shape))).reshape(split)
    xh = x_hat.reshape(split)
    centered = name != "rms_norm"
    feedback = g.sum(axis=reduced, keepdims=True) * centered + xh * (g * xh).sum(
        axis=reduced, keepdims=True
    )
    dx = rstd * (g - np.where(mg, feedback / np.maximum(count, 1), 0.0))
    kept = tuple(a for a, n in enumerate(weight_shape) if n == 1)
    dweight = (dy * x_hat).sum(axis=kept).reshape(-1)
    dbias = dy.sum(axis=kept).reshape(-1)
    if name in ("layer_norm", "rms_norm"):
        dweight, dbias = (d.reshape([n for n in weight_shape if n != 1]) for d in (dweight, dbias))
    return dx.reshape(dy.shape), dweight, dbias


# ----------------------------------------------------------------------------
# numbanorm's calls


# name -> (x shape, axis, num_groups, masks: name -> shape of a random mask)
NORM_SHAPES = {
    "batch_norm": ((4, 3, 50), 1, None, {"frames": (4, 1, 50), "full": (4, 3, 50)}),
    "instance_norm": ((4, 3, 50), 1, None, {"frames": (4, 1, 50), "full": (4, 3, 50)}),
    "group_norm": ((4, 6, 20), 1, 3, {"frames": (4, 1, 20), "full": (4, 6, 20)}),
    "layer_norm": ((4, 10, 16), -1, None, {"tokens": (4, 10, 1), "full": (4, 10, 16)}),
    "rms_norm": ((4, 10, 16), -1, None, {"features": (16,), "full": (4, 10, 16)}),
}
MASK_CASES = [(name, kind) for name, spec in NORM_SHAPES.items() for kind in spec[3]]


def forward(name, x, where, weight=None, bias=None, *, axis, num_groups=None, **options):
    f = getattr(nbn, name + "_forward")
    if name == "rms_norm":
        return f(x, weight, axis=axis, eps=EPS, where=where, **options)
    if name == "layer_norm":
        return f(x, weight, bias, axis=axis, eps=EPS, where=where, **options)
    if name == "group_norm":
        return f(x, num_groups, weight, bias, axis=axis, eps=EPS, where=where, **options)
    return f(x, None, None, weight, bias, axis=axis, eps=EPS, where=where, **options)


def backward(name, dy, x, stats, where, weight=None, *, axis, num_groups=None, **options):
    f = getattr(nbn, name + "_backward")
    groups = (num_groups,) if name == "group_norm" else ()
    return f(dy, x, *groups, *stats, weight, axis=axis, where=where, **options)


def _mask(rng, shape, kind):
    """A random mask with an empty group and a full one where the shape allows."""
    mask = rng.random(shape) < 0.6
    if kind != "full" and shape[0] > 2:
        mask[0] = False  # a fully padded sample
        mask[1] = True
    return mask


def _case(rng, name, kind, dtype=np.float64):
    shape, axis, num_groups, masks = NORM_SHAPES[name]
    x = random_array(rng, shape, dtype, loc=3.0)
    params = shape[axis] if name not in ("layer_norm", "rms_norm") else shape[-1]
    weight = random_array(rng, (params,))
    bias = None if name == "rms_norm" else random_array(rng, (params,))
    return x, _mask(rng, masks[kind], kind), weight, bias, dict(axis=axis, num_groups=num_groups)


# ----------------------------------------------------------------------------
# Forward and backward against the reference


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("name,kind", MASK_CASES)
def test_forward_and_backward_match_the_masked_reference(rng, name, kind, dtype):
    x, where, weight, bias, options = _case(rng, name, kind, dtype)
    y, *stats = forward(name, x, where, weight, bias, **options)
    ref_y, ref_stats, _, _ = masked_forward(name, x, where, weight, bias, **options)
    assert y.dtype == x.dtype
    assert_close(y, ref_y, dtype, scale=2)
    for got, want in zip(stats, ref_stats):
        assert_close(got, want, dtype)
    dy = random_array(rng, x.shape, dtype)
    got = backward(name, dy, x, stats, where, weight, **options)
    want = masked_backward(name, dy, x, where, weight, **options)
    assert got[0].dtype == x.dtype
    for g, w in zip(got, want):
        assert_close(g, w, dtype, scale=10)


@pytest.mark.parametrize("name", list(NORM_SHAPES))
def test_a_fully_padded_sample_is_its_bias_and_gets_no_gradient(rng, name):
    """No NaN from a group without selected elements: ``y = bias``, ``dx = 0``."""
    x, _, weight, bias, options = _case(rng, name, "full")
    where = np.ones(x.shape, bool)
    where[0] = False
    y, *stats = forward(name, x, where, weight, bias, **options)
    per_sample = name != "batch_norm"
    if per_sample:
        if bias is None:
            expected = 0.0
        elif name == "layer_norm":
            expected = np.broadcast_to(bias, x[0].shape)
        else:
            expected = np.broadcast_to(bias[:, None], x[0].shape)
        np.testing.assert_array_equal(y[0], expected)
        for stat in stats:
            np.testing.assert_array_equal(stat[0], 0.0)
    dx, *_ = backward(name, np.ones_like(x), x, stats, where, weight, **options)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    if per_sample:
        np.testing.assert_array_equal(dx[0], 0.0)


@pytest.mark.parametrize("name", list(NORM_SHAPES))
def test_an_all_true_mask_computes_the_unmasked_norm(rng, name):
    x, _, weight, bias, options = _case(rng, name, "full")
    y, *stats = forward(name, x, np.ones(x.shape, bool), weight, bias, **options)
    y0, *stats0 = forward(name, x, None, weight, bias, **options)
    dy = rng.standard_normal(x.shape)
    grads = backward(name, dy, x, stats, True, weight, **options)
    grads0 = backward(name, dy, x, stats0, None, weight, **options)
    for got, want in zip((y, *stats, *grads), (y0, *stats0, *grads0)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kind", MASK_CASES)
def test_unselected_values_do_not_reach_the_statistics(rng, name, kind):
    """NaN and inf in padding stay in their own elements' outputs."""
    x, where, weight, bias, options = _case(rng, name, kind)
    padded = x.copy()
    unselected = ~np.broadcast_to(where, x.shape)
    padded[unselected] = np.where(rng.random(unselected.sum()) < 0.5, np.nan, np.inf)
    y, *stats = forward(name, padded, where, weight, bias, **options)
    y_finite, *stats_finite = forward(name, x, where, weight, bias, **options)
    for got, want in zip(stats, stats_finite):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(y[~unselected], y_finite[~unselected])


@pytest.mark.parametrize("layout", ["channels-last", "fortran", "strided mask"])
def test_layouts_and_mask_strides(rng, layout):
    """The mask follows ``x``'s canonical view whatever the memory orders of both."""
    x = random_array(rng, (6, 5, 40), np.float32)
    where = rng.random((6, 1, 40)) < 0.7
    axis = 1
    if layout == "channels-last":
        x, where, axis = np.moveaxis(x, 1, -1), np.moveaxis(where, 1, -1), -1
    elif layout == "fortran":
        x, where = np.asfortranarray(x), np.asfortranarray(where)
    else:
        where = (rng.random((6, 1, 80)) < 0.7)[:, :, ::2]
    for name in ("batch_norm", "instance_norm", "group_norm"):
        groups = 5 if name == "group_norm" else None
        y, *stats = forward(name, x, where, axis=axis, num_groups=groups)
        ref_y, ref_stats, _, _ = masked_forward(name, x, where, axis=axis, num_groups=groups)
        assert_close(y, ref_y, np.float32, scale=2)
        for got, want in zip(stats, ref_stats):
            assert_close(got, want, np.float32)


def test_a_mask_varying_inside_a_merged_block(rng):
    """Layer norm over two axes with a mask broadcast along one of them: partly copied."""
    x = random_array(rng, (3, 4, 5, 6))
    where = rng.random((3, 1, 5, 1)) < 0.7
    y, mean, rstd = nbn.layer_norm_forward(x, axis=(1, 2, 3), eps=EPS, where=where)
    ref_y, (ref_mean, ref_rstd), _, _ = masked_forward("layer_norm", x, where, axis=(1, 2, 3))
    assert_close(y, ref_y, np.float64)
    assert_close(mean, ref_mean, np.float64)
    assert_close(rstd, ref_rstd, np.float64)


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm"])
def test_every_kernel_path(rng, monkeypatch, name):
    """Whole and split groups, row and slab regimes, serial and parallel variants."""
    from numbanorm import _driver, _kernels

    monkeypatch.setattr(_kernels, "FUSE_MAX_ELEMENTS", 4096)
    _kernels.plan_tasks.cache_clear()
    _driver._plain_plan.cache_clear()
    shapes = {
        "batch_norm": [((256, 2, 64), 1), ((5000, 5), 1), ((2000, 3), -1), ((8, 48, 100), 1)],
        "layer_norm": [((40, 64), -1), ((3, 2000), -1), ((200, 8), -1)],
        "group_norm": [((3, 2000, 6), -1), ((17, 10, 6), -1), ((5, 6, 40), 1)],
    }[name]
    try:
        for shape, axis in shapes:
            x = random_array(rng, shape, np.float32, loc=1e3)
            where = rng.random(shape) < 0.7
            options = dict(axis=axis, num_groups=2 if name == "group_norm" else None)
            y, *stats = forward(name, x, where, **options)
            ref_y, ref_stats, _, _ = masked_forward(name, x, where, **options)
            assert_close(y, ref_y, np.float32, scale=2)
            for got, want in zip(stats, ref_stats):
                assert_close(got, want, np.float32)
            dy = random_array(rng, shape, np.float32)
            got = backward(name, dy, x, stats, where, **options)
            want = masked_backward(name, dy, x, where, **options)
            for g, w in zip(got, want):
                assert_close(g, w, np.float32, scale=10)
    finally:
        monkeypatch.undo()
        _kernels.plan_tasks.cache_clear()
        _driver._plain_plan.cache_clear()


# ----------------------------------------------------------------------------
# Finite differences and the packed valid frames


@pytest.mark.parametrize("name", list(NORM_SHAPES))
def test_backward_is_the_derivative(rng, name):
    """Central differences of ``sum(y * dy)`` in float64, at selected and padded elements."""
    x, where, weight, bias, options = _case(rng, name, list(NORM_SHAPES[name][3])[0])
    dy = rng.standard_normal(x.shape)
    y, *stats = forward(name, x, where, weight, bias, **options)
    dx, dweight, *dbias = backward(name, dy, x, stats, where, weight, **options)
    h = 1e-6
    mask = np.broadcast_to(where, x.shape)
    picks = [
        tuple(np.argwhere(mask)[3]),
        tuple(np.argwhere(~mask)[2]),
        tuple(np.argwhere(mask)[-1]),
    ]
    for index in picks:
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        numeric = (
            (forward(name, up, where, weight, bias, **options)[0] * dy).sum()
            - (forward(name, down, where, weight, bias, **options)[0] * dy).sum()
        ) / (2 * h)
        np.testing.assert_allclose(dx[index], numeric, rtol=1e-5, atol=1e-7)
    up, down = weight.copy(), weight.copy()
    up[1] += h
    down[1] -= h
    numeric = (
        (forward(name, x, where, up, bias, **options)[0] * dy).sum()
        - (forward(name, x, where, down, bias, **options)[0] * dy).sum()
    ) / (2 * h)
    np.testing.assert_allclose(dweight.reshape(-1)[1], numeric, rtol=1e-5, atol=1e-7)


def _padded_sequences(rng, dtype=np.float32):
    N, C, T = 5, 4, 30
    lengths = np.array([30, 12, 0, 21, 1])
    x = random_array(rng, (N, C, T), dtype, loc=2.0)
    where = np.arange(T) < lengths[:, None, None]
    packed = np.concatenate([x[n, :, : lengths[n]].T for n in range(N)])  # (frames, C)
    return x, where, packed, lengths


def test_batch_norm_over_padded_sequences_is_batch_norm_over_the_valid_frames(rng):
    x, where, packed, lengths = _padded_sequences(rng)
    C = x.shape[1]
    weight, bias = rng.standard_normal(C), rng.standard_normal(C)
    running = [np.zeros(C), np.ones(C)]
    packed_running = [np.zeros(C), np.ones(C)]
    y, mean, rstd = nbn.batch_norm_forward(x, *running, weight, bias, where=where)
    y_packed, mean_packed, rstd_packed = nbn.batch_norm_forward(
        packed, *packed_running, weight, bias
    )
    valid = np.concatenate([y[n, :, : lengths[n]].T for n in range(len(lengths))])
    assert_close(valid, y_packed, np.float32)
    assert_close(mean, mean_packed, np.float32)
    assert_close(rstd, rstd_packed, np.float32)
    for got, want in zip(running, packed_running):
        assert_close(got, want, np.float32)
    padded_mean = nbn.batch_norm_forward(x)[1]
    assert np.abs(padded_mean - mean_packed).max() > 0.1  # padding counted: wrong statistics
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy_packed = np.concatenate([dy[n, :, : lengths[n]].T for n in range(len(lengths))])
    dx, dweight, dbias = nbn.batch_norm_backward(dy * where, x, mean, rstd, weight, where=where)
    dx_packed, dweight_packed, dbias_packed = nbn.batch_norm_backward(
        dy_packed, packed, mean_packed, rstd_packed, weight
    )
    valid_dx = np.concatenate([dx[n, :, : lengths[n]].T for n in range(len(lengths))])
    assert_close(valid_dx, dx_packed, np.float32, scale=10)
    assert_close(dweight, dweight_packed, np.float32, scale=10)
    assert_close(dbias, dbias_packed, np.float32, scale=10)


def test_batch_norm_over_padded_sequences_matches_pytorch_on_the_packed_frames(rng):
    torch = pytest.importorskip("torch")
    x, where, packed, lengths = _padded_sequences(rng)
    C = x.shape[1]
    weight, bias = rng.standard_normal(C), rng.standard_normal(C)
    running = [np.zeros(C), np.ones(C)]
    torch_running = [torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)]
    y = nbn.batch_norm(x, *running, weight, bias, momentum=0.3, where=where)
    expected = torch.nn.functional.batch_norm(
        torch.from_numpy(packed.astype(np.float64)),
        *torch_running,
        torch.from_numpy(weight),
        torch.from_numpy(bias),
        training=True,
        momentum=0.3,
        eps=1e-5,
    )
    valid = np.concatenate([y[n, :, : lengths[n]].T for n in range(len(lengths))])
    assert_close(valid, expected.numpy(), np.float32)
    for got, want in zip(running, torch_running):
        assert_close(got, want.numpy(), np.float32)


# ----------------------------------------------------------------------------
# Running statistics


def test_batch_norm_running_statistics_use_the_selected_count(rng):
    x = random_array(rng, (6, 3, 8))
    where = rng.random((6, 1, 8)) < 0.5
    running = [np.zeros(3), np.ones(3)]
    nbn.batch_norm(x, *running, momentum=0.5, where=where)
    mask = np.broadcast_to(where, x.shape)
    values = [x[:, c][mask[:, c]] for c in range(3)]
    np.testing.assert_allclose(running[0], [0.5 * v.mean() for v in values])
    np.testing.assert_allclose(running[1], [0.5 + 0.5 * v.var(ddof=1) for v in values])


def test_instance_norm_running_statistics_average_the_counted_instances(rng):
    x = random_array(rng, (4, 2, 10))
    where = np.ones((4, 1, 10), bool)
    where[1] = False  # an empty instance
    where[2, 0, 1:] = False  # one selected element: no variance
    running = [np.zeros(2), np.ones(2)]
    nbn.instance_norm(x, *running, momentum=1.0, where=where)
    counted = [0, 3]
    np.testing.assert_allclose(running[0], x[counted].mean(axis=(0, 2)))
    np.testing.assert_allclose(running[1], x[counted].var(axis=2, ddof=1).mean(axis=0))


@pytest.mark.parametrize(
    "name,where_shape,empty",
    [("batch_norm", (3, 1, 4), np.s_[:, :, 1:]), ("instance_norm", (3, 1, 4), np.s_[:, :, 1:])],
)
def test_training_with_fewer_than_two_selected_raises_and_changes_nothing(
    rng, name, where_shape, empty
):
    x = random_array(rng, (3, 2, 4))
    where = np.ones(where_shape, bool)
    where[empty] = False
    if name == "batch_norm":
        where[1:] = False
    running = [np.full(2, 0.25), np.full(2, 2.0)]
    out = np.full(x.shape, 7.0)
    function = getattr(nbn, name)
    message = "spatial element" if name == "instance_norm" else "value per channel"
    with pytest.raises(ValueError, match=message):
        function(x, *running, where=where, out=out)
    np.testing.assert_array_equal(running[0], 0.25)
    np.testing.assert_array_equal(running[1], 2.0)
    np.testing.assert_array_equal(out, 7.0)


def test_evaluation_ignores_the_mask(rng):
    """With the running statistics nothing is computed from ``x``: the mask changes nothing."""
    x = random_array(rng, (3, 2, 4))
    running = [rng.standard_normal(2), rng.random(2) + 0.5]
    where = rng.random((3, 1, 4)) < 0.5
    y, mean, rstd = nbn.batch_norm_forward(x, *running, training=False, where=where)
    np.testing.assert_array_equal(y, nbn.batch_norm(x, *running, training=False))
    dy = rng.standard_normal(x.shape)
    for got, want in zip(
        nbn.batch_norm_backward(dy, x, mean, rstd, training=False, where=where),
        nbn.batch_norm_backward(dy, x, mean, rstd, training=False),
    ):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------
# Bad masks


BAD = [
    ("integers", lambda x: np.ones(x.shape, np.int8), TypeError, "where must be a boolean"),
    ("floats", lambda x: np.ones(x.shape), TypeError, "where must be a boolean"),
    ("shape", lambda x: np.ones((2, 4), bool), ValueError, r"\(2, 4\).*\(2, 3, 4\)"),
    ("too many axes", lambda x: np.ones((1, 2, 3, 4), bool), ValueError, r"\(1, 2, 3, 4\)"),
]


@pytest.mark.parametrize("label,make,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_masks_are_refused_and_change_nothing(rng, label, make, error, message):
    x = random_array(rng, (2, 3, 4))
    bad = make(x)
    running = [np.zeros(3), np.ones(3)]
    out = np.full(x.shape, 7.0)
    calls = [
        lambda: nbn.batch_norm(x, *running, where=bad, out=out),
        lambda: nbn.layer_norm(x, where=bad, out=out),
        lambda: nbn.group_norm_forward(x, 3, where=bad),
        lambda: nbn.instance_norm_backward(x, x, np.zeros((2, 3)), np.ones((2, 3)), where=bad),
        lambda: nbn.rms_norm_backward(x, x, np.ones((2, 3)), where=bad),
        lambda: nbn.moments(x, axis=0, where=bad),
    ]
    for call in calls:
        with pytest.raises(error, match=message):
            call()
    np.testing.assert_array_equal(running[0], 0.0)
    np.testing.assert_array_equal(running[1], 1.0)
    np.testing.assert_array_equal(out, 7.0)


# ----------------------------------------------------------------------------
# moments


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
@pytest.mark.parametrize(
    "axis,where_shape",
    [(None, (4, 5, 6)), (1, (4, 5, 6)), ((0, 2), (4, 1, 6)), (-1, (5, 1)), ((), (4, 5, 6))],
)
@pytest.mark.parametrize("keepdims", [False, True])
def test_moments_is_numpys_mean_and_var_with_where(rng, dtype, axis, where_shape, keepdims):
    x = random_array(rng, (4, 5, 6), dtype)
    where = rng.random(where_shape) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = nbn.moments(x, axis, ddof=1, keepdims=keepdims, where=where)
        ref_mean = np.mean(x, axis, keepdims=keepdims, where=where)
        ref_var = np.var(x, axis, ddof=1, keepdims=keepdims, where=where)
    for got, want in ((mean, ref_mean), (var, ref_var)):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        tolerance = 1e-2 if dtype == np.float16 else 1e-5
        np.testing.assert_allclose(
            np.asarray(got)[finite], np.asarray(want)[finite], rtol=tolerance
        )


def test_moments_of_an_empty_selection_warns_as_numpy(rng):
    x = random_array(rng, (3, 4))
    where = np.zeros((3, 1), bool)
    where[0] = True
    for ddof, expected in ((0, "Mean of empty slice"), (4, "Degrees of freedom <= 0")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mean, var = nbn.moments(x, axis=1, ddof=ddof, where=where)
        assert any(expected in str(w.message) for w in caught)
        assert all(w.category is RuntimeWarning for w in caught)
    assert np.isnan(mean[1:]).all() and np.isnan(var[1:]).all()


# ----------------------------------------------------------------------------
# Random masks


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(list(NORM_SHAPES)),
    seed=st.integers(0, 2**32 - 1),
    density=st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]),
    broadcast=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_random_masks(name, seed, density, broadcast):
    """Empty, sparse, dense and full groups, broadcast along any axes."""
    rng = np.random.default_rng(seed)
    shape, axis, num_groups, _ = NORM_SHAPES[name]
    x = random_array(rng, shape, np.float64, loc=5.0)
    where = rng.random(tuple(1 if b else n for b, n in zip(broadcast, shape))) < density
    options = dict(axis=axis, num_groups=num_groups)
    if name in ("batch_norm", "instance_norm"):
        options["training"] = True
    y, *stats = forward(name, x, where, axis=axis, num_groups=num_groups)
    ref_y, ref_stats, _, _ = masked_forward(name, x, where, axis=axis, num_groups=num_groups)
    assert_close(y, ref_y, np.float64, scale=2)
    for got, want in zip(stats, ref_stats):
        assert_close(got, want, np.float64)
    dy = rng.standard_normal(shape)
    got = backward(name, dy, x, stats, where, axis=axis, num_groups=num_groups)
    want = masked_backward(name, dy, x, where, axis=axis, num_groups=num_groups)
    for g, w in zip(got, want):
        assert_close(g, w, np.float64, scale=10)


@settings(max_examples=30, deadline=None)
@given(
    data=hnp.arrays(np.float64, (3, 7), elements=st.floats(-1e3, 1e3)),
    where=hnp.arrays(np.bool_, st.sampled_from([(3, 7), (3, 1), (1, 7), (7,)])),
    axis=st.sampled_from([None, 0, 1, (0, 1)]),
)
def test_random_moments(data, where, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = nbn.moments(data, axis, where=where)
        ref_mean, ref_var = np.mean(data, axis, where=where), np.var(data, axis, where=where)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(var, ref_var, rtol=1e-9, atol=1e-7)


def test_out_overlapping_the_mask_gives_the_result_of_separate_arrays(rng):
    """The output written over the mask's bytes must not change what the statistics read."""
    x = random_array(rng, (4, 3, 64))
    buffer = np.zeros(x.nbytes, np.uint8)
    out = buffer.view(np.float64).reshape(x.shape)
    where = buffer[8 : 8 + 4 * 64].view(bool).reshape(4, 1, 64)
    where[...] = rng.random(where.shape) < 0.7
    expected = nbn.batch_norm(x, where=where.copy())
    np.testing.assert_array_equal(nbn.batch_norm(x, where=where, out=out), expected)


@pytest.mark.parametrize(
    "shape4", [(1, 1000, 7, 1), (1, 257, 3, 5), (3, 1, 4, 50), (2, 300, 2, 1), (1, 0, 3, 1)]
)
@pytest.mark.parametrize("broadcast", [None, 1, 3])
def test_group_counts_match_numpy(rng, shape4, broadcast):
    """The host backend's selected counts per (b, c) group, in every task split of ``O``
    (more rows than tasks, an uneven last share, none) and with a broadcast axis."""
    from numbanorm._engine import group_counts

    mask_shape = list(shape4)
    if broadcast is not None:
        mask_shape[broadcast] = 1
    mask4 = np.broadcast_to(rng.random(mask_shape) < 0.6, shape4)
    np.testing.assert_array_equal(group_counts(mask4), mask4.sum(axis=(1, 3)))
