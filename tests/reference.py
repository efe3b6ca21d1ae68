"""Float64 NumPy reference for the normalization layers, written from the formulas.

Everything here is computed in float64 with plain NumPy, for clarity rather
than speed. The functions mirror the statistics conventions of numbanorm's
``*_forward`` / ``*_backward`` functions:

* batch norm: ``mean``, ``rstd`` of shape ``(C,)``;
* layer norm and RMS norm: ``x.shape`` without the normalized axes;
* group norm: ``(N, G)``;
* instance norm: ``(N, C)``.

``rstd = 1 / sqrt(var + eps)`` with the biased variance. Running statistics
follow PyTorch: ``running = (1 - momentum) * running + momentum * stat`` with
the unbiased variance ``n / (n - 1) * var``.
"""

import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def normalize_axes(axis, ndim):
    """Return ``axis`` (int or tuple) as a sorted tuple of non-negative axes."""
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _rows_view(x, axis):
    """Move the normalized axes last and flatten to ``(rows, K)``.

    Returns the 2-D array and the shape of ``x`` after the move, whose
    leading part is the statistics shape.
    """
    axes = normalize_axes(axis, x.ndim)
    k = len(axes)
    moved = np.moveaxis(x, axes, range(x.ndim - k, x.ndim))
    outer = moved.shape[: x.ndim - k]
    inner = moved.shape[x.ndim - k :]
    return moved.reshape(int(np.prod(outer)), int(np.prod(inner))), moved.shape, axes


def _from_rows(rows, moved_shape, axes):
    k = len(axes)
    ndim = len(moved_shape)
    return np.moveaxis(rows.reshape(moved_shape), range(ndim - k, ndim), axes)


def _sample_and_channel_axes(ndim, axis):
    channel = axis % ndim
    sample = 0 if channel != 0 else 1
    return sample, channel


def _ncs_view(x, axis):
    """View ``x`` as ``(N, C, S)``: sample axis, channel axis, everything else."""
    sample, channel = _sample_and_channel_axes(x.ndim, axis)
    moved = np.moveaxis(x, (sample, channel), (0, 1))
    spatial = int(np.prod(moved.shape[2:]))
    return moved.reshape(moved.shape[0], moved.shape[1], spatial), moved.shape


def _from_ncs(ncs, moved_shape, axis):
    sample, channel = _sample_and_channel_axes(len(moved_shape), axis)
    return np.moveaxis(ncs.reshape(moved_shape), (0, 1), (sample, channel))


def _rstd(var, eps):
    return 1.0 / np.sqrt(var + eps)


def _normalized_backward(dxhat, xhat, rstd, axes):
    """Gradient through ``xhat = (x - mean(x)) * rstd(x)`` reduced over ``axes``."""
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
    return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


def _unbiased(var, count):
    return var * count / (count - 1)


# --------------------------------------------------------------------------
# batch norm
# --------------------------------------------------------------------------


def batch_norm_forward(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    *,
    training=True,
    eps=1e-5,
    axis=1,
):
    """Batch norm forward; returns ``(y, mean, rstd)`` with stats of shape ``(C,)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    if training:
        mean = ncs.mean(axis=(0, 2))
        rstd = _rstd(ncs.var(axis=(0, 2)), eps)
    else:
        mean = _f64(running_mean).copy()
        rstd = _rstd(_f64(running_var), eps)
    y = (ncs - mean[None, :, None]) * rstd[None, :, None]
    if weight is not None:
        y = y * _f64(weight)[None, :, None]
    if bias is not None:
        y = y + _f64(bias)[None, :, None]
    return _from_ncs(y, moved_shape, axis), mean, rstd


def batch_norm_running_stats(x, running_mean, running_var, *, momentum=0.1, axis=1):
    """Running statistics after one batch-norm training step (new arrays)."""
    ncs, _ = _ncs_view(_f64(x), axis)
    count = ncs.shape[0] * ncs.shape[2]
    mean = ncs.mean(axis=(0, 2))
    var = _unbiased(ncs.var(axis=(0, 2)), count)
    new_mean = (1 - momentum) * _f64(running_mean) + momentum * mean
    new_var = (1 - momentum) * _f64(running_var) + momentum * var
    return new_mean, new_var


def batch_norm_backward(dy, x, mean, rstd, weight=None, *, training=True, axis=1):
    """Batch norm backward; returns ``(dx, dweight, dbias)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    dy_ncs, _ = _ncs_view(_f64(dy), axis)
    mean = _f64(mean)[None, :, None]
    rstd = _f64(rstd)[None, :, None]
    channels = ncs.shape[1]
    w = np.ones(channels) if weight is None else _f64(weight)
    xhat = (ncs - mean) * rstd
    dxhat = dy_ncs * w[None, :, None]
    if training:
        dx = _normalized_backward(dxhat, xhat, rstd, (0, 2))
    else:
        dx = dxhat * rstd
    dweight = (dy_ncs * xhat).sum(axis=(0, 2))
    dbias = dy_ncs.sum(axis=(0, 2))
    return _from_ncs(dx, moved_shape, axis), dweight, dbias


# --------------------------------------------------------------------------
# layer norm
# --------------------------------------------------------------------------


def layer_norm_forward(x, weight=None, bias=None, *, axis=-1, eps=1e-5):
    """Layer norm forward; returns ``(y, mean, rstd)``."""
    rows, moved_shape, axes = _rows_view(_f64(x), axis)
    stats_shape = moved_shape[: len(moved_shape) - len(axes)]
    mean = rows.mean(axis=1)
    rstd = _rstd(rows.var(axis=1), eps)
    y = (rows - mean[:, None]) * rstd[:, None]
    if weight is not None:
        y = y * _f64(weight).reshape(1, -1)
    if bias is not None:
        y = y + _f64(bias).reshape(1, -1)
    return _from_rows(y, moved_shape, axes), mean.reshape(stats_shape), rstd.reshape(stats_shape)


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1):
    """Layer norm backward; returns ``(dx, dweight, dbias)``."""
    rows, moved_shape, axes = _rows_view(_f64(x), axis)
    dy_rows, _, _ = _rows_view(_f64(dy), axis)
    weight_shape = moved_shape[len(moved_shape) - len(axes) :]
    mean = _f64(mean).reshape(-1, 1)
    rstd = _f64(rstd).reshape(-1, 1)
    w = np.ones(rows.shape[1]) if weight is None else _f64(weight).reshape(-1)
    xhat = (rows - mean) * rstd
    dx = _normalized_backward(dy_rows * w[None, :], xhat, rstd, 1)
    dweight = (dy_rows * xhat).sum(axis=0).reshape(weight_shape)
    dbias = dy_rows.sum(axis=0).reshape(weight_shape)
    return _from_rows(dx, moved_shape, axes), dweight, dbias


# --------------------------------------------------------------------------
# group norm
# --------------------------------------------------------------------------


def _grouped(ncs, num_groups):
    n, c, s = ncs.shape
    return ncs.reshape(n, num_groups, c // num_groups, s)


def group_norm_forward(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1):
    """Group norm forward; returns ``(y, mean, rstd)`` with stats of shape ``(N, G)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    groups = _grouped(ncs, num_groups)
    mean = groups.mean(axis=(2, 3))
    rstd = _rstd(groups.var(axis=(2, 3)), eps)
    y = ((groups - mean[:, :, None, None]) * rstd[:, :, None, None]).reshape(ncs.shape)
    if weight is not None:
        y = y * _f64(weight)[None, :, None]
    if bias is not None:
        y = y + _f64(bias)[None, :, None]
    return _from_ncs(y, moved_shape, axis), mean, rstd


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, axis=1):
    """Group norm backward; returns ``(dx, dweight, dbias)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    dy_ncs, _ = _ncs_view(_f64(dy), axis)
    channels = ncs.shape[1]
    w = np.ones(channels) if weight is None else _f64(weight)
    groups = _grouped(ncs, num_groups)
    mean = _f64(mean)[:, :, None, None]
    rstd = _f64(rstd)[:, :, None, None]
    xhat = (groups - mean) * rstd
    dxhat = _grouped(dy_ncs * w[None, :, None], num_groups)
    dx = _normalized_backward(dxhat, xhat, rstd, (2, 3)).reshape(ncs.shape)
    dweight = (dy_ncs * xhat.reshape(ncs.shape)).sum(axis=(0, 2))
    dbias = dy_ncs.sum(axis=(0, 2))
    return _from_ncs(dx, moved_shape, axis), dweight, dbias


# --------------------------------------------------------------------------
# instance norm
# --------------------------------------------------------------------------


def instance_norm_forward(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    *,
    use_input_stats=True,
    eps=1e-5,
    axis=1,
):
    """Instance norm forward; returns ``(y, mean, rstd)`` with stats of shape ``(N, C)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    n, c, _ = ncs.shape
    if use_input_stats:
        mean = ncs.mean(axis=2)
        rstd = _rstd(ncs.var(axis=2), eps)
    else:
        mean = np.broadcast_to(_f64(running_mean), (n, c)).copy()
        rstd = np.broadcast_to(_rstd(_f64(running_var), eps), (n, c)).copy()
    y = (ncs - mean[:, :, None]) * rstd[:, :, None]
    if weight is not None:
        y = y * _f64(weight)[None, :, None]
    if bias is not None:
        y = y + _f64(bias)[None, :, None]
    return _from_ncs(y, moved_shape, axis), mean, rstd


def instance_norm_running_stats(x, running_mean, running_var, *, momentum=0.1, axis=1):
    """Running statistics after one instance-norm step: per-instance stats averaged over N."""
    ncs, _ = _ncs_view(_f64(x), axis)
    count = ncs.shape[2]
    mean = ncs.mean(axis=2).mean(axis=0)
    var = _unbiased(ncs.var(axis=2), count).mean(axis=0)
    new_mean = (1 - momentum) * _f64(running_mean) + momentum * mean
    new_var = (1 - momentum) * _f64(running_var) + momentum * var
    return new_mean, new_var


def instance_norm_backward(dy, x, mean, rstd, weight=None, *, use_input_stats=True, axis=1):
    """Instance norm backward; returns ``(dx, dweight, dbias)``."""
    ncs, moved_shape = _ncs_view(_f64(x), axis)
    dy_ncs, _ = _ncs_view(_f64(dy), axis)
    channels = ncs.shape[1]
    w = np.ones(channels) if weight is None else _f64(weight)
    mean = _f64(mean)[:, :, None]
    rstd = _f64(rstd)[:, :, None]
    xhat = (ncs - mean) * rstd
    dxhat = dy_ncs * w[None, :, None]
    if use_input_stats:
        dx = _normalized_backward(dxhat, xhat, rstd, 2)
    else:
        dx = dxhat * rstd
    dweight = (dy_ncs * xhat).sum(axis=(0, 2))
    dbias = dy_ncs.sum(axis=(0, 2))
    return _from_ncs(dx, moved_shape, axis), dweight, dbias


# --------------------------------------------------------------------------
# RMS norm
# --------------------------------------------------------------------------


def rms_norm_forward(x, weight=None, *, axis=-1, eps):
    """RMS norm forward; returns ``(y, rrms)`` with ``rrms = 1 / sqrt(mean(x**2) + eps)``."""
    rows, moved_shape, axes = _rows_view(_f64(x), axis)
    stats_shape = moved_shape[: len(moved_shape) - len(axes)]
    rrms = 1.0 / np.sqrt((rows**2).mean(axis=1) + eps)
    y = rows * rrms[:, None]
    if weight is not None:
        y = y * _f64(weight).reshape(1, -1)
    return _from_rows(y, moved_shape, axes), rrms.reshape(stats_shape)


def rms_norm_backward(dy, x, rrms, weight=None, *, axis=-1):
    """RMS norm backward; returns ``(dx, dweight)``.

    With ``g = dy * weight`` and ``r = rrms``:
    ``dx = r * g - r**3 * x * mean(g * x)``.
    """
    rows, moved_shape, axes = _rows_view(_f64(x), axis)
    dy_rows, _, _ = _rows_view(_f64(dy), axis)
    weight_shape = moved_shape[len(moved_shape) - len(axes) :]
    rrms = _f64(rrms).reshape(-1, 1)
    w = np.ones(rows.shape[1]) if weight is None else _f64(weight).reshape(-1)
    g = dy_rows * w[None, :]
    dx = rrms * g - rrms**3 * rows * (g * rows).mean(axis=1, keepdims=True)
    dweight = (dy_rows * rows * rrms).sum(axis=0).reshape(weight_shape)
    return _from_rows(dx, moved_shape, axes), dweight


def rms_norm_default_eps(x_dtype):
    """``eps=None`` default: machine epsilon of the result dtype of ``x``."""
    return float(np.finfo(result_dtype(x_dtype)).eps)


def result_dtype(x_dtype):
    """Dtype of ``y``/``dx`` for an input of ``x_dtype``: float16/32/64 kept, others float64."""
    x_dtype = np.dtype(x_dtype)
    if x_dtype in (np.float16, np.float32, np.float64):
        return x_dtype
    return np.dtype(np.float64)


def stats_dtype(x_dtype):
    """Dtype of ``mean``/``rstd``: float32 for float16/float32, float64 otherwise."""
    x_dtype = np.dtype(x_dtype)
    if x_dtype in (np.float16, np.float32):
        return np.dtype(np.float32)
    return np.dtype(np.float64)
