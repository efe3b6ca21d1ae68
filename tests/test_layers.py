"""The layer classes: against the functional API, against torch.nn modules, state dicts, errors."""

import numpy as np
import pytest

import numbanorm as nbn

from helpers import assert_close

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _data(rng, shape):
    """Input with an offset and a gradient of the same shape, float64."""
    return 0.5 + 2.0 * rng.standard_normal(shape), rng.standard_normal(shape)


def _randomize(layer, rng):
    """Random parameters and running statistics, written in place."""
    for name, value in layer.state_dict().items():
        if name != "num_batches_tracked":
            getattr(layer, name)[...] = rng.uniform(0.5, 1.5, value.shape)


def _snapshot(layer):
    return {name: value.copy() for name, value in layer.state_dict().items()}


# ----------------------------------------------------------------------------
# Each layer is its functional counterpart plus state


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("momentum", [0.2, None])
def test_batch_norm_is_the_functional_api_with_state(rng, axis, momentum):
    layer = nbn.BatchNorm(3, momentum=momentum, axis=axis, dtype=np.float64)
    _randomize(layer, rng)
    shape = (4, 3, 5, 2) if axis == 1 else (4, 5, 2, 3)
    for step, training in enumerate([True, True, False]):
        before = _snapshot(layer)
        x, dy = _data(rng, shape)
        layer.zero_grad()
        y = layer.train(training)(x)
        dx = layer.backward(dy)
        factor = 1.0 / (step + 1) if momentum is None else momentum
        y_ref, mean, rstd = nbn.batch_norm_forward(
            x,
            before["running_mean"],
            before["running_var"],
            before["weight"],
            before["bias"],
            training=training,
            momentum=factor,
            axis=axis,
        )
        dx_ref, *param_grads = nbn.batch_norm_backward(
            dy, x, mean, rstd, before["weight"], training=training, axis=axis
        )
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        # The functional call updated the snapshot's running statistics in place.
        for name in ("running_mean", "running_var"):
            np.testing.assert_array_equal(getattr(layer, name), before[name])
        assert layer.num_batches_tracked == before["num_batches_tracked"] + training
        for name, grad in zip(("weight", "bias"), param_grads):
            np.testing.assert_array_equal(layer.grads[name], grad)


def test_instance_norm_is_the_functional_api_with_state(rng):
    layer = nbn.InstanceNorm(
        3, affine=True, track_running_stats=True, momentum=0.3, dtype=np.float64
    )
    _randomize(layer, rng)
    for training in (True, False):
        before = _snapshot(layer)
        x, dy = _data(rng, (2, 3, 4, 5))
        y = layer.train(training)(x)
        dx = layer.backward(dy)
        y_ref, mean, rstd = nbn.instance_norm_forward(
            x,
            before["running_mean"],
            before["running_var"],
            before["weight"],
            before["bias"],
            use_input_stats=training,
            momentum=0.3,
        )
        dx_ref, dweight, dbias = nbn.instance_norm_backward(
            dy, x, mean, rstd, before["weight"], use_input_stats=training
        )
        for actual, expected in (
            (y, y_ref),
            (dx, dx_ref),
            (layer.grads["weight"], dweight),
            (layer.grads["bias"], dbias),
        ):
            np.testing.assert_array_equal(actual, expected)
        np.testing.assert_array_equal(layer.running_mean, before["running_mean"])
        layer.zero_grad()


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_group_norm_is_the_functional_api(rng, axis):
    layer = nbn.GroupNorm(2, 4, axis=axis, dtype=np.float64)
    _randomize(layer, rng)
    shape = [3, 5, 2]
    shape.insert(axis % 4, 4)
    x, dy = _data(rng, tuple(shape))
    y, dx = layer(x), layer.backward(dy)
    y_ref, mean, rstd = nbn.group_norm_forward(x, 2, layer.weight, layer.bias, axis=axis)
    dx_ref, dweight, dbias = nbn.group_norm_backward(dy, x, 2, mean, rstd, layer.weight, axis=axis)
    for actual, expected in (
        (y, y_ref),
        (dx, dx_ref),
        (layer.grads["weight"], dweight),
        (layer.grads["bias"], dbias),
    ):
        np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(layer.eval()(x), y_ref)


@pytest.mark.parametrize(
    "normalized_shape, axis, functional_axis",
    [
        (5, None, -1),
        ((4, 5), None, (-2, -1)),
        ((3, 5), (1, 3), (1, 3)),
        ((3, 5), (3, 1), (1, 3)),
        (3, 1, 1),
    ],
)
def test_layer_norm_is_the_functional_api(rng, normalized_shape, axis, functional_axis):
    layer = nbn.LayerNorm(normalized_shape, axis=axis, dtype=np.float64)
    _randomize(layer, rng)
    x, dy = _data(rng, (2, 3, 4, 5))
    y, dx = layer(x), layer.backward(dy)
    y_ref, mean, rstd = nbn.layer_norm_forward(x, layer.weight, layer.bias, axis=functional_axis)
    dx_ref, dweight, dbias = nbn.layer_norm_backward(
        dy, x, mean, rstd, layer.weight, axis=functional_axis
    )
    for actual, expected in (
        (y, y_ref),
        (dx, dx_ref),
        (layer.grads["weight"], dweight),
        (layer.grads["bias"], dbias),
    ):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rms_norm_is_the_functional_api(rng, eps):
    layer = nbn.RMSNorm((4, 5), eps=eps, dtype=np.float64)
    _randomize(layer, rng)
    x, dy = _data(rng, (2, 3, 4, 5))
    y, dx = layer(x), layer.backward(dy)
    y_ref, rrms = nbn.rms_norm_forward(x, layer.weight, axis=(-2, -1), eps=eps)
    dx_ref, dweight = nbn.rms_norm_backward(dy, x, rrms, layer.weight, axis=(-2, -1))
    for actual, expected in ((y, y_ref), (dx, dx_ref), (layer.grads["weight"], dweight)):
        np.testing.assert_array_equal(actual, expected)
    assert set(layer.grads) == {"weight"}


def test_channels_last_batch_norm_equals_channels_first(rng):
    first, last = nbn.BatchNorm(3, dtype=np.float64), nbn.BatchNorm(3, axis=-1, dtype=np.float64)
    _randomize(first, rng)
    last.load_state_dict(first.state_dict())
    for training in (True, False):
        x, dy = _data(rng, (4, 3, 5, 2))
        y = first.train(training)(x)
        dx = first.backward(dy)
        y_last = last.train(training)(np.moveaxis(x, 1, -1))
        dx_last = last.backward(np.moveaxis(dy, 1, -1))
        assert_close(np.moveaxis(y_last, -1, 1), y, np.float64)
        assert_close(np.moveaxis(dx_last, -1, 1), dx, np.float64)
    for name, value in first.state_dict().items():
        assert_close(last.state_dict()[name], value, np.float64)
    for name, grad in first.grads.items():
        assert_close(last.grads[name], grad, np.float64, scale=10)


# ----------------------------------------------------------------------------
# Modes, running statistics, parameters and gradients


def test_evaluation_mode_uses_and_keeps_running_stats(rng):
    layer = nbn.BatchNorm(3, eps=1e-3, dtype=np.float64)
    _randomize(layer, rng)
    before = _snapshot(layer)
    x, _ = _data(rng, (4, 3, 5))
    y = layer.eval()(x)
    scale = before["weight"] / np.sqrt(before["running_var"] + 1e-3)
    expected = (x - before["running_mean"][:, None]) * scale[:, None] + before["bias"][:, None]
    assert_close(y, expected, np.float64)
    assert not layer.training
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert layer.train() is layer and layer.training


@pytest.mark.parametrize("layer_class", [nbn.BatchNorm, nbn.InstanceNorm])
def test_without_running_stats_evaluation_normalizes_with_input_stats(rng, layer_class):
    layer = layer_class(3, track_running_stats=False)
    assert layer.running_mean is None and layer.num_batches_tracked is None
    x, dy = _data(rng, (4, 3, 5))
    y_train = layer(x)
    dx_train = layer.backward(dy)
    layer.eval()
    np.testing.assert_array_equal(layer(x), y_train)
    np.testing.assert_array_equal(layer.backward(dy), dx_train)


@pytest.mark.parametrize("layer_class", [nbn.BatchNorm, nbn.InstanceNorm])
def test_momentum_none_is_the_cumulative_average_of_batch_stats(rng, layer_class):
    layer = layer_class(3, momentum=None, track_running_stats=True, dtype=np.float64)
    _randomize(layer, rng)
    batches = [_data(rng, (4, 3, 6))[0] * scale for scale in (1.0, 3.0, 0.5, 2.0)]
    for x in batches:
        layer(x)
    if layer_class is nbn.BatchNorm:
        batch_stats = [(x.mean(axis=(0, 2)), x.var(axis=(0, 2), ddof=1)) for x in batches]
    else:
        batch_stats = [
            (x.mean(axis=2).mean(axis=0), x.var(axis=2, ddof=1).mean(axis=0)) for x in batches
        ]
    expected_mean, expected_var = np.mean(batch_stats, axis=0)
    assert_close(layer.running_mean, expected_mean, np.float64)
    assert_close(layer.running_var, expected_var, np.float64)
    assert layer.num_batches_tracked == len(batches)


def test_gradients_accumulate_until_zero_grad(rng):
    layer = nbn.LayerNorm(5, dtype=np.float64)
    x, dy = _data(rng, (3, 5))
    layer(x)
    layer.backward(dy)
    once = {name: grad.copy() for name, grad in layer.grads.items()}
    grads_before = dict(layer.grads)
    layer(x)
    layer.backward(dy)
    for name, grad in layer.grads.items():
        assert grad is grads_before[name]
        assert_close(grad, 2 * once[name], np.float64)
    layer.zero_grad()
    for name, grad in layer.grads.items():
        assert grad is grads_before[name] and not grad.any()


def test_parameters_are_the_layer_arrays_for_in_place_updates(rng):
    layer = nbn.GroupNorm(2, 4)
    params = layer.parameters()
    assert list(params) == ["weight", "bias"]
    assert params["weight"] is layer.weight and params["bias"] is layer.bias
    x, _ = _data(rng, (3, 4, 5))
    y = layer(x)
    params["weight"] *= 2
    params["bias"] += 1
    assert_close(layer(x), 2 * y.astype(np.float64) + 1, np.float32)


@pytest.mark.parametrize(
    "layer, names",
    [
        (nbn.BatchNorm(3), ["weight", "bias"]),
        (nbn.BatchNorm(3, affine=False), []),
        (nbn.InstanceNorm(3), []),
        (nbn.LayerNorm(3, bias=False), ["weight"]),
        (nbn.LayerNorm(3, elementwise_affine=False), []),
        (nbn.RMSNorm(3), ["weight"]),
    ],
)
def test_parameters_and_grads_have_the_same_names(layer, names):
    assert list(layer.parameters()) == names
    assert list(layer.grads) == names
    for name in names:
        assert layer.grads[name].shape == layer.parameters()[name].shape


def test_dtype_of_parameters_and_running_stats(rng):
    layer = nbn.BatchNorm(3, dtype=np.float64)
    assert all(
        v.dtype == np.float64 for k, v in layer.state_dict().items() if k != "num_batches_tracked"
    )
    assert layer.num_batches_tracked.dtype == np.int64
    layer.load_state_dict(
        {name: value.astype(np.float32) for name, value in nbn.BatchNorm(3).state_dict().items()}
    )
    assert layer.weight.dtype == np.float64 and layer.running_var.dtype == np.float64
    y = nbn.BatchNorm(3)(_data(rng, (4, 3))[0].astype(np.float32))
    assert y.dtype == np.float32


def test_reset_running_stats(rng):
    layer = nbn.BatchNorm(3)
    layer(_data(rng, (4, 3))[0])
    layer.reset_running_stats()
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0


# ----------------------------------------------------------------------------
# State dicts


def test_state_dict_is_a_copy_and_loads_in_place(rng):
    layer = nbn.BatchNorm(3)
    _randomize(layer, rng)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert state["weight"] is not layer.weight
    weight = layer.weight
    other = nbn.BatchNorm(3)
    other_weight = other.weight
    other.load_state_dict(state)
    assert other.weight is other_weight
    np.testing.assert_array_equal(other.weight, weight)


def test_savez_round_trip(rng, tmp_path):
    layer = nbn.BatchNorm(3, axis=-1)
    _randomize(layer, rng)
    x, _ = _data(rng, (4, 5, 3))
    layer(x)
    np.savez(tmp_path / "bn.npz", **layer.state_dict())
    restored = nbn.BatchNorm(3, axis=-1)
    with np.load(tmp_path / "bn.npz") as saved:
        restored.load_state_dict(saved)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], value)
    assert restored.num_batches_tracked == 1
    np.testing.assert_array_equal(restored.eval()(x), layer.eval()(x))


def test_load_state_dict_missing_unexpected_and_mis_shaped_keys():
    layer = nbn.BatchNorm(3)
    state = nbn.BatchNorm(3).state_dict()
    state["weight"][...] = 7
    before = _snapshot(layer)
    with pytest.raises(KeyError, match=r"missing key\(s\) \['running_var'\]"):
        layer.load_state_dict({k: v for k, v in state.items() if k != "running_var"})
    with pytest.raises(KeyError, match=r"unexpected key\(s\) \['gamma'\]"):
        layer.load_state_dict(dict(state, gamma=np.ones(3)))
    with pytest.raises(ValueError, match=r"size mismatch for 'running_mean'.*\(4,\).*\(3,\)"):
        layer.load_state_dict(dict(state, running_mean=np.zeros(4)))
    with pytest.raises(TypeError, match="'bias' must be a real array"):
        layer.load_state_dict(dict(state, bias=np.array(["a", "b", "c"])))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    layer.load_state_dict({"weight": state["weight"], "gamma": 1}, strict=False)
    np.testing.assert_array_equal(layer.weight, 7)
    np.testing.assert_array_equal(layer.running_var, before["running_var"])


# ----------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (
            nbn.BatchNorm(3),
            (4, 5, 6),
            r"BatchNorm expects 3 channels on axis 1, got input of shape \(4, 5, 6\)",
        ),
        (nbn.BatchNorm(3, axis=-1), (4, 3, 5), r"expects 3 channels on axis -1"),
        (nbn.BatchNorm(3), (3,), r"at least 2 dimensions, got shape \(3,\)"),
        (nbn.BatchNorm(3, axis=3), (4, 3, 5), r"channel axis 3, out of range for input of shape"),
        (nbn.InstanceNorm(3), (4, 3), r"InstanceNorm expects input with at least 3 dimensions"),
        (nbn.GroupNorm(2, 4), (4, 6, 5), r"GroupNorm expects 4 channels on axis 1"),
        (
            nbn.LayerNorm((4, 5)),
            (2, 5, 4),
            r"LayerNorm expects input of sizes \(4, 5\) on axes \(1, 2\)",
        ),
        (nbn.LayerNorm((4, 5)), (5,), r"trailing shape \(4, 5\), got shape \(5,\)"),
        (nbn.RMSNorm(5, axis=0), (4, 5), r"RMSNorm expects input of sizes \(5,\) on axes \(0,\)"),
    ],
)
def test_wrong_input_shape(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(np.zeros(shape))


def test_batch_norm_of_one_value_per_channel_in_training():
    layer = nbn.BatchNorm(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(np.zeros((1, 3)))
    assert layer.num_batches_tracked == 0
    layer.eval()(np.zeros((1, 3)))


def test_backward_needs_one_forward_each(rng):
    layer = nbn.LayerNorm(5)
    x, dy = _data(rng, (3, 5))
    with pytest.raises(RuntimeError, match=r"LayerNorm.backward\(\) called before any forward"):
        layer.backward(dy)
    layer(x)
    with pytest.raises(ValueError, match="dy must have shape"):
        layer.backward(dy[:2])
    layer.backward(dy)
    with pytest.raises(RuntimeError, match="already called for the last forward"):
        layer.backward(dy)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: nbn.GroupNorm(3, 4),
            ValueError,
            r"num_groups must be a positive integer dividing num_channels \(4\), got 3",
        ),
        (lambda: nbn.BatchNorm(0), ValueError, "num_features must be a positive integer"),
        (
            lambda: nbn.BatchNorm(3, momentum=1.5),
            ValueError,
            r"momentum must be None or in \[0, 1\]",
        ),
        (lambda: nbn.BatchNorm(3, eps=-1.0), ValueError, "eps must be non-negative"),
        (
            lambda: nbn.BatchNorm(3, dtype=np.int32),
            TypeError,
            "dtype must be a floating-point dtype",
        ),
        (
            lambda: nbn.LayerNorm((4, 5), axis=-1),
            ValueError,
            r"axis -1 names 1 axes but normalized_shape \(4, 5\) has 2",
        ),
        (lambda: nbn.LayerNorm(()), ValueError, "normalized_shape must be a positive integer"),
    ],
)
def test_invalid_configuration(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ----------------------------------------------------------------------------
# Against torch.nn


def _torch_pair(rng, kind):
    """A float64 torch module with random parameters and buffers, and the matching layer."""
    nn = torch.nn
    f64 = dict(dtype=np.float64)
    module, layer = {
        "batch": (
            nn.BatchNorm2d(3, momentum=0.2, eps=1e-4),
            nbn.BatchNorm(3, momentum=0.2, eps=1e-4, **f64),
        ),
        "batch_cumulative": (
            nn.BatchNorm1d(3, momentum=None),
            nbn.BatchNorm(3, momentum=None, **f64),
        ),
        "instance": (
            nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
            nbn.InstanceNorm(3, affine=True, track_running_stats=True, **f64),
        ),
        "instance_default": (nn.InstanceNorm1d(3), nbn.InstanceNorm(3, **f64)),
        "group": (nn.GroupNorm(3, 6, eps=1e-4), nbn.GroupNorm(3, 6, eps=1e-4, **f64)),
        "layer": (nn.LayerNorm((4, 5)), nbn.LayerNorm((4, 5), **f64)),
        "layer_no_bias": (nn.LayerNorm(5, bias=False), nbn.LayerNorm(5, bias=False, **f64)),
        "rms": (nn.RMSNorm((4, 5)), nbn.RMSNorm((4, 5), **f64)),
        "rms_eps": (nn.RMSNorm(5, eps=1e-3), nbn.RMSNorm(5, eps=1e-3, **f64)),
    }[kind]
    module = module.double()
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.tensor(rng.uniform(0.5, 1.5, tuple(value.shape))))
    return module, layer


TORCH_SHAPES = {
    "batch": (4, 3, 5, 2),
    "batch_cumulative": (6, 3),
    "instance": (2, 3, 4, 5),
    "instance_default": (2, 3, 7),
    "group": (2, 6, 5),
    "layer": (2, 3, 4, 5),
    "layer_no_bias": (3, 5),
    "rms": (2, 3, 4, 5),
    "rms_eps": (3, 5),
}


@needs_torch
@pytest.mark.parametrize("kind", list(TORCH_SHAPES))
def test_matches_torch_module(rng, kind):
    module, layer = _torch_pair(rng, kind)
    # The module's own state dict, tensors and all, loads unchanged.
    layer.load_state_dict(module.state_dict())
    for training in (True, True, False, True):
        module.train(training)
        layer.train(training)
        x, dy = _data(rng, TORCH_SHAPES[kind])
        xt = torch.tensor(x, requires_grad=True)
        yt = module(xt)
        yt.backward(torch.tensor(dy))
        assert_close(layer(x), yt.detach().numpy(), np.float64)
        assert_close(layer.backward(dy), xt.grad.numpy(), np.float64)
    for name, grad in layer.grads.items():
        assert_close(grad, getattr(module, name).grad.numpy(), np.float64, scale=10)
    torch_state = module.state_dict()
    state = layer.state_dict()
    assert list(state) == list(torch_state)
    for name, value in torch_state.items():
        if kind.startswith("instance") and name == "num_batches_tracked":
            # torch's instance norm never counts batches; ours counts as batch norm does.
            assert state[name] == 3
        else:
            assert_close(state[name], value.numpy(), np.float64)


@needs_torch
@pytest.mark.parametrize("kind", list(TORCH_SHAPES))
def test_state_dict_loads_into_torch_module(rng, kind):
    module, layer = _torch_pair(rng, kind)
    _randomize(layer, rng)
    if layer.num_batches_tracked is not None:
        layer.num_batches_tracked[...] = 5
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(module.state_dict()[name].numpy(), value)


@needs_torch
def test_torch_state_dict_converts_to_the_layer_dtype(rng):
    module, _ = _torch_pair(rng, "batch")
    layer = nbn.BatchNorm(3)
    layer.load_state_dict(module.state_dict())
    for name, value in module.state_dict().items():
        assert layer.state_dict()[name].dtype == (
            np.int64 if name == "num_batches_tracked" else np.float32
        )
        assert_close(layer.state_dict()[name], value.numpy(), np.float32)


@needs_torch
def test_torch_state_dict_from_savez_file(rng, tmp_path):
    module = torch.nn.BatchNorm2d(3)
    module(torch.tensor(_data(rng, (4, 3, 5, 2))[0], dtype=torch.float32))
    np.savez(tmp_path / "torch_bn.npz", **{k: v.numpy() for k, v in module.state_dict().items()})
    layer = nbn.BatchNorm(3)
    with np.load(tmp_path / "torch_bn.npz") as saved:
        layer.load_state_dict(saved)
    x, _ = _data(rng, (4, 3, 5, 2))
    expected = module.eval()(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    assert_close(layer.eval()(x.astype(np.float32)), expected, np.float32)
    assert layer.num_batches_tracked == 1


# ----------------------------------------------------------------------------
# where: statistics of the selected elements, the backward with the forward's mask


def _padding(rng, n, length):
    """An ``(n, 1, length)`` mask of padded sequences; sample 1 is all padding."""
    lengths = rng.integers(2, length + 1, n)
    lengths[1] = 0
    return (np.arange(length) < lengths[:, None])[:, None, :]


def _gathered_batch_norm(x, dy, where, weight, bias, eps=1e-5):
    """Batch norm of ``(N, C, T)`` with the statistics of the selected elements, float64 NumPy:
    ``(y, dx, dweight, dbias, mean, unbiased var)``."""
    mask = np.broadcast_to(where, x.shape)
    channels = x.shape[1]
    mean, var, unbiased, count = (np.zeros((1, channels, 1)) for _ in range(4))
    for c in range(channels):
        selected = x[:, c][mask[:, c]]
        mean[0, c], var[0, c], count[0, c] = selected.mean(), selected.var(), selected.size
        unbiased[0, c] = selected.var(ddof=1)
    w, b = weight[:, None], bias[:, None]
    x_hat = (x - mean) / np.sqrt(var + eps)
    g = dy * w
    sums = g.sum(axis=(0, 2), keepdims=True), (g * x_hat).sum(axis=(0, 2), keepdims=True)
    feedback = np.where(mask, (sums[0] + x_hat * sums[1]) / count, 0.0)
    dx = (g - feedback) / np.sqrt(var + eps)
    return (
        x_hat * w + b,
        dx,
        (dy * x_hat).sum(axis=(0, 2)),
        dy.sum(axis=(0, 2)),
        mean.ravel(),
        unbiased.ravel(),
    )


def test_batch_norm_layer_with_where_against_the_gathered_elements(rng):
    x, dy = _data(rng, (5, 3, 8))
    where = _padding(rng, 5, 8)
    layer = nbn.BatchNorm(3, momentum=0.25, dtype=np.float64)
    _randomize(layer, rng)
    before = _snapshot(layer)
    y = layer(x, where)
    dx = layer.backward(dy)  # with the forward's mask
    expected = _gathered_batch_norm(x, dy, where, before["weight"], before["bias"])
    for actual, truth in zip((y, dx, layer.grads["weight"], layer.grads["bias"]), expected):
        assert_close(actual, truth, np.float64, scale=10.0)
    for name, batch_stat in zip(("running_mean", "running_var"), expected[4:]):
        assert_close(
            getattr(layer, name), 0.75 * before[name] + 0.25 * batch_stat, np.float64, err_msg=name
        )
    assert layer.num_batches_tracked == 1
    # Evaluation normalizes with the running statistics, whatever the mask.
    layer.eval()
    np.testing.assert_array_equal(layer(x, where), layer(x))


@pytest.mark.parametrize(
    "make, functional, where_shape",
    [
        (lambda: nbn.LayerNorm((3, 8)), "layer_norm", (5, 3, 8)),
        (lambda: nbn.RMSNorm(8), "rms_norm", (5, 1, 8)),
        (lambda: nbn.GroupNorm(3, 6, dtype=np.float64), "group_norm", (5, 6, 1)),
        (
            lambda: nbn.InstanceNorm(3, affine=True, track_running_stats=True, dtype=np.float64),
            "instance_norm",
            (5, 1, 8),
        ),
        (lambda: nbn.BatchNorm(3, dtype=np.float64), "batch_norm", (5, 1, 8)),
    ],
)
def test_layers_with_where_are_the_functional_api_with_where(rng, make, functional, where_shape):
    layer = make()
    _randomize(layer, rng)
    params = _snapshot(layer)
    shape = (5, 6, 8) if functional == "group_norm" else (5, 3, 8)
    x, dy = _data(rng, shape)
    where = rng.random(where_shape) < 0.6
    where[1] = False
    y, dx = layer(x, where), layer.backward(dy)
    forward = getattr(nbn, f"{functional}_forward")
    backward = getattr(nbn, f"{functional}_backward")
    weight = params.get("weight")
    options = {"axis": (1, 2)} if functional == "layer_norm" else {}
    if functional == "rms_norm":
        options = {"axis": -1}
    groups = (3,) if functional == "group_norm" else ()
    running = [params[k].copy() for k in ("running_mean", "running_var") if k in params]
    if functional in ("batch_norm", "instance_norm"):
        args = (*running, weight, params["bias"])
    else:
        args = (*groups, weight) + ((params["bias"],) if "bias" in params else ())
    expected_y, *stats = forward(x, *args, where=where, **options)
    expected = backward(dy, x, *groups, *stats, weight, where=where, **options)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(dx, expected[0])
    for name, grad in zip(("weight", "bias"), expected[1:]):
        np.testing.assert_array_equal(layer.grads[name], grad)
    for name, value in zip(("running_mean", "running_var"), running):
        np.testing.assert_array_equal(getattr(layer, name), value)


@pytest.mark.parametrize(
    "where, error, match",
    [
        (np.ones((4, 1, 5)), TypeError, "where must be a boolean array"),
        (np.ones((4, 2, 5), bool), ValueError, r"where of shape \(4, 2, 5\).*\(4, 3, 5\)"),
        (np.arange(20).reshape(4, 1, 5) == 13, ValueError, "more than 1 value per channel"),
    ],
)
def test_a_failing_forward_with_where_changes_nothing(rng, where, error, match):
    layer = nbn.BatchNorm(3, dtype=np.float64)
    _randomize(layer, rng)
    before = _snapshot(layer)
    x, _ = _data(rng, (4, 3, 5))
    with pytest.raises(error, match=match):
        layer(x, where)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(layer, name), value)


def test_recompute_stats_of_masked_batches_is_that_of_the_gathered_elements(rng):
    data, _ = _data(rng, (24, 3, 10))
    data += 100.0
    where = _padding(rng, 24, 10)
    # (x, where) pairs, a plain batch (everything selected), and an all-padding batch.
    batches = [(data[:8], where[:8]), data[8:12], (data[12:20], where[12:20])]
    batches.append((data[20:], np.zeros((1, 1, 10), bool)))
    mask = where.copy()
    mask[8:12] = True
    mask[20:] = False
    layer = nbn.recompute_stats(nbn.BatchNorm(3, dtype=np.float64), iter(batches))
    gathered = [data[:, c][np.broadcast_to(mask, data.shape)[:, c]] for c in range(3)]
    assert_close(layer.running_mean, [g.mean() for g in gathered], np.float64)
    assert_close(layer.running_var, [g.var(ddof=1) for g in gathered], np.float64)
    assert layer.num_batches_tracked == 4


def test_recompute_stats_of_masked_instance_norm_averages_instances_with_two_selected(rng):
    data, _ = _data(rng, (12, 2, 9))
    where = _padding(rng, 12, 9)
    where[3, 0, 1:] = False  # one selected element: left out of the average
    batches = [(data[:5], where[:5]), (data[5:], where[5:])]
    layer = nbn.InstanceNorm(2, track_running_stats=True, dtype=np.float64)

    def times_two(x):
        return 2.0 * x

    nbn.recompute_stats(layer, batches, forward=times_two)
    counted = [n for n in range(12) if where[n].sum() >= 2]
    assert 1 not in counted and 3 not in counted
    means = [[(2.0 * data[n, c])[where[n, 0]].mean() for c in range(2)] for n in counted]
    variances = [[(2.0 * data[n, c])[where[n, 0]].var(ddof=1) for c in range(2)] for n in counted]
    assert_close(layer.running_mean, np.mean(means, axis=0), np.float64)
    assert_close(layer.running_var, np.mean(variances, axis=0), np.float64)


def test_recompute_stats_with_too_few_selected_raises_and_changes_nothing(rng):
    layer = nbn.BatchNorm(2, dtype=np.float64)
    x = rng.standard_normal((6, 2))
    where = np.zeros((6, 2), bool)
    where[0] = where[3, 0] = True
    with pytest.raises(ValueError, match="ddof=1 needs more than 1 elements, got 1"):
        nbn.recompute_stats(layer, [(x, where)])
    instance = nbn.InstanceNorm(2, track_running_stats=True, dtype=np.float64)
    with pytest.raises(ValueError, match="an instance with more than 1 selected element"):
        nbn.recompute_stats(
            instance, [(rng.standard_normal((3, 2, 4)), np.eye(3, 4, dtype=bool)[:, None])]
        )
    with pytest.raises(TypeError, match="where must be a boolean array"):
        nbn.recompute_stats(layer, [(x, np.ones((6, 2)))])
    for target in (layer, instance):
        np.testing.assert_array_equal(target.running_mean, 0)
        np.testing.assert_array_equal(target.running_var, 1)
        assert target.num_batches_tracked == 0
