"""The backend contract (``numbanorm._backends.Backend``), checked on every backend.

Each method is called directly, through ``backend_for``, on small inputs: the
host backend always, and the CUDA backend where ``numbanorm.cuda_available()``
(on a GPU, or under the Numba CUDA simulator, as ``tests/test_gpu_simulator.py``
runs this file).  Results are compared with NumPy float64 references of the
conventions that ``_backends.py`` documents.
"""

import math
import warnings

import numpy as np
import pytest

import numbanorm
from numbanorm._backends import backend_for

from helpers import assert_close, random_array


def _placements():
    """How a host array becomes an argument of each available backend."""
    yield pytest.param(np.array, id="host")
    if numbanorm.cuda_available():
        from numba import cuda

        yield pytest.param(lambda a: cuda.to_device(np.ascontiguousarray(a)), id="cuda")


@pytest.fixture(params=list(_placements()))
def place(request):
    return request.param


# (id, shape, roles): canonical views as the norms make them (see ``_layout.py``).
# With the CUDA simulator's launch sizes, "layer" and "group" take the rows
# regime, "batch NCHW" and "channels-last" the columns regime (on a GPU, all
# take the columns regime: their rows are short).
VIEWS = [
    ("layer", (3, 8), "SW"),
    ("batch NCHW", (2, 3, 1, 4, 5), "RCWRR"),
    ("channels-last", (2, 5, 3, 1), "RRCW"),
    ("group", (2, 2, 3, 4), "SCWR"),
]
view_cases = pytest.mark.parametrize(
    "shape,roles", [v[1:] for v in VIEWS], ids=[v[0] for v in VIEWS]
)
EPS = 1e-3


class Setup:
    """``x`` on a backend, its canonical view, and the NumPy geometry of references.

    Statistics are ``(B, C)`` on the backend; :meth:`from_groups` broadcasts
    them against ``x``.  Parameters are ``(C, W)``; :meth:`broadcast_param`
    does the same for them.
    """

    def __init__(self, place, shape, roles, dtype, rng):
        self.place = place
        self.shape = shape
        self.roles = roles
        data = random_array(rng, shape, dtype)
        self.x = data.astype(np.float64)
        placed = place(data)
        self.backend = backend_for(placed)
        self.xc, _, _ = self.backend.input(placed)
        self.canon = self.backend.view(self.xc, shape, roles)
        self.reduced = self.axes("RW")
        self.kept = self.axes("SC")
        self.groups2 = self.canon.shape4[0], self.canon.shape4[2]
        self.params2 = tuple(math.prod(shape[a] for a in self.axes(r)) for r in "CW")
        self.count = math.prod(shape[a] for a in self.reduced)

    def axes(self, letters):
        return tuple(a for a, role in enumerate(self.roles) if role in letters)

    def host(self, a):
        return np.asarray(self.backend.to_host(a))

    def mean_over(self, a):
        """``a`` averaged over each group."""
        return a.mean(axis=self.reduced, keepdims=True)

    def from_groups(self, stat):
        """A host ``(B, C)`` statistic broadcastable against ``x``."""
        stat_axes = list(self.canon.stat_axes)
        t = np.reshape(stat, [self.shape[a] for a in stat_axes])
        t = t.transpose([stat_axes.index(a) for a in self.kept])
        return np.expand_dims(t, self.reduced)

    def to_groups(self, stat):
        """The inverse of :meth:`from_groups`."""
        t = np.squeeze(stat, self.reduced).transpose(
            [self.kept.index(a) for a in self.canon.stat_axes]
        )
        return t.reshape(self.groups2)

    def broadcast_param(self, p2):
        """A host ``(C, W)`` parameter broadcastable against ``x``."""
        return np.reshape(p2, [n if role in "CW" else 1 for n, role in zip(self.shape, self.roles)])

    def param_sums(self, a):
        """``a`` summed per ``(C, W)`` parameter."""
        return a.sum(axis=self.axes("SR")).reshape(self.params2)

    def param2(self, rng):
        """A random ``(C, W)`` parameter on the backend, and its host value."""
        value = rng.standard_normal(self.params2)
        return self.backend.param2(self.place(value.ravel()), self.params2, 0.0), value

    def statistics(self, input_stats, centered, weight2):
        """``(mean, rstd)`` on the backend: from ``x``, or from running statistics."""
        backend = self.backend
        if input_stats:
            _, mean, _, rstd, _ = backend.normalize(
                self.canon,
                weight2,
                weight2,
                None,
                eps=EPS,
                centered=centered,
                stats=None,
                update=None,
            )
        else:
            C = self.groups2[1]
            running = self.place(np.linspace(-1, 1, C)), self.place(np.linspace(0.5, 2, C))
            mean, rstd = backend.running_groups(running, self.groups2, EPS)
        if not centered:
            mean = backend.group_zeros(self.canon)
        return mean, rstd


@pytest.mark.parametrize(
    "dtype,result,stat",
    [
        (np.float16, np.float16, np.float32),
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.int32, np.float64, np.float64),
        (np.bool_, np.float64, np.float64),
    ],
)
def test_input_gives_the_result_and_statistics_dtypes(place, rng, dtype, result, stat):
    x = random_array(rng, (3, 4), dtype)
    placed = place(x)
    backend = backend_for(placed)
    xc, result_dtype, stat_dtype = backend.input(placed)
    assert (result_dtype, stat_dtype) == (np.dtype(result), np.dtype(stat))
    assert xc.dtype.kind == "f" and xc.shape == x.shape
    np.testing.assert_array_equal(np.asarray(backend.to_host(xc)), x.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("stats,centered", [("input", True), ("input", False), ("given", True)])
@view_cases
def test_normalize(place, rng, shape, roles, dtype, stats, centered):
    s = Setup(place, shape, roles, dtype, rng)
    weight2, w = s.param2(rng)
    bias2, b = (
        s.param2(rng) if centered else (s.backend.param2(None, s.params2, 0.0), np.zeros(s.params2))
    )
    C = s.groups2[1]
    running = rng.standard_normal(C), rng.random(C) + 0.5
    given = (
        s.backend.running_groups(tuple(map(place, running)), s.groups2, EPS)
        if stats == "given"
        else None
    )
    y, mean, var, rstd, count = s.backend.normalize(
        s.canon, weight2, bias2, None, eps=EPS, centered=centered, stats=given, update=None
    )
    if given is None:
        ref_mean = s.mean_over(s.x) if centered else np.zeros_like(s.mean_over(s.x))
        ref_var = s.mean_over((s.x - ref_mean) ** 2)
        assert_close(s.host(var), s.to_groups(ref_var), dtype)
    else:
        assert var is None
        ref_mean, ref_var = (s.from_groups(np.broadcast_to(r, s.groups2)) for r in running)
    ref_rstd = 1 / np.sqrt(ref_var + EPS)
    assert_close(s.host(mean), s.to_groups(ref_mean), dtype)
    assert_close(s.host(rstd), s.to_groups(ref_rstd), dtype)
    assert y.dtype == s.xc.dtype and count is None
    expected = (s.x - ref_mean) * ref_rstd * s.broadcast_param(w) + s.broadcast_param(b)
    assert_close(s.host(y), expected, dtype, scale=2)


def _masks(shape, rng):
    """Masks of ``shape``'s input: dense, broadcast along each axis in turn, one empty group."""
    yield "full", rng.random(shape) < 0.6
    for a in range(len(shape)):
        if shape[a] > 1:
            reduced = tuple(1 if b == a else n for b, n in enumerate(shape))
            yield f"broadcast {a}", rng.random(reduced) < 0.6
    empty = rng.random(shape) < 0.6
    empty[(0,) * len(shape)] = False
    yield "sparse", empty & (rng.random(shape) < 0.2)


def _masked_reference(s, mask, centered):
    """``(count, mean, var, rstd)`` of the selected elements, broadcastable against ``x``."""
    m = np.broadcast_to(mask, s.shape)
    count = m.sum(axis=s.reduced, keepdims=True).astype(np.float64)
    some = np.maximum(count, 1)
    mean = (np.where(m, s.x, 0).sum(axis=s.reduced, keepdims=True) / some) * centered
    var = np.where(m, (s.x - mean) ** 2, 0).sum(axis=s.reduced, keepdims=True) / some
    rstd = np.where(count > 0, 1 / np.sqrt(var + EPS), 0.0)
    return count, mean, var, rstd


@pytest.mark.parametrize("centered", [True, False])
@view_cases
def test_normalize_with_a_mask(place, rng, shape, roles, centered):
    """Statistics over the selected elements; ``y`` for all of them, the bias for empty groups."""
    for name, mask in _masks(shape, rng):
        s = Setup(place, shape, roles, np.float32, rng)
        weight2, w = s.param2(rng)
        bias2, b = s.param2(rng)
        mask4 = s.backend.mask(s.canon, place(mask), shape)
        y, mean, var, rstd, count = s.backend.normalize(
            s.canon,
            weight2,
            bias2,
            None,
            eps=EPS,
            centered=centered,
            stats=None,
            update=None,
            mask=mask4,
        )
        ref_count, ref_mean, ref_var, ref_rstd = _masked_reference(s, mask, centered)
        np.testing.assert_array_equal(s.host(count), s.to_groups(ref_count), err_msg=name)
        np.testing.assert_array_equal(s.backend.group_counts(mask4), s.to_groups(ref_count))
        assert_close(s.host(mean), s.to_groups(ref_mean), np.float32)
        assert_close(s.host(rstd), s.to_groups(ref_rstd), np.float32)
        assert_close(s.host(var), s.to_groups(ref_var), np.float32)
        expected = (s.x - ref_mean) * ref_rstd * s.broadcast_param(w) + s.broadcast_param(b)
        assert_close(s.host(y), expected, np.float32, scale=2)


@pytest.mark.parametrize("centered", [True, False])
@view_cases
def test_backward_with_a_mask(place, rng, shape, roles, centered):
    """The feedback through the statistics reaches the selected elements, over their count."""
    for name, mask in _masks(shape, rng):
        s = Setup(place, shape, roles, np.float64, rng)
        weight2, w = s.param2(rng)
        mask4 = s.backend.mask(s.canon, place(mask), shape)
        _, mean, _, rstd, _ = s.backend.normalize(
            s.canon,
            weight2,
            weight2,
            None,
            eps=EPS,
            centered=centered,
            stats=None,
            update=None,
            mask=mask4,
        )
        if not centered:
            mean = s.backend.group_zeros(s.canon)
        dy = rng.standard_normal(shape)
        dx, dweight2, dbias2 = s.backend.backward(
            s.canon,
            place(dy),
            mean,
            rstd,
            weight2,
            True,
            centered,
            out=None,
            gradients=(s.params2, np.dtype(np.float64), True),
            mask=mask4,
        )
        count, _, _, r = _masked_reference(s, mask, centered)
        m = np.broadcast_to(mask, shape)
        g = dy * s.broadcast_param(w)
        x_hat = (s.x - s.from_groups(s.host(mean))) * r
        some = np.maximum(count, 1)
        feedback = g.sum(axis=s.reduced, keepdims=True) * centered + x_hat * (
            (g * x_hat).sum(axis=s.reduced, keepdims=True)
        )
        expected = r * (g - np.where(m, feedback / some, 0.0))
        assert_close(s.host(dx), expected, np.float64, err_msg=name)
        assert_close(s.host(dweight2), s.param_sums(dy * x_hat), np.float64, scale=10)
        assert_close(s.host(dbias2), s.param_sums(dy), np.float64, scale=10)


@view_cases
def test_input_gradient_with_a_mask(place, rng, shape, roles):
    """``dx`` from host sums over more than ``x``, with the selected counts of every part."""
    s = Setup(place, shape, roles, np.float64, rng)
    mask = rng.random(shape) < 0.6
    weight2, w = s.param2(rng)
    mask4 = s.backend.mask(s.canon, place(mask), shape)
    _, mean, _, rstd, count = s.backend.normalize(
        s.canon, weight2, weight2, None, eps=EPS, centered=True, stats=None, update=None, mask=mask4
    )
    dy = rng.standard_normal(shape)
    group_g, group_gxhat = rng.standard_normal((2, *s.groups2)) * s.count
    counts = 3 * s.host(count) + 1
    dx = s.backend.input_gradient(
        s.canon, place(dy), mean, rstd, weight2, group_g, group_gxhat, counts, mask4
    )
    r = s.from_groups(s.host(rstd))
    x_hat = (s.x - s.from_groups(s.host(mean))) * r
    feedback = (s.from_groups(group_g) + x_hat * s.from_groups(group_gxhat)) / s.from_groups(counts)
    expected = r * (dy * s.broadcast_param(w) - np.where(mask, feedback, 0.0))
    assert_close(s.host(dx), expected, np.float64)


@pytest.mark.parametrize(
    "input_stats,centered", [(True, True), (True, False), (False, True), (False, False)]
)
@view_cases
def test_backward(place, rng, shape, roles, input_stats, centered):
    s = Setup(place, shape, roles, np.float64, rng)
    weight2, w = s.param2(rng)
    mean, rstd = s.statistics(input_stats, centered, weight2)
    dy = rng.standard_normal(shape)
    dx, dweight2, dbias2 = s.backend.backward(
        s.canon,
        place(dy),
        mean,
        rstd,
        weight2,
        input_stats,
        centered,
        out=None,
        gradients=(s.params2, np.dtype(np.float64), True),
    )
    m, r = (s.from_groups(s.host(a)) for a in (mean, rstd))
    g = dy * s.broadcast_param(w)
    x_hat = (s.x - m) * r
    expected = g
    if input_stats:
        expected = g - s.mean_over(g) * centered - x_hat * s.mean_over(g * x_hat)
    assert dx.dtype == s.xc.dtype
    assert_close(s.host(dx), r * expected, np.float64)
    assert_close(s.host(dweight2), s.param_sums(dy * x_hat), np.float64, scale=10)
    assert_close(s.host(dbias2), s.param_sums(dy), np.float64, scale=10)


@view_cases
def test_parameter_sums_are_host_float64(place, rng, shape, roles):
    s = Setup(place, shape, roles, np.float64, rng)
    weight2, _ = s.param2(rng)
    mean, rstd = s.statistics(True, True, weight2)
    dy = rng.standard_normal(shape)
    sums = s.backend.parameter_sums(s.canon, place(dy), mean, rstd, weight2)
    assert all(type(a) is np.ndarray and a.dtype == np.float64 for a in sums)
    x_hat = (s.x - s.from_groups(s.host(mean))) * s.from_groups(s.host(rstd))
    for got, expected in zip(sums, (s.param_sums(dy * x_hat), s.param_sums(dy))):
        assert_close(got, expected, np.float64, scale=10)


@view_cases
def test_input_gradient_from_group_sums(place, rng, shape, roles):
    """``dx`` from host sums ``sum(dy*w)`` and ``sum(dy*w*x_hat)`` over more than ``x``."""
    s = Setup(place, shape, roles, np.float64, rng)
    weight2, w = s.param2(rng)
    mean, rstd = s.statistics(True, True, weight2)
    dy = rng.standard_normal(shape)
    group_g, group_gxhat = rng.standard_normal((2, *s.groups2)) * s.count
    count = 3 * s.count
    dx = s.backend.input_gradient(
        s.canon, place(dy), mean, rstd, weight2, group_g, group_gxhat, count
    )
    r = s.from_groups(s.host(rstd))
    x_hat = (s.x - s.from_groups(s.host(mean))) * r
    expected = r * (
        dy * s.broadcast_param(w)
        - s.from_groups(group_g) / count
        - x_hat * s.from_groups(group_gxhat) / count
    )
    assert dx.dtype == s.xc.dtype
    assert_close(s.host(dx), expected, np.float64)


@view_cases
def test_statistics_and_gradients_out(place, rng, shape, roles):
    """``stats_out`` to the kept axes in either order; ``gradient_out`` to a weight's shape."""
    s = Setup(place, shape, roles, np.float64, rng)
    weight2, _ = s.param2(rng)
    mean, _ = s.statistics(True, True, weight2)
    expected = np.squeeze(s.mean_over(s.x), s.reduced)
    for axes in (s.kept, s.kept[::-1]):
        stat = s.host(s.backend.stats_out(s.canon, mean, list(axes), np.dtype(np.float32)))
        assert stat.dtype == np.float32
        assert_close(stat, expected.transpose([s.kept.index(a) for a in axes]), np.float32)
    g2 = s.backend.from_host(np.arange(float(math.prod(s.params2))).reshape(s.params2))
    grad = s.host(s.backend.gradient_out(g2, (math.prod(s.params2),), np.dtype(np.float32)))
    assert grad.dtype == np.float32
    np.testing.assert_array_equal(grad, np.arange(math.prod(s.params2)))


# (shape, reduced axes) of welford_state and moments
REDUCTIONS = [
    ((3, 4, 2), (0, 2)),
    ((3, 4, 2), (1,)),
    ((3, 4, 2), ()),
    ((3, 4, 2), (0, 1, 2)),
    ((0, 3), (0,)),
]
reduction_cases = pytest.mark.parametrize(
    "shape,axes", REDUCTIONS, ids=[f"{s}-{a}" for s, a in REDUCTIONS]
)


def _reduction(place, rng, shape, axes):
    """The backend of ``x``, ``x`` as it computes, the kept shape, and ``(mean, M2)``.

    Both are NaN over no elements.
    """
    x = random_array(rng, shape, np.float64, loc=100.0)
    placed = place(x)
    backend = backend_for(placed)
    xc, _, _ = backend.input(placed)
    kept = tuple(n for a, n in enumerate(shape) if a not in axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's mean of an empty slice
        mean = x.mean(axis=axes, keepdims=True)
    m2 = ((x - mean) ** 2).sum(axis=axes) if x.size else np.full(kept, np.nan)
    return backend, xc, kept, np.squeeze(mean, axes), m2


@reduction_cases
def test_welford_state_is_host_float64(place, rng, shape, axes):
    backend, xc, kept, mean, m2 = _reduction(place, rng, shape, axes)
    count, got_mean, got_m2 = backend.welford_state(xc, axes)
    assert count == math.prod(shape[a] for a in axes)
    for got, expected in ((got_mean, mean), (got_m2, m2)):
        assert type(got) is np.ndarray and got.dtype == np.float64 and got.shape == kept
        assert_close(got, expected, np.float64, scale=100)


@reduction_cases
def test_welford_state_and_moments_with_where(place, rng, shape, axes):
    """Counts, statistics and moments over the selected elements; NaN where there are none."""
    x = random_array(rng, shape, np.float64, loc=100.0)
    where = rng.random(shape[:-1] + (1,)) < 0.7
    backend = backend_for(place(x))
    xc, _, _ = backend.input(place(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.mean(x, axis=axes, where=where)
        var = np.var(x, axis=axes, where=where, ddof=1)
        count = np.sum(np.broadcast_to(where, shape), axis=axes)
        m2 = np.var(x, axis=axes, where=where) * count
        got_count, got_mean, got_m2 = backend.welford_state(xc, axes, place(where))
        *got, moments_count = backend.moments(
            xc, axes, 1, False, np.dtype(np.float64), place(where)
        )
    np.testing.assert_array_equal(got_count, count)
    np.testing.assert_array_equal(moments_count, count)
    for got_stat, expected in ((got_mean, mean), (got_m2, m2), *zip(got, (mean, var))):
        assert_close(np.asarray(backend.to_host(got_stat)), expected, np.float64, scale=100)


@pytest.mark.parametrize("keepdims", [False, True])
@reduction_cases
def test_moments(place, rng, shape, axes, keepdims):
    backend, xc, kept, mean, m2 = _reduction(place, rng, shape, axes)
    dof = math.prod(shape[a] for a in axes) - 1
    *got, count = backend.moments(xc, axes, 1, keepdims, np.dtype(np.float32))
    assert count == dof + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / max(dof, 0)
    out_shape = tuple(1 if a in axes else n for a, n in enumerate(shape)) if keepdims else kept
    for stat, expected in zip(got, (mean, var)):
        stat = np.asarray(backend.to_host(stat))
        assert stat.dtype == np.float32 and stat.shape == out_shape
        assert_close(stat, np.reshape(expected, out_shape), np.float32)


def test_running_statistics(place, rng):
    """``running_groups`` broadcasts them over ``B``; ``update_running`` blends the average in."""
    running_mean, running_var = rng.standard_normal(3), rng.random(3) + 0.5
    backend = backend_for(place(running_mean))
    mean, rstd = backend.running_groups((place(running_mean), place(running_var)), (2, 3), EPS)
    assert_close(backend.to_host(mean), np.broadcast_to(running_mean, (2, 3)), np.float64)
    assert_close(
        backend.to_host(rstd), np.broadcast_to(1 / np.sqrt(running_var + EPS), (2, 3)), np.float64
    )
    batch_mean, batch_var = rng.standard_normal((2, 2, 3))
    device_running = place(running_mean), place(running_var)
    backend.update_running(
        *device_running, backend.from_host(batch_mean), backend.from_host(batch_var), 0.25, 1.5
    )
    for got, old, new in zip(
        device_running, (running_mean, running_var), (batch_mean.mean(0), 1.5 * batch_var.mean(0))
    ):
        assert_close(backend.to_host(got), 0.75 * old + 0.25 * new, np.float64)


@view_cases
def test_normalize_folds_its_statistics_into_the_running_ones(place, rng, shape, roles):
    """``normalize`` with ``update`` blends as ``update_running`` after it does."""
    s = Setup(place, shape, roles, np.float64, rng)
    C = s.groups2[1]
    weight2, bias2 = (s.backend.param2(None, s.params2, fill) for fill in (1.0, 0.0))
    start = rng.standard_normal(C), rng.random(C) + 0.5
    folded, separate = (tuple(place(a.copy()) for a in start) for _ in range(2))
    _, mean, var, _, _ = s.backend.normalize(
        s.canon, weight2, bias2, None, eps=EPS, centered=True, stats=None, update=None
    )
    s.backend.update_running(*separate, mean, var, 0.25, 1.5)
    s.backend.normalize(
        s.canon,
        weight2,
        bias2,
        None,
        eps=EPS,
        centered=True,
        stats=None,
        update=(*folded, 0.25, 1.5),
    )
    for got, expected, old in zip(folded, separate, start):
        assert_close(s.host(got), s.host(expected), np.float64)
        assert not np.allclose(s.host(got), old)


def test_deliver_returns_out_holding_the_result(place, rng):
    """The forward into ``out`` directly, a result copied into ``out``, and a new result."""
    s = Setup(place, (2, 3, 1, 4), "RCWR", np.float64, rng)
    backend, public, dtype = s.backend, (2, 3, 4), np.dtype(np.float64)
    weight2, bias2 = (backend.param2(None, s.params2, fill) for fill in (1.0, 0.0))
    deviation = s.x - s.mean_over(s.x)
    expected = (deviation / np.sqrt(s.mean_over(deviation**2) + EPS)).reshape(public)
    out = place(np.zeros(public))
    target = backend.reshaped(out, s.shape)
    y = backend.normalize(
        s.canon, weight2, bias2, target, eps=EPS, centered=True, stats=None, update=None
    )[0]
    assert_close(s.host(out), expected, dtype)  # a C-ordered out takes the result directly
    assert backend.deliver(y, target, out, public, dtype) is out
    other = place(np.zeros(public))
    assert backend.deliver(y, backend.reshaped(other, s.shape), other, public, dtype) is other
    assert_close(s.host(other), expected, dtype)
    new = backend.deliver(y, None, None, public, dtype)
    assert new.shape == public and new.dtype == dtype
    assert_close(s.host(new), expected, dtype)


def test_small_operations(place):
    """Argument arrays, ``param2``, ``group_zeros`` and the transfers."""
    a = np.arange(6.0).reshape(2, 3)
    backend = backend_for(place(a))
    np.testing.assert_array_equal(backend.to_host(backend.array(place(a), "weight")), a)
    np.testing.assert_array_equal(backend.to_host(backend.out_array(place(a))), a)
    assert backend.writeable(backend.out_array(place(a)))
    backend.check_updatable(place(a), "running_mean")
    with pytest.raises(TypeError, match="running_mean"):
        backend.check_updatable(place(a.astype(np.int64)), "running_mean")
    np.testing.assert_array_equal(
        backend.to_host(backend.reshaped(place(a), (3, 2))), a.reshape(3, 2)
    )
    np.testing.assert_array_equal(
        backend.to_host(backend.param2(None, (2, 3), 1.5)), np.full((2, 3), 1.5)
    )
    np.testing.assert_array_equal(backend.to_host(backend.param2(place(a.ravel()), (2, 3), 0.0)), a)
    canon = backend.view(place(a), (2, 3), "SW")
    np.testing.assert_array_equal(backend.to_host(backend.group_zeros(canon)), np.zeros((2, 1)))
    transposed = backend.to_host(backend.from_host(a.T))
    assert type(transposed) is np.ndarray
    np.testing.assert_array_equal(transposed, a.T)
