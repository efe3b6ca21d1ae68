"""Cross-check against torch.nn.functional and autograd, where torch is installed."""

import numpy as np
import pytest

import numbanorm as nbn

from helpers import tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_DTYPES = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def _tensor(array, requires_grad=False):
    return torch.tensor(np.ascontiguousarray(array), requires_grad=requires_grad)


def _numpy(tensor):
    return tensor.detach().numpy()


def _assert_close(actual, expected, dtype, scale=1.0):
    tol = tolerance(dtype)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=tol["rtol"] * scale,
        atol=tol["atol"] * scale,
    )


def _assert_matches_torch(outputs, torch_outputs, dtype):
    """``y`` and ``dx`` to the dtype's tolerance, summed parameter gradients 10x looser."""
    for index, (actual, expected) in enumerate(zip(outputs, torch_outputs)):
        _assert_close(actual, _numpy(expected), dtype, scale=10.0 if index >= 2 else 1.0)


def _data(rng, shape, dtype):
    return (
        (0.5 + 2.0 * rng.standard_normal(shape)).astype(dtype),
        rng.standard_normal(shape).astype(dtype),
        (1.0 + 0.5 * rng.standard_normal(shape[1])).astype(dtype),
        rng.standard_normal(shape[1]).astype(dtype),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(rng, training, channels_last, dtype):
    x, dy, weight, bias = _data(rng, (4, 3, 5, 2), dtype)
    running_mean, running_var = (
        rng.standard_normal(3).astype(dtype),
        rng.uniform(0.5, 2.0, 3).astype(dtype),
    )
    torch_mean, torch_var = _tensor(running_mean), _tensor(running_var)
    xt, wt, bt = _tensor(x, True), _tensor(weight, True), _tensor(bias, True)
    yt = F.batch_norm(xt, torch_mean, torch_var, wt, bt, training=training, momentum=0.3, eps=1e-4)
    yt.backward(_tensor(dy))

    if channels_last:
        x, dy = np.moveaxis(x, 1, -1), np.moveaxis(dy, 1, -1)
    axis = -1 if channels_last else 1
    y, mean, rstd = nbn.batch_norm_forward(
        x,
        running_mean,
        running_var,
        weight,
        bias,
        training=training,
        momentum=0.3,
        eps=1e-4,
        axis=axis,
    )
    dx, dweight, dbias = nbn.batch_norm_backward(
        dy, x, mean, rstd, weight, training=training, axis=axis
    )
    if channels_last:
        y, dx = np.moveaxis(y, -1, 1), np.moveaxis(dx, -1, 1)
    _assert_matches_torch((y, dx, dweight, dbias), (yt, xt.grad, wt.grad, bt.grad), dtype)
    _assert_close(running_mean, _numpy(torch_mean), dtype)
    _assert_close(running_var, _numpy(torch_var), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, (-2, -1), (0, 2)])
def test_layer_norm(rng, axis, dtype):
    x, dy, _, _ = _data(rng, (3, 4, 5), dtype)
    axes = tuple(sorted(a % 3 for a in np.atleast_1d(axis)))
    order = [a for a in range(3) if a not in axes] + list(axes)
    normalized = tuple(x.shape[a] for a in axes)
    weight = (1.0 + 0.5 * rng.standard_normal(normalized)).astype(dtype)
    bias = rng.standard_normal(normalized).astype(dtype)
    xt, wt, bt = _tensor(x, True), _tensor(weight, True), _tensor(bias, True)
    yt = F.layer_norm(xt.permute(order), normalized, wt, bt, eps=1e-4).permute(
        *np.argsort(order).tolist()
    )
    yt.backward(_tensor(dy))

    y, mean, rstd = nbn.layer_norm_forward(x, weight, bias, axis=axis, eps=1e-4)
    dx, dweight, dbias = nbn.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis)
    _assert_matches_torch((y, dx, dweight, dbias), (yt, xt.grad, wt.grad, bt.grad), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_groups", [1, 2, 6])
def test_group_norm(rng, num_groups, dtype):
    x, dy, weight, bias = _data(rng, (3, 6, 4, 2), dtype)
    xt, wt, bt = _tensor(x, True), _tensor(weight, True), _tensor(bias, True)
    yt = F.group_norm(xt, num_groups, wt, bt, eps=1e-4)
    yt.backward(_tensor(dy))

    y, mean, rstd = nbn.group_norm_forward(x, num_groups, weight, bias, eps=1e-4)
    dx, dweight, dbias = nbn.group_norm_backward(dy, x, num_groups, mean, rstd, weight)
    _assert_matches_torch((y, dx, dweight, dbias), (yt, xt.grad, wt.grad, bt.grad), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm(rng, use_input_stats, dtype):
    x, dy, weight, bias = _data(rng, (3, 4, 5, 2), dtype)
    running_mean, running_var = (
        rng.standard_normal(4).astype(dtype),
        rng.uniform(0.5, 2.0, 4).astype(dtype),
    )
    torch_mean, torch_var = _tensor(running_mean), _tensor(running_var)
    xt, wt, bt = _tensor(x, True), _tensor(weight, True), _tensor(bias, True)
    yt = F.instance_norm(
        xt, torch_mean, torch_var, wt, bt, use_input_stats=use_input_stats, momentum=0.3, eps=1e-4
    )
    yt.backward(_tensor(dy))

    y, mean, rstd = nbn.instance_norm_forward(
        x,
        running_mean,
        running_var,
        weight,
        bias,
        use_input_stats=use_input_stats,
        momentum=0.3,
        eps=1e-4,
    )
    dx, dweight, dbias = nbn.instance_norm_backward(
        dy, x, mean, rstd, weight, use_input_stats=use_input_stats
    )
    _assert_matches_torch((y, dx, dweight, dbias), (yt, xt.grad, wt.grad, bt.grad), dtype)
    _assert_close(running_mean, _numpy(torch_mean), dtype)
    _assert_close(running_var, _numpy(torch_var), dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rms_norm(rng, eps, dtype):
    x, dy, _, _ = _data(rng, (3, 4, 8), dtype)
    x[0] *= 1e-3
    weight = (1.0 + 0.5 * rng.standard_normal(8)).astype(dtype)
    y = nbn.rms_norm(x, weight, eps=eps)
    # torch's CPU kernel takes float32's epsilon for float16 input when eps is None;
    # numbanorm follows the documented finfo(x.dtype).eps, so pass that to torch.
    torch_eps = float(np.finfo(dtype).eps) if eps is None else eps
    yt = F.rms_norm(_tensor(x), (8,), _tensor(weight), eps=torch_eps)
    assert y.dtype == dtype
    _assert_close(y, _numpy(yt), dtype)
    if dtype == np.float16:
        return
    xt, wt = _tensor(x, True), _tensor(weight, True)
    F.rms_norm(xt, (8,), wt, eps=eps).backward(_tensor(dy))
    y, rrms = nbn.rms_norm_forward(x, weight, eps=eps)
    dx, dweight = nbn.rms_norm_backward(dy, x, rrms, weight)
    _assert_close(dx, _numpy(xt.grad), dtype)
    _assert_close(dweight, _numpy(wt.grad), dtype, scale=10.0)


def test_float16_layer_norm(rng):
    x, _, _, _ = _data(rng, (4, 64), np.float16)
    y = nbn.layer_norm(x)
    yt = F.layer_norm(_tensor(x).float(), (64,)).half()
    assert y.dtype == np.float16
    _assert_close(y, _numpy(yt), np.float16)
