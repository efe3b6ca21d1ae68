"""The canonical ``(B, O, C, I)`` view of an array for the kernels.

Each axis of the input has a role:

``"S"``  kept, one statistic per index, not indexing the affine parameters
         (the sample axis of instance/group norm, the rows of layer norm);
``"C"``  kept and indexing the affine parameters (the channel axis);
``"K"``  kept, either of the above (``moments``);
``"R"``  reduced;
``"W"``  reduced and indexing the affine parameters (layer norm's
         normalized axes, the channels inside a group).

If the array is dense in some axis order (C order, Fortran order, channels-last
strides, ...) and that order reads as ``S* R* C* W* R*``, the canonical view is
a zero-copy reshape: ``B = S``, ``O`` = the first reduced block, ``C = C``,
``I = W * R``.  Otherwise the array is copied once into the order
``S C W R``.  Outputs are allocated in the same memory order as the view, so
they come back in the input's layout.
"""

import itertools
import math

import numpy as np

from . import _pool

_PHASE = {"S": 0, "C": 2, "W": 3}


def _memory_order(shape, strides, itemsize):
    """Axis order in which an array is C-contiguous, or None if it is not dense.

    Works from the shape and the byte strides alone, so that device arrays,
    which cannot be transposed freely, share the analysis.
    """
    big = [a for a in range(len(shape)) if shape[a] > 1]
    big.sort(key=lambda a: -strides[a])
    perm = big + [a for a in range(len(shape)) if shape[a] <= 1]
    return perm if dense_in(shape, strides, itemsize, perm) else None


def dense_in(shape, strides, itemsize, perm):
    """Whether an array is C-contiguous once its axes are put in the order ``perm``."""
    if 0 in shape:
        return True
    step = itemsize
    for a in reversed(perm):
        if shape[a] > 1:
            if strides[a] != step:
                return False
            step *= shape[a]
    return True


def c_strides(shape, itemsize):
    """Byte strides of a C-contiguous array of ``shape``."""
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def reshaped_strides(shape, strides, new_shape):
    """Byte strides of ``new_shape`` over the same memory (C order), or None.

    None means a reshape would need a copy.  This is NumPy's rule: each run
    of old axes that the new shape merges or splits must be contiguous.
    """
    if 0 in shape:
        return tuple(0 for _ in new_shape)
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    new = [n for n in new_shape if n != 1]
    found = []
    i = j = 0
    while i < len(old):
        first_old, first_new = i, j
        old_size, new_size = old[i][0], new[j]
        while old_size != new_size:
            if old_size < new_size:
                i += 1
                old_size *= old[i][0]
            else:
                j += 1
                new_size *= new[j]
        if any(old[k][1] != old[k + 1][1] * old[k + 1][0] for k in range(first_old, i)):
            return None
        stride = old[i][1]
        run = []
        for k in range(j, first_new - 1, -1):
            run.append(stride)
            stride *= new[k]
        found.extend(reversed(run))
        i += 1
        j += 1
    found = iter(found)
    return tuple(0 if n == 1 else next(found) for n in new_shape)


def _split_blocks(roles, shape, perm):
    """Assign each axis of ``perm`` to one of the blocks B, O, C, I.

    Returns the four lists of axes, or None if ``perm`` does not read as
    ``S* R* C* W* R*`` (unit axes may stand anywhere).
    """
    blocks = ([], [], [], [])
    phase = 0
    last_weighted = -1
    for position, a in enumerate(perm):
        role = roles[a]
        if shape[a] == 1:
            blocks[0 if role in "SK" else 2 if role == "C" else 3].append(a)
            continue
        if role == "R":
            # Reduced axes go to the contiguous I block unless a kept axis follows.
            kept_after = any(roles[b] in "CK" and shape[b] > 1 for b in perm[position + 1 :])
            p = 1 if phase <= 1 and kept_after else 4
        elif role == "K":
            p = 0 if phase == 0 else 2
        else:
            p = _PHASE[role]
        if p < phase:
            return None
        if role == "W":
            if a < last_weighted:
                return None
            last_weighted = a
        phase = p
        blocks[min(p, 3)].append(a)
    return blocks


def mask_view(mask, perm, shape4):
    """A boolean ``mask`` of an array's shape, with the axes ``perm``, as ``(B, O, C, I)``.

    ``mask`` is typically a broadcast view, zero strides along the axes the
    user's mask lacks.  The result keeps them where the blocks merge its
    axes without a copy (``reshaped_strides``).  Where a block mixes
    broadcast and real axes, the fewest broadcast axes that make it merge
    are copied out, never the others: a mask ``(N, 1, T)`` of a batch norm
    over ``(N, C, T)`` stays one byte per ``(n, t)``.
    """
    t = mask.transpose(perm)
    strides = reshaped_strides(t.shape, t.strides, shape4)
    if strides is None:
        t = _expanded_mask(t, shape4)
        strides = reshaped_strides(t.shape, t.strides, shape4)
    return np.lib.stride_tricks.as_strided(t, shape4, strides, writeable=False)


def _expanded_mask(t, shape4):
    """``t`` copied with as few of its broadcast axes expanded as a reshape to ``shape4`` needs."""
    broadcast = [a for a in range(t.ndim) if t.strides[a] == 0 and t.shape[a] > 1]
    base = t[tuple(slice(0, 1) if a in broadcast else slice(None) for a in range(t.ndim))]
    shape, strides = mask_expansion(t.shape, t.strides, t.itemsize, shape4)
    copy = np.ascontiguousarray(np.broadcast_to(base, shape))
    return np.lib.stride_tricks.as_strided(copy, t.shape, strides, writeable=False)


def mask_expansion(shape, strides, itemsize, shape4):
    """``(copy_shape, copy_strides)`` of the copy :func:`mask_view` makes of a mask.

    The mask has ``shape`` and byte ``strides`` (zero where it broadcasts);
    the copy is C-contiguous of ``copy_shape``, 1 along the broadcast axes it
    keeps, and ``copy_strides`` view it as ``shape`` and reshape to
    ``shape4``.  From shapes and strides alone, so that device masks share it.
    """
    broadcast = [a for a in range(len(shape)) if strides[a] == 0 and shape[a] > 1]
    for n_kept in range(len(broadcast), -1, -1):
        for kept in itertools.combinations(broadcast, n_kept):
            copy_shape = tuple(1 if a in kept else n for a, n in enumerate(shape))
            copy_strides = tuple(
                0 if a in kept else s for a, s in enumerate(c_strides(copy_shape, itemsize))
            )
            if reshaped_strides(shape, copy_strides, shape4) is not None:
                return copy_shape, copy_strides
    raise AssertionError("a C-contiguous copy always reshapes")


class _ArrayInterface:
    def __init__(self, interface, owner):
        self.__array_interface__ = interface
        self.owner = owner


def _kernel_input(a):
    """``a``, or a writable alias of it when it is read-only.

    Numba types read-only arrays separately and would compile every kernel a
    second time for them (JAX arrays and ``np.broadcast_to`` views are
    read-only).  The kernels never write their inputs, so an alias that only
    drops the flag is safe.
    """
    if a.flags.writeable:
        return a
    interface = dict(a.__array_interface__, data=(a.__array_interface__["data"][0], False))
    return np.asarray(_ArrayInterface(interface, a))


GEOMETRY_CACHE_SIZE = 1024
_GEOMETRY: dict[tuple, tuple] = {}


def geometry(shape, strides, itemsize, roles):
    """``(perm, inverse, shape4, stat_axes)`` of an array's canonical view.

    ``perm`` orders the axes as the blocks ``B, O, C, I``: the array's own
    memory order where it reads as those blocks (the view is then a
    reshape), else a fixed order (the view is a copy).  Cached: small calls
    in a training loop repeat the same shapes.
    """
    key = (shape, strides, itemsize, roles)
    found = _GEOMETRY.get(key)
    if found is not None:
        return found
    ndim = len(shape)
    perm = _memory_order(shape, strides, itemsize)
    blocks = None if perm is None else _split_blocks(roles, shape, perm)
    if blocks is None:
        order = [a for r in ("SK", "C", "W", "R") for a in range(ndim) if roles[a] in r]
        blocks = _split_blocks(roles, shape, order)
    perm = tuple(a for block in blocks for a in block)
    inverse = tuple(int(i) for i in np.argsort(perm))
    shape4 = tuple(math.prod(shape[a] for a in block) for block in blocks)
    kept = [a for a in perm if roles[a] in "SKC"]
    stat_axes = tuple([a for a in kept if a in blocks[0]] + [a for a in kept if a in blocks[2]])
    if len(_GEOMETRY) >= GEOMETRY_CACHE_SIZE:
        _GEOMETRY.clear()
    found = _GEOMETRY[key] = (perm, inverse, shape4, stat_axes)
    return found


def stats_view(shape, stat_axes, axes):
    """``(view, order)`` of a ``(B, C)`` statistic of an array of ``shape``.

    The statistic reshaped to ``view`` runs over ``stat_axes`` (the canonical
    view's order); transposed by ``order`` it runs over ``axes``.  ``order``
    is None where the two orders agree.
    """
    view = tuple(shape[a] for a in stat_axes)
    axes = tuple(axes)
    return view, None if axes == tuple(stat_axes) else tuple(stat_axes.index(a) for a in axes)


class CanonicalView:
    """The ``(B, O, C, I)`` view of ``x`` for the given axis roles.

    Parameters
    ----------
    x : ndarray
        Input, already in the compute dtype (float32 or float64).
    roles : str
        One role letter per axis of ``x`` (see the module docstring).

    Attributes
    ----------
    x4 : ndarray
        C-contiguous 4-D view (or copy) of ``x``.
    """

    def __init__(self, x, roles):
        self.shape = x.shape
        self.dtype = x.dtype
        self.roles = roles
        self.perm, self.inverse, self.shape4, self.stat_axes = geometry(
            x.shape, x.strides, x.itemsize, roles
        )
        self.x4 = self.view(x)

    def view(self, a):
        """Canonical 4-D view of an array shaped like ``x`` (copied if needed)."""
        t = a.transpose(self.perm)
        if not t.flags.c_contiguous or t.dtype != self.dtype:
            t = np.ascontiguousarray(t, dtype=self.dtype)
        return _kernel_input(t.reshape(self.shape4))

    def output(self, out=None):
        """``(full, view4)``: an array shaped like ``x`` and its canonical view.

        ``out`` is written directly when its dtype and memory order allow it;
        otherwise a new array is returned, and the caller copies it into
        ``out``.
        """
        if out is not None and out.dtype == self.dtype:
            t = out.transpose(self.perm)
            if t.flags.c_contiguous:
                return out, t.reshape(self.shape4)
        t = _pool.empty([self.shape[a] for a in self.perm], self.dtype)
        return t.transpose(self.inverse), t.reshape(self.shape4)

    def mask(self, mask):
        """The canonical view of a boolean ``mask`` of ``x``'s shape (see :func:`mask_view`)."""
        return _kernel_input(mask_view(mask, self.perm, self.shape4))

    def stats_to_axes(self, stat, axes):
        """Reshape a ``(B, C)`` statistic to the kept ``axes``, in that order."""
        view, order = stats_view(self.shape, self.stat_axes, axes)
        t = stat.reshape(view)
        return t if order is None else t.transpose(order)

    def stats_from_axes(self, stat, axes):
        """Inverse of :meth:`stats_to_axes`: a statistic shaped by ``axes`` to ``(B, C)``."""
        t = np.asarray(stat).transpose([axes.index(a) for a in self.stat_axes])
        return np.array(t, dtype=np.float64, order="C").reshape(self.shape4[0], self.shape4[2])
