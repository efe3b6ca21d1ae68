"""Norm-independent forward and backward passes over a canonical view.

Every norm is: group statistics of the canonical view, an elementwise
normalize-and-affine pass, and a backward made of one reduction and one
elementwise pass.  Everything here works on ``(B, C)`` float64 statistics and
``(C, W)`` float64 affine parameters, which the elementwise passes use in the
precision of ``x``; the public functions in ``_api.py`` translate shapes,
dtypes and modes.
"""

import threading

import numba
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _kernels, _threading


class _LaunchGuard:
    """Serializes kernel launches only under Numba's 'workqueue' layer.

    The workqueue threading layer aborts the process when two Python threads
    run parallel kernels at once; the OpenMP and TBB layers do not.  The layer
    is known only after the first parallel launch, so launches are serialized
    until then.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._needed = True

    def launch(self, kernel, args):
        if not self._needed:
            return kernel(*args)
        with self._lock:
            result = kernel(*args)
        self._needed = numba.threading_layer() == "workqueue"
        return result


_guard = _LaunchGuard()


def _launch(kernel, *args):
    """Run ``kernel`` on ``args``, whose first is the input; small inputs run serially."""
    if args[0].size <= _kernels.SERIAL_MAX_ELEMENTS or _threading.parallel_unsafe():
        return _kernels.SERIAL[kernel](*args)
    return _guard.launch(kernel, args)


def _arrays(allocate, n, shape):
    """``n`` float64 arrays of ``shape`` from ``np.empty`` or ``np.zeros``.

    Separate allocations: unpacking one ``(n, *shape)`` array makes a view
    per row, which costs small calls more than the allocations.
    """
    return tuple(map(allocate, (shape,) * n))


def plan_kernels(shape4, W=0):
    """``(kernels, tiling, whole_groups)`` of a canonical shape with ``W`` weights per group.

    The kernels of its regime (``_kernels.ROWS``, ``ELEMENTS`` or ``SLAB``),
    the ``(b_block, o_chunk, c_block)`` of its tasks, and whether each task
    owns whole groups.
    """
    plan = _kernels.plan_tasks(*shape4)
    if not plan[0]:
        kernels = _kernels.SLAB
    else:
        kernels = _kernels.ELEMENTS if W == shape4[3] else _kernels.ROWS
    return kernels, plan[1:], plan[2] == shape4[1]


def group_moments(canon, mask4=None):
    """``(mean, m2, count)`` of every group, ``(B, C)`` float64.

    With a mask ``mask4`` (see ``CanonicalView.mask``) the statistics cover
    the elements it selects, and ``count`` is their number per group (the
    mean 0 where there is none); without one ``count`` is None.
    """
    B, O, C, I = canon.shape4
    mean = np.zeros((B, C))
    m2 = np.zeros((B, C))
    count = None if mask4 is None else np.zeros((B, C))
    if not (B * C and O * I):
        return mean, m2, count
    x4 = canon.x4
    if mask4 is not None:
        _group_moments(x4, True, mean, m2, mask4, count)
        return mean, m2, count
    if B * O * C == 1 and I >= _kernels.TARGET_TASKS * _kernels.ROW_BLOCK:
        # A single long row would be a single task: view it as equal rows of
        # one group, which the kernel splits between tasks, plus a short tail.
        row = x4.reshape(I)
        length = I // _kernels.TARGET_TASKS
        head = row[: length * _kernels.TARGET_TASKS].reshape(1, _kernels.TARGET_TASKS, 1, length)
        _group_moments(head, True, mean, m2, None, None)
        tail = row[head.size :].astype(np.float64)
        if tail.size:
            tail_mean = tail.mean()
            n = head.size + tail.size
            delta = tail_mean - mean[0, 0]
            m2 += ((tail - tail_mean) ** 2).sum() + delta * delta * head.size * tail.size / n
            mean += delta * tail.size / n
        return mean, m2, count
    _group_moments(x4, True, mean, m2, None, None)
    return mean, m2, count


def _group_moments(x4, centered, mean, m2, mask4, count):
    """The moments kernel of ``x4``'s regime into ``(B, C)`` ``mean`` and ``m2``.

    With a mask ``mask4`` (or None) ``count`` receives the groups' selected
    counts.  The o-chunks of split groups are merged, and overflowed float32
    groups summed again.  Returns the groups whose M2 overflowed even in
    float64 (see :func:`resum_overflowed`).
    """
    B, O, C, I = x4.shape
    kernels, tiling, whole_groups = plan_kernels(x4.shape)
    if whole_groups:
        n_nonfinite = _launch(
            kernels.moments,
            x4,
            centered,
            tiling,
            mean.reshape(B, 1, C),
            m2.reshape(B, 1, C),
            kernel_mask(kernels, mask4),
            None if count is None else count.reshape(B, 1, C),
        )
    else:
        n_o = -(-O // tiling[1])
        part_mean, part_m2 = _arrays(np.empty, 2, (B, n_o, C))
        part_count = None if mask4 is None else np.empty((B, n_o, C))
        _launch(
            kernels.moments,
            x4,
            centered,
            tiling,
            part_mean,
            part_m2,
            kernel_mask(kernels, mask4),
            part_count,
        )
        n_nonfinite = _kernels.merge_moments(
            part_mean, part_m2, part_count, O, tiling[1], I, mean, m2, count
        )
    if n_nonfinite:
        return resum_overflowed(x4, centered, mean, m2, 1, mask4)[1]
    return []


def resum_overflowed(x4, centered, mean, m2, count, mask4=None):
    """Sum again in float64 the groups of finite data whose statistics are not finite.

    The kernels sum squares in the input's precision, which overflows
    float32 for values beyond about 1e17; in float64 the squares of float32
    values cannot overflow.  This rare path costs a float64 copy of each
    such group.  ``m2`` holds each group's M2 divided by ``count`` (a number,
    or a ``(B, C)`` array).  With a mask ``mask4`` only the selected
    elements count.  Groups holding NaN or inf keep their non-finite
    statistics, which are right.

    Returns ``(resummed, overflowed)``: the ``(b, c)`` of the groups summed
    again, and of those whose M2 still overflows (float64 data beyond about
    1e154).
    """
    resummed, overflowed = [], []
    for b, c in zip(*np.nonzero(~np.isfinite(m2))):
        group = x4[b, :, c] if mask4 is None else x4[b, :, c][mask4[b, :, c]]
        if not np.isfinite(group).all():
            continue
        if x4.itemsize < 8:
            group = group.astype(np.float64)
            mean[b, c] = group.mean() if centered else 0.0
            m2[b, c] = np.square(group - mean[b, c]).sum() / np.broadcast_to(count, m2.shape)[b, c]
        resummed.append((b, c))
        if not np.isfinite(m2[b, c]):
            overflowed.append((b, c))
    return resummed, overflowed


def _reciprocal_std(var, eps, overflowed):
    """``1 / sqrt(var + eps)``, NaN for the ``overflowed`` groups.

    An infinite variance of finite data would give ``rstd = 0`` and a
    finite, wrong output; NaN makes it loud.  With an infinite element the
    variance is rightly infinite, and ``rstd = 0`` is the limit.
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # as in the kernels
        rstd = 1.0 / np.sqrt(var + eps)
    for b, c in overflowed:
        rstd[b, c] = np.nan
    return rstd


def _renormalize_resummed(x4, centered, eps, mean, var, rstd, weight2, bias2, out4, mask4, count):
    """Statistics and output of the groups whose variance the fused kernel got non-finite.

    The groups that :func:`resum_overflowed` sums again are normalized
    again, in float64.
    """
    resummed, overflowed = resum_overflowed(
        x4, centered, mean, var, x4.shape[1] * x4.shape[3] if count is None else count, mask4
    )
    fixed = _reciprocal_std(var, eps, overflowed)
    repeat = x4.shape[3] // weight2.shape[1]
    for b, c in resummed:
        rstd[b, c] = fixed[b, c]
        scale = rstd[b, c] * np.repeat(weight2[c].astype(np.float64), repeat)
        shift = np.repeat(bias2[c].astype(np.float64), repeat)
        out4[b, :, c] = (x4[b, :, c] - mean[b, c]) * scale + shift


def normalize(
    x4, weight2, bias2, out4, *, eps=0.0, centered=True, stats=None, plan=None, mask4=None
):
    """``out4 = (x4 - mean) * rstd * weight + bias``, on canonical views.

    Parameters
    ----------
    x4, out4 : ndarray
        C-contiguous ``(B, O, C, I)`` views of ``x`` and of the output
        (float32 or float64, the same dtype).
    weight2, bias2 : ndarray
        ``(C, W)`` affine parameters, used in the precision of ``x``.
    eps : float
        Added to the variance when the statistics are computed here.
    centered : bool
        False for RMS norm: the mean is zero, the variance is ``mean(x**2)``.
    stats : tuple of ndarray, optional
        ``(mean, rstd)`` to use instead of the statistics of ``x``.
    plan : tuple, optional
        :func:`plan_kernels` of ``x4`` and ``weight2``, when the caller has it.
    mask4 : ndarray, optional
        The elements the statistics cover (see ``CanonicalView.mask``); a
        group without any has ``mean = rstd = 0``.  Unused with ``stats``.

    Returns
    -------
    mean, var, rstd : ndarray
        ``(B, C)`` float64; ``var`` is None when ``stats`` were given.
    count : ndarray or None
        ``(B, C)`` float64 selected counts, with ``mask4`` and no ``stats``.
    """
    B, O, C, I = x4.shape
    if weight2.dtype != x4.dtype:
        weight2 = weight2.astype(x4.dtype)
    if bias2.dtype != x4.dtype:
        bias2 = bias2.astype(x4.dtype)
    kernels, tiling, whole_groups = plan or plan_kernels(x4.shape, weight2.shape[1])
    var = count = None
    if stats is None:
        mean, var, rstd = _arrays(np.empty, 3, (B, C))
        if mask4 is not None:
            count = np.empty((B, C))
        if not B * C:
            return mean, var, rstd, count
        if not whole_groups:
            overflowed = _group_moments(x4, centered, mean, var, mask4, count)
            if count is None:
                var /= O * I
                rstd[...] = _reciprocal_std(var, eps, overflowed)
            else:
                empty = count == 0
                with np.errstate(invalid="ignore", divide="ignore"):
                    var /= count
                var[empty] = 0.0
                rstd[...] = _reciprocal_std(var, eps, overflowed)
                rstd[empty] = 0.0
    else:
        mean, rstd = stats
    fused = stats is None and whole_groups
    if out4.size and _launch(
        kernels.normalize,
        x4,
        centered,
        eps,
        tiling,
        mean,
        var if fused else None,
        rstd,
        weight2,
        bias2,
        out4,
        kernel_mask(kernels, mask4) if fused else None,
        count if fused else None,
    ):
        _renormalize_resummed(
            x4, centered, eps, mean, var, rstd, weight2, bias2, out4, mask4, count
        )
    return mean, var, rstd, count


def backward(canon, dy, mean, rstd, weight2, stats_from_input, centered=True, out=None, mask4=None):
    """Gradients of :func:`normalize` with respect to x, weight and bias.

    Parameters
    ----------
    canon : CanonicalView
        View of ``x``.
    dy : ndarray
        Upstream gradient, shaped like ``x``.
    mean, rstd : ndarray
        ``(B, C)`` float64 statistics the forward used.
    weight2 : ndarray
        ``(C, W)`` weight (ones when the norm has none), used in the precision of ``x``.
    stats_from_input : bool
        Whether ``mean`` and ``rstd`` were computed from ``x`` (training) or
        are constants (evaluation with running statistics).
    centered : bool
        False for RMS norm, whose statistic does not subtract a mean.
    out : ndarray, optional
        Receives ``dx`` directly when its layout allows (see
        ``CanonicalView.output``).
    mask4 : ndarray, optional
        The elements the statistics came from (see ``CanonicalView.mask``):
        the terms fed back through them reach these elements only.

    Returns
    -------
    dx : ndarray
        ``out``, or a new array shaped and laid out like ``x``.
    dweight2, dbias2 : ndarray
        ``(C, W)`` float64.
    """
    _, O, _, I = canon.shape4
    weight2 = weight2.astype(canon.x4.dtype, copy=False)
    kernels, tiling, whole_groups = plan_kernels(canon.shape4, weight2.shape[1])
    dy4 = canon.view(dy)
    sums = _gradient_buffers(canon, tiling, weight2.shape[1])
    refine = refines_mean(canon.x4.dtype, stats_from_input, centered)
    if not stats_from_input:
        mask4 = None  # constant statistics: no feedback, no count
    # With a mask, whole groups are counted by the task that reduces them, split
    # groups by the gradient-sums kernel.
    count = O * I
    if not whole_groups:
        counts = _gradient_sums(
            kernels, canon, dy4, mean, rstd, weight2, refine, tiling, sums, mask4
        )
        if counts is not None:
            count = counts
        if refine:
            mean = _refine_mean(canon, mean, rstd, tiling, sums, count)
    dx = _input_gradient(
        kernels,
        canon,
        dy4,
        mean,
        rstd,
        weight2,
        stats_from_input,
        centered,
        refine,
        count,
        tiling,
        sums[:2],
        sums[3:] if whole_groups else None,
        out,
        mask4,
    )
    param_dy, param_dyx = sums[3:]
    return dx, _block_total(param_dyx), _block_total(param_dy)


def refines_mean(dtype, stats_from_input, centered):
    """Whether a backward in precision ``dtype`` refines the given mean from ``x``.

    float32 statistics (those of float16 and float32 input) round the mean
    by up to half an ulp of the data's offset, which ``dx`` and the
    parameter gradients magnify; float64 statistics are exact enough.  Only
    a mean computed from ``x`` can be refined from it.
    """
    return stats_from_input and centered and np.dtype(dtype).itemsize < 8


def _refine_mean(canon, mean, rstd, tiling, sums, count):
    """The group means refined from ``sums``, which are updated to be around them.

    float32 statistics round the mean by up to half an ulp of the data's
    offset; ``group_d = sum(x - mean)`` over the ``count`` elements the
    statistics came from measures that rounding, so the sums around the
    given mean are moved to the mean of ``x``.  Groups split into o-chunks
    have one ``b`` per task block, so each block's parameter sums belong to
    one group.
    """
    O = canon.shape4[1]
    group_g, group_gx, group_d, param_dy, param_dyx = sums
    n_o = -(-O // tiling[1])
    block_group = np.arange(param_dy.shape[0]) // n_o
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN or inf stay NaN, silently
        delta = np.where(count != 0, group_d / count, 0.0)
        group_gx -= delta * group_g
        param_dyx -= (delta * rstd)[block_group][:, :, None] * param_dy
        return mean + delta


def gradient_sums(canon, dy, mean, rstd, weight2):
    """The reductions of :func:`backward` alone, for sums to be combined before ``dx``.

    Parameters are those of :func:`backward` (statistics from the input,
    centered).

    Returns
    -------
    group_g, group_gx : ndarray
        ``(B, C)`` float64 ``sum(dy*w)`` and ``sum(dy*w*(x - mean))`` of each group.
    dweight2, dbias2 : ndarray
        ``(C, W)`` float64 parameter gradients.
    """
    weight2 = weight2.astype(canon.x4.dtype, copy=False)
    kernels, tiling, _ = plan_kernels(canon.shape4, weight2.shape[1])
    sums = _gradient_buffers(canon, tiling, weight2.shape[1])
    _gradient_sums(kernels, canon, canon.view(dy), mean, rstd, weight2, False, tiling, sums, None)
    group_g, group_gx, _, param_dy, param_dyx = sums
    return group_g, group_gx, _block_total(param_dyx), _block_total(param_dy)


def input_gradient(canon, dy, mean, rstd, weight2, group_g, group_gx, count, out=None, mask4=None):
    """``dx`` of a centered norm from given group sums over ``count`` elements per group.

    The second half of :func:`backward` with the statistics taken from the
    input, when the groups extend beyond ``x``: ``group_g`` and ``group_gx``
    are :func:`gradient_sums`' sums over every part of the groups, and
    ``count`` the number of elements the statistics came from, a ``(B, C)``
    array with a mask ``mask4``.
    """
    weight2 = weight2.astype(canon.x4.dtype, copy=False)
    kernels, tiling, _ = plan_kernels(canon.shape4, weight2.shape[1])
    return _input_gradient(
        kernels,
        canon,
        canon.view(dy),
        mean,
        rstd,
        weight2,
        True,
        True,
        False,
        count,
        tiling,
        (group_g, group_gx),
        None,
        out,
        mask4,
    )


def kernel_mask(kernels, mask4):
    """``mask4`` as the kernels of a regime read it (None stays None).

    The slab regime reads a slab's channels and elements as one run: where
    they merge (their strides allow it), the mask is viewed as ``(B, O, 1,
    C * I)``, so that a slab's selection is a view, not a gather.
    """
    if mask4 is None or kernels is not _kernels.SLAB:
        return mask4
    B, O, C, I = mask4.shape
    sb, so, sc, si = mask4.strides
    if not (C == 1 or I == 1 or sc == I * si):
        return mask4
    merged = si if I > 1 else sc
    return as_strided(mask4, (B, O, 1, C * I), (sb, so, 0, merged))


def group_counts(mask4):
    """``(B, C)`` float64: how many elements of each group ``mask4`` selects.

    Axes that the mask broadcasts over (zero strides) are counted by
    multiplying, not by reading the same values again.
    """
    B, O, C, I = mask4.shape
    factor = 1
    if mask4.strides[1] == 0:
        factor *= O
        mask4 = mask4[:, :1]
    if mask4.strides[3] == 0:
        factor *= I
        mask4 = mask4[:, :, :, :1]
    if mask4.strides[0] == 0:
        mask4 = mask4[:1]
    if mask4.strides[2] == 0:
        mask4 = mask4[:, :, :1]
    counts = np.empty(mask4.shape[::2])
    _kernels.count_selected(mask4, counts)
    return np.broadcast_to(counts * factor, (B, C)).copy()


def _block_total(partial_sums):
    """The sum of per-block parameter sums, in a fixed order (no copy for one block)."""
    if partial_sums.shape[0] == 1:
        return partial_sums[0]
    with np.errstate(invalid="ignore"):  # inf - inf is NaN silently, as in the kernels
        return partial_sums.sum(axis=0)


def _gradient_buffers(canon, tiling, W):
    """Zeroed ``(group_g, group_gx, group_d, param_dy, param_dyx)`` for the backward kernels."""
    B, O, C, _ = canon.shape4
    n_blocks = _kernels.n_param_blocks(B, O, *tiling[:2])
    return (*_arrays(np.zeros, 3, (B, C)), *_arrays(np.zeros, 2, (n_blocks, C, W)))


def _gradient_sums(kernels, canon, dy4, mean, rstd, weight2, refine, tiling, sums, mask4):
    """The gradient-sums kernel into ``sums``; the o-chunks of each group add up in order.

    ``mask4`` (or None) selects the elements of the deviation sums.  Returns
    the ``(B, C)`` counts of the selected elements, None without a mask.
    """
    B, O, C, _ = canon.shape4
    parts = _arrays(np.zeros, 3, (B, -(-O // tiling[1]), C))
    part_count = None if mask4 is None else np.zeros((B, -(-O // tiling[1]), C))
    if canon.x4.size:
        _launch(
            kernels.gradient_sums,
            dy4,
            canon.x4,
            mean,
            rstd,
            weight2,
            refine,
            tiling,
            *parts,
            *sums[3:],
            kernel_mask(kernels, mask4),
            part_count,
        )
    with np.errstate(invalid="ignore"):  # inf - inf is NaN silently, as in the kernels
        for total, part in zip(sums[:3], parts):
            part.sum(axis=1, out=total)
    return None if part_count is None else part_count.sum(axis=1)


def _input_gradient(
    kernels,
    canon,
    dy4,
    mean,
    rstd,
    weight2,
    from_input,
    centered,
    refine,
    count,
    tiling,
    group_sums,
    param_sums,
    out,
    mask4,
):
    """The input-gradient kernel; it reduces the groups into ``param_sums`` where given.

    ``group_sums`` is ``(group_g, group_gx)``: given, or receiving the
    reductions; ``param_sums`` is ``(param_dy, param_dyx)`` or None.
    ``count`` is a number, or the ``(B, C)`` counts of a mask ``mask4``
    (tasks that reduce whole groups count them themselves).
    """
    counts = count if isinstance(count, np.ndarray) else None
    if counts is not None:
        count = 0
    dx, dx4 = canon.output(out)
    if dx4.size:
        _launch(
            kernels.input_gradient,
            dy4,
            canon.x4,
            mean,
            rstd,
            weight2,
            from_input,
            centered,
            refine,
            count,
            tiling,
            *group_sums,
            *(param_sums or (None, None)),
            dx4,
            kernel_mask(kernels, mask4),
            counts,
        )
    return dx
