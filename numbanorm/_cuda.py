"""The GPU backend: :class:`numbanorm._backends.Backend` on device arrays.

Any object exposing ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA
tensors, Numba device arrays) and the Numba CUDA simulator's arrays are
accepted.  The kernels see them as Numba device arrays, without a copy;
outputs are allocated by the input's own library (so its memory pool serves
them) and returned as that library's arrays.  Kernels run on the library's
current stream (the default stream for Numba arrays).

The kernels: ``_cuda_rows.py`` (a team of threads per group),
``_cuda_columns.py`` (column tiles merged per group), ``_cuda_elementwise.py``
(copies, fills, running statistics), and what they share,
``_cuda_shared.py``.  This module chooses the regime of each call and
launches them.

This module is imported only when a device array reaches a public function.
"""

import functools
import math
import threading
from typing import Any

import numpy as np
from numba import cuda

from . import _engine
from ._cuda_columns import (
    columns_affine,
    columns_gradient_sums,
    columns_moments,
    group_coefficients,
)
from ._cuda_elementwise import (
    running_as_groups,
    selected_moments,
    strided_copy,
    strided_fill,
    update_running,
)
from ._cuda_rows import rows_backward, rows_forward
from ._cuda_shared import (
    BLOCK_THREADS,
    MANY_GROUPS,
    MAX_TEAM,
    SIMULATED,
    SIMULATED_BLOCKS,
    SM_BLOCKS,
    SMALL_GROUP,
    TILE_COLUMNS,
    TILE_ROWS,
    UNROLL,
)
from ._layout import c_strides, dense_in, geometry, mask_expansion, reshaped_strides

# ----------------------------------------------------------------------------
# Arrays of the caller's library


def _numba_view(a, shape, strides):
    """A Numba device array over ``a``'s memory, from its first element."""
    shape = tuple(int(n) for n in shape)
    strides = tuple(int(s) for s in strides)
    if SIMULATED:
        return type(a)(np.lib.stride_tricks.as_strided(a._ary, shape, strides))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(shape, strides, a.dtype, gpu_data=a.gpu_data)


def _typed_view(buffer, offset, shape, dtype):
    """A C-ordered ``dtype`` array of ``shape`` at byte ``offset`` of a byte buffer."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if SIMULATED:
        return type(buffer)(buffer._ary[offset : offset + nbytes].view(dtype).reshape(shape))
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray(
        tuple(shape),
        c_strides(shape, dtype.itemsize),
        dtype,
        gpu_data=buffer.gpu_data.view(offset, offset + nbytes),
    )


# One scratch buffer per (device, stream, thread), grown as calls need:
# kernels on one stream run in order, so a call's scratch is free once its
# kernels have run, and the next call on that stream may reuse it without
# waiting.  Per thread, so that two threads' calls on one stream do not
# interleave their kernels over the same scratch.
_SCRATCH: dict[tuple[int, int, int], Any] = {}
_COUNTERS: dict[tuple[int, int, int], Any] = {}
_ALIGNMENT = 256
# Larger pieces (column partial sums, one per column and chunk of rows, grow
# with the input's columns) are allocated per call rather than kept.
_POOLED_BYTES = 64 << 20


class _Arena:
    """The scratch of one call: consecutive pieces of its stream's buffer."""

    def __init__(self, stream):
        device = 0 if SIMULATED else cuda.get_current_device().id
        self._key = (device, int(stream.handle) if stream else 0, threading.get_ident())
        self._offset = 0

    def array(self, shape, dtype=np.float64):
        """A scratch array, valid until the next call on this stream."""
        shape = tuple(int(n) for n in shape)
        nbytes = -(-math.prod(shape) * np.dtype(dtype).itemsize // _ALIGNMENT) * _ALIGNMENT
        if nbytes > _POOLED_BYTES:
            return cuda.device_array(shape, dtype)
        buffer = _SCRATCH.get(self._key)
        end = self._offset + nbytes
        if buffer is None or buffer.size < end:
            # A new buffer; pieces of the old one stay alive with their views.
            buffer = _SCRATCH[self._key] = cuda.device_array(
                max(end, 2 * (0 if buffer is None else buffer.size)), np.uint8
            )
        view = _typed_view(buffer, self._offset, shape, dtype)
        self._offset = end
        return view

    def counter(self):
        """The stream's counter for a "last block merges" kernel: one int32, zero
        between launches (the last block resets it)."""
        if self._key not in _COUNTERS:
            _COUNTERS[self._key] = cuda.to_device(np.zeros(1, np.int32))
        return _COUNTERS[self._key]


_CONSTANTS: dict[tuple[int, float], Any] = {}


def _constant(value, shape):
    """A float64 array of ``shape`` holding ``value`` everywhere: one element, zero strides."""
    key = (0 if SIMULATED else cuda.get_current_device().id, value)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = cuda.to_device(np.array([value], np.float64))
    return _numba_view(_CONSTANTS[key], shape, (0,) * len(shape))


def _dense(a, shape):
    """A C-ordered view of ``shape`` over a contiguous Numba array ``a``."""
    return _numba_view(a, shape, c_strides(shape, a.dtype.itemsize))


def _permuted(a, axes):
    """A Numba array's axes in another order, without a copy."""
    return _numba_view(a, [a.shape[i] for i in axes], [a.strides[i] for i in axes])


def _reshaped(a, shape, stream):
    """A Numba array in another shape: a view where its strides allow, else a copy."""
    strides = reshaped_strides(a.shape, a.strides, tuple(shape))
    if strides is None:
        dense = cuda.device_array(a.shape, a.dtype)
        copy(a, dense, stream=stream)
        a, strides = dense, c_strides(shape, a.dtype.itemsize)
    return _numba_view(a, shape, strides)


class _NumbaArrays:
    """Numba device arrays (and the simulator's), the common currency of the kernels.

    ``stream`` is where the kernels of a call run: the default stream here,
    the caller's current stream for CuPy and PyTorch, so that the work is
    ordered with theirs and with their allocators' reuse of memory.
    """

    stream = 0

    @functools.cached_property
    def scratch(self):
        """This call's :class:`_Arena`."""
        return _Arena(self.stream)

    def empty(self, shape, dtype):
        return cuda.device_array(tuple(shape), np.dtype(dtype))

    def kernel_array(self, a):
        return a

    def permuted(self, a, axes):
        return _permuted(a, axes)

    def reshaped(self, a, shape):
        return _reshaped(a, shape, self.stream)


def _external_stream(pointer):
    return cuda.external_stream(pointer) if pointer else 0


class _CupyArrays(_NumbaArrays):
    def __init__(self):
        import cupy

        self._cupy = cupy
        self.stream = _external_stream(cupy.cuda.get_current_stream().ptr)

    def empty(self, shape, dtype):
        return self._cupy.empty(tuple(shape), dtype)

    def kernel_array(self, a):
        return _kernel_array(a, self.stream)

    def permuted(self, a, axes):
        return a.transpose(axes)

    def reshaped(self, a, shape):
        return a.reshape(shape)


class _TorchArrays(_NumbaArrays):
    def __init__(self, device):
        import torch

        self._torch = torch
        self._device = device
        self.stream = _external_stream(torch.cuda.current_stream(device).cuda_stream)

    def empty(self, shape, dtype):
        dtype = self._torch.from_numpy(np.empty(0, dtype)).dtype
        return self._torch.empty(tuple(shape), dtype=dtype, device=self._device)

    def kernel_array(self, a):
        return _kernel_array(a, self.stream)

    def permuted(self, a, axes):
        return a.permute(*axes)

    def reshaped(self, a, shape):
        return a.reshape(shape)


def _library_of(x):
    module = type(x).__module__
    if module.startswith("cupy"):
        return _CupyArrays()
    if module.startswith("torch"):
        return _TorchArrays(x.device)
    return _NumbaArrays()


def _flat(a):
    """1-D view of ``a``'s memory from its first element, and its element strides."""
    itemsize = a.dtype.itemsize
    if any(s < 0 or s % itemsize for s in a.strides):
        raise ValueError(
            "device arrays with negative or unaligned strides are not supported; "
            "pass a contiguous copy"
        )
    strides = tuple(s // itemsize for s in a.strides)
    extent = 1 + sum((n - 1) * s for n, s in zip(a.shape, strides))
    return _numba_view(a, (extent,), (itemsize,)), strides


def _new(library, shape, dtype):
    """A new array of the caller's library, and its Numba view."""
    obj = library.empty(shape, dtype)
    return obj, library.kernel_array(obj)


def _kernel_array(value, stream=0):
    """A Numba view of any device array, ordered after the work that produced it.

    Numba's arrays are views already.  Others are taken without the host wait
    Numba's ``as_cuda_array`` makes on the stream their interface names:
    where that stream is not the call's ``stream``, the call's stream waits
    for it on the device instead (:func:`_follow`).
    """
    if getattr(type(value), "__cuda_ndarray__", False):
        return value
    if type(value).__module__.startswith("torch"):
        value = value.detach()
    array = cuda.as_cuda_array(value, sync=False)
    _follow(value.__cuda_array_interface__.get("stream"), stream)
    return array


# How the CUDA array interface names the legacy and per-thread default streams.
_DEFAULT_STREAMS = (1, 2)


def _follow(producer, stream):
    """Make ``stream`` wait, on the device, for the stream ``producer`` (a pointer).

    Nothing to do without a producer stream or where it is ``stream`` itself
    (or a default stream, which the default ``stream`` 0 is ordered with).
    """
    ours = int(stream.handle) if stream else 0
    if not producer or producer == ours or (ours == 0 and producer in _DEFAULT_STREAMS):
        return
    event = cuda.event(timing=False)
    event.record(stream=cuda.external_stream(producer))
    event.wait(stream=stream)


def _grid(n, threads=256):
    return max(1, min(-(-n // threads), 4096)), threads


def copy(src, dst, scale=1.0, stream=0):
    """``dst[...] = src * scale`` between Numba device arrays of one shape, any layouts."""
    if not src.size:
        return
    if not src.ndim:
        src, dst = (_numba_view(a, (1,), (a.dtype.itemsize,)) for a in (src, dst))
    src_flat, src_strides = _flat(src)
    dst_flat, dst_strides = _flat(dst)
    blocks, threads = _grid(src.size)
    strided_copy[blocks, threads, stream](
        src_flat, dst_flat, tuple(src.shape), src_strides, dst_strides, scale
    )


def fill(a, value, stream=0):
    """Set every element of a Numba device array to ``value``."""
    if a.size:
        flat, strides = _flat(a)
        blocks, threads = _grid(a.size)
        strided_fill[blocks, threads, stream](flat, tuple(a.shape), strides, value)


def _accumulation_dtype(dtype):
    return np.dtype(np.float64 if dtype == np.float64 else np.float32)


# ----------------------------------------------------------------------------
# Canonical view


class DeviceView:
    """The canonical ``(B, O, C, I)`` view of a device array (see ``_layout``).

    Zero-copy when the array is dense in the canonical axis order, a device
    copy otherwise; shares the geometry analysis with the CPU view.
    """

    def __init__(self, library, x, roles):
        self.library = library
        self.stream = library.stream
        self.shape = x.shape
        self.dtype = x.dtype
        self.acc = _accumulation_dtype(x.dtype)
        # The dtype of the public statistics, as Backend.input gives it.
        self.stat_dtype = self.acc
        self.perm, self.inverse, self.shape4, self.stat_axes = geometry(
            x.shape, x.strides, x.dtype.itemsize, roles
        )
        self.x4 = self.view(x)
        # Statistics the kernels wrote into public arrays: id of the (B, C)
        # view -> (view, public array, its axes, its dtype).
        self._public = {}

    def view(self, a):
        """Canonical 4-D Numba view of a device array shaped like ``x`` (copied if needed)."""
        dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
        if dtype == a.dtype and dense_in(a.shape, a.strides, a.dtype.itemsize, self.perm):
            return _dense(a, self.shape4)
        _, dense = _new(self.library, [self.shape[i] for i in self.perm], dtype)
        copy(_permuted(a, self.perm), dense, stream=self.stream)
        return _dense(dense, self.shape4)

    def output(self, out, dtype):
        """``(full, view4)``: ``out`` when its layout allows, else a new array in ``x``'s order."""
        if out is not None and out.dtype == dtype:
            kernel_out = self.library.kernel_array(out)
            if dense_in(kernel_out.shape, kernel_out.strides, dtype.itemsize, self.perm):
                return out, _dense(kernel_out, self.shape4)
        obj, dense = _new(self.library, [self.shape[i] for i in self.perm], dtype)
        return self.library.permuted(obj, self.inverse), _dense(dense, self.shape4)

    def stats(self, count=3):
        """``count`` ``(B, C)`` float64 statistics arrays, scratch of this call."""
        return [self.library.scratch.array(self.shape4[::2]) for _ in range(count)]

    def public_stats(self, dtype, count):
        """``count`` ``(B, C)`` views of new public statistics arrays in ``dtype``.

        The public arrays run over the kept axes in increasing order; where a
        ``(B, C)`` view of them needs a copy, float64 scratch stands in.
        """
        axes = tuple(sorted(self.stat_axes))
        views = []
        for _ in range(count):
            obj, kernel = _new(self.library, [self.shape[a] for a in axes], dtype)
            target = _permuted(kernel, [axes.index(a) for a in self.stat_axes])
            strides = reshaped_strides(target.shape, target.strides, self.shape4[::2])
            if strides is None:
                return self.stats(count)
            view = _numba_view(target, self.shape4[::2], strides)
            self._public[id(view)] = (view, obj, axes, np.dtype(dtype))
            views.append(view)
        return views

    def stats_to_axes(self, stat, axes, dtype, scale=1.0):
        """``stat * scale``, ``(B, C)``, as an array of the kept ``axes``, in that order.

        A statistic the kernels wrote into such an array is that array.
        """
        public = self._public.get(id(stat))
        if public and public[0] is stat and public[2:] == (tuple(axes), dtype) and scale == 1.0:
            return public[1]
        obj, kernel = _new(self.library, [self.shape[a] for a in axes], dtype)
        target = _permuted(kernel, [axes.index(a) for a in self.stat_axes])
        copy(_dense(stat, [self.shape[a] for a in self.stat_axes]), target, scale, self.stream)
        return obj

    def stats_from_axes(self, stat, axes):
        """A statistic shaped by ``axes`` (a Numba array) as ``(B, C)``: a view where
        its strides allow, else a float64 scratch copy."""
        source = _permuted(stat, [axes.index(a) for a in self.stat_axes])
        strides = reshaped_strides(source.shape, source.strides, self.shape4[::2])
        if strides is not None:
            return _numba_view(source, self.shape4[::2], strides)
        group = self.library.scratch.array(self.shape4[::2])
        copy(source, _dense(group, source.shape), stream=self.stream)
        return group


# ----------------------------------------------------------------------------
# Regimes and their launches


def _rows_regime(shape4):
    """Whether a team per group suits the view (``_cuda_rows``), or column tiles do:
    teams for many groups, small groups, or groups of few rows."""
    B, O, C, I = shape4
    return B * C >= MANY_GROUPS or O * I <= SMALL_GROUP or O < TILE_ROWS


@functools.cache
def _resident_blocks(threads):
    """Blocks of ``threads`` that the device keeps resident at once: its SMs times
    the blocks an SM holds (a few in the simulator)."""
    if SIMULATED:
        return SIMULATED_BLOCKS
    return cuda.get_current_device().MULTIPROCESSOR_COUNT * (SM_BLOCKS * BLOCK_THREADS // threads)


def _team_launch(shape4, W):
    """``(blocks, threads, team_shift)`` of the rows regime for a view and ``W`` parameters.

    A team has a power of two of threads, enough for ``UNROLL`` elements of a
    parameter's segment each (the row for layer norm), at most ``MAX_TEAM``;
    the grid is what the device holds at once, or less for few groups.
    """
    B, O, C, I = shape4
    length = I if W in (I, 0) else I // W
    team_shift = 0
    while (1 << team_shift) < MAX_TEAM and (1 << team_shift) * UNROLL < length:
        team_shift += 1
    threads = max(BLOCK_THREADS, 1 << team_shift)
    teams = threads >> team_shift
    return min(-(-B * C // teams), _resident_blocks(threads)), threads, team_shift


def _chunks(slices, rows, K):
    """Rows per chunk of the column tiles of a ``(slices, rows, K)`` view, and the chunks."""
    tiles = slices * -(-K // TILE_COLUMNS)
    # Enough tiles to fill the device, with UNROLL rows each thread where rows allow.
    filling = -(-_resident_blocks(TILE_COLUMNS * TILE_ROWS) // max(tiles, 1))
    wanted = max(1, min(filling, -(-rows // (UNROLL * TILE_ROWS))))
    chunk_rows = max(1, -(-rows // wanted))
    return chunk_rows, -(-rows // chunk_rows)


def _column_grid(slices, K, chunks):
    """``(grid, block)`` of the column tiles: the slices' tiles in grid x (up to
    2**31 - 1 blocks), the chunks of rows in grid y (as many as fill the device)."""
    return (-(-K // TILE_COLUMNS) * slices, chunks), (TILE_COLUMNS, TILE_ROWS)


def _rows_backward(
    canon, dy4, mean, rstd, weight2, input_stats, centered, refine, dx4, refined, mask4=None
):
    """Launch :func:`~numbanorm._cuda_rows.rows_backward` over the view."""
    blocks, threads, team_shift = _team_launch(canon.shape4, weight2.shape[1])
    rows_backward(canon.acc)[blocks, threads, canon.stream](
        dy4,
        canon.x4,
        team_shift,
        mean,
        rstd,
        weight2,
        input_stats,
        centered,
        refine,
        dx4,
        refined,
        mask4,
    )


def _address(a):
    """The device address of a Numba array's first element."""
    if SIMULATED:
        return a._ary.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


def _view3(a4):
    """``(B, O, C*I)``: the columns regime's view of a canonical view."""
    B, O, C, I = a4.shape
    return _dense(a4, (B, O, C * I))


def _fold(canon, mean, update):
    """The statistics kernels' ``(counter, update)`` arguments for ``normalize``'s
    ``update`` (``mean`` stands in for the running statistics without one)."""
    if update is None:
        return canon.library.scratch.counter(), (False, mean, mean, 0.0, 1.0)
    running_mean, running_var, momentum, unbias = update
    return canon.library.scratch.counter(), (True, running_mean, running_var, momentum, unbias)


def _column_statistics(
    canon, centered, eps, mean, var, rstd, out_mean, update=None, mask4=None, count=None
):
    """The groups' float64 ``mean`` and ``var``, and ``rstd``, from ``x`` in the columns
    regime, in one launch; the mean also into ``out_mean`` (which may be ``mean``),
    and with ``update`` folded into running statistics.  With a mask ``mask4``,
    over the elements it selects, their number per group into ``count``."""
    B, O, C, I = canon.shape4
    K = C * I
    chunk_rows, chunks = _chunks(B, O, K)
    part_s1, part_s2 = (canon.library.scratch.array((B, chunks, K)) for _ in range(2))
    selection = None
    if mask4 is not None:
        selection = (mask4, canon.library.scratch.array((B, chunks, K)), count)
    grid, block = _column_grid(B, K, chunks)
    counter, fold = _fold(canon, mean, update)
    columns_moments[grid, block, canon.stream](
        _view3(canon.x4),
        I,
        centered,
        chunk_rows,
        part_s1,
        part_s2,
        counter,
        eps,
        (mean, var, rstd, out_mean),
        fold,
        selection,
    )


def _columns_pass(
    canon, dy4, mean, rstd, weight2, bias2, shift, offset, backward, out4, mask4=None
):
    """The columns regime's elementwise pass: ``y`` of the forward, or ``dx`` of the
    backward with the groups' ``shift`` and ``offset`` (see ``_cuda_columns``),
    which reach the elements a mask ``mask4`` selects only."""
    B, O, C, I = canon.shape4
    rows_per_block, chunks = _chunks(B, O, C * I)
    grid, block = _column_grid(B, C * I, chunks)
    columns_affine(canon.acc)[grid, block, canon.stream](
        _view3(canon.x4),
        _view3(dy4),
        backward,
        rows_per_block,
        mean,
        rstd,
        weight2,
        bias2,
        shift,
        offset,
        _view3(out4),
        mask4,
    )


def _column_sums(canon, dy4, mean, rstd, per_sample, dweight2, dbias2, groups=None, mask4=None):
    """The backward's column sums, one launch: per-column partial ``sum(dy)`` and
    ``sum(dy*x̂)``, and from them the parameter gradients, into ``dweight2`` and
    ``dbias2``.

    The partials are per sample (``B`` slices) or over all samples at once
    (one slice, for the parameters' sums alone).  ``groups`` (per sample only)
    is ``(weight2, input_stats, centered, refine, count, refined, shift,
    offset)``: the groups' coefficients of ``dx`` are merged too (see
    ``_cuda_columns.columns_gradient_sums``), with a mask ``mask4`` from the
    elements it selects.
    """
    B, O, C, I = canon.shape4
    K = C * I
    slices, slice_rows = (B, O) if per_sample else (1, B * O)
    x3, dy3 = (_dense(a, (slices, slice_rows, K)) for a in (canon.x4, dy4))
    chunk_rows, chunks = _chunks(slices, slice_rows, K)
    refine = groups is not None and groups[3]
    partials = tuple(
        canon.library.scratch.array((slices, chunks, K)) for _ in range(3 if refine else 2)
    )
    if not refine:
        partials += (partials[0],)
    if groups is None:
        groups = (dweight2, False, False, False, 1, mean, mean, mean)
    selection = None
    if mask4 is not None:
        selection = (mask4, canon.library.scratch.array((slices, chunks, K)))
    grid, block = _column_grid(slices, K, chunks)
    columns_gradient_sums(canon.acc)[grid, block, canon.stream](
        dy3,
        x3,
        mean,
        rstd,
        O,
        I,
        chunk_rows,
        partials,
        canon.library.scratch.counter(),
        (dweight2, dbias2),
        (per_sample, *groups),
        selection,
    )


def _statistics(canon, centered, eps, mean, var, rstd, mask4=None, count=None):
    """The groups' ``mean``, ``var`` and ``rstd`` from ``x``, without the elementwise pass;
    with a mask ``mask4``, from the elements it selects, their number into ``count``."""
    B, O, C, I = canon.shape4
    if _rows_regime(canon.shape4):
        blocks, threads, team_shift = _team_launch(canon.shape4, I)
        rows_forward(canon.acc)[blocks, threads, canon.stream](
            canon.x4,
            team_shift,
            centered,
            True,
            False,
            eps,
            mean,
            var,
            rstd,
            mean,
            mean,
            canon.x4,
            *_fold(canon, mean, None),
            None if mask4 is None else (mask4, count),
        )
    else:
        _column_statistics(canon, centered, eps, mean, var, rstd, mean, None, mask4, count)


def group_moments(canon):
    """``(mean, M2)`` of every group of ``x``, ``(B, C)`` device arrays (NaN if empty).

    The counterpart of ``_engine.group_moments``, in float64; M2, the sum of
    squared deviations, is ``var * count`` from the variance the kernels
    write.
    """
    B, O, C, I = canon.shape4
    mean, var, rstd = canon.stats()
    m2 = canon.library.scratch.array((B, C))
    if not (B * C and O * I):
        for stat in (mean, m2):
            fill(stat, math.nan, canon.stream)
        return mean, m2
    _statistics(canon, True, 0.0, mean, var, rstd)
    copy(var, m2, np.float64(O * I), canon.stream)
    return mean, m2


def selected_statistics(canon, mask4):
    """``(mean, var, count)`` of the elements of every group that ``mask4`` selects,
    ``(B, C)`` float64 device arrays (zero for a group without any)."""
    B, O, C, I = canon.shape4
    mean, var, rstd, count = canon.stats(4)
    if not O * I:
        for stat in (mean, var, count):
            fill(stat, 0.0, canon.stream)
    elif B * C:
        _statistics(canon, True, 0.0, mean, var, rstd, mask4, count)
    return mean, var, count


# ----------------------------------------------------------------------------
# The backend


class CudaBackend:
    """The backend of GPU arrays; see :class:`numbanorm._backends.Backend`.

    Created per call from ``x``, whose library allocates the results.
    Statistics are float64 Numba device arrays where they are the backend's
    own, and written in their public dtype where the kernels write the
    results; parameters are read in their own dtype; the backward writes the
    parameter gradients straight into their public arrays.
    """

    def out_array(self, out):
        return _kernel_array(out, self.stream)

    def array(self, value, name):
        return _kernel_array(value, self.stream)

    def __init__(self, x):
        # Gradients the backward wrote into public arrays: id of the (C, W)
        # view -> (view, public array, its shape, its dtype).
        self._public_gradients = {}
        self.library = _library_of(x)
        self.stream = self.library.stream
        dtype = _kernel_array(x, self.stream).dtype
        self.acc = _accumulation_dtype(dtype if dtype.kind == "f" else np.dtype(np.float64))

    def input(self, x):
        """``(x as a Numba array, result dtype, statistics dtype)``; float16 stays float16."""
        xc = _kernel_array(x, self.stream)
        kind = xc.dtype.kind
        if kind == "f" and xc.dtype.itemsize in (2, 4, 8):
            result = stat = xc.dtype
            if xc.dtype.itemsize == 2:
                stat = np.dtype(np.float32)
        elif kind in "iub":
            _, dense = _new(self.library, xc.shape, np.float64)
            copy(xc, dense, stream=self.stream)
            xc, result, stat = dense, dense.dtype, dense.dtype
        else:
            raise TypeError(
                f"x must be a real floating, integer or boolean array, got dtype {xc.dtype}"
            )
        return xc, result, stat

    @staticmethod
    def writeable(a):
        return True

    def check_updatable(self, value, name):
        dtype = _kernel_array(value, self.stream).dtype
        if dtype.kind != "f":
            raise TypeError(
                f"{name} must be a floating-point array to be updated in place, got dtype {dtype}"
            )

    def reshaped(self, a, shape):
        if getattr(type(a), "__cuda_ndarray__", False):
            return _reshaped(a, shape, self.stream)
        return self.library.reshaped(a, shape)

    def view(self, xc, shape, roles):
        return DeviceView(self.library, _reshaped(xc, shape, self.stream), roles)

    def mask(self, canon, where, shape):
        """A view of the device array ``where``, without a copy where its strides allow.

        As ``_layout.mask_view``: the axes it broadcasts along keep zero
        strides, and where a block of the canonical view mixes them with
        others, the fewest are expanded, in scratch of this call (one launch).
        """
        mask = _kernel_array(where, self.stream)
        missing = len(shape) - mask.ndim
        strides = (0,) * missing + tuple(
            0 if n == 1 else s for n, s in zip(mask.shape, mask.strides)
        )
        # canon.shape splits an axis of ``shape`` at most, which any strides allow.
        strides = reshaped_strides(tuple(shape), strides, canon.shape)
        ordered = [canon.shape[a] for a in canon.perm]
        strides = [strides[a] for a in canon.perm]
        strides4 = reshaped_strides(ordered, strides, canon.shape4)
        if strides4 is None:
            copy_shape, copy_strides = mask_expansion(ordered, strides, 1, canon.shape4)
            expanded = self.library.scratch.array(copy_shape, np.bool_)
            copy(_numba_view(mask, copy_shape, strides), expanded, stream=self.stream)
            mask, strides4 = expanded, reshaped_strides(ordered, copy_strides, canon.shape4)
        return _numba_view(mask, canon.shape4, strides4)

    def group_counts(self, mask):
        """The mask copied to the host and counted there: a host wait, which only a
        masked training forward with running statistics makes (the driver
        checks the counts before anything is written)."""
        return _engine.group_counts(np.asarray(self.to_host(mask)))

    def param2(self, value, shape2, fill_value):
        """The parameter itself, read by the kernels in its own dtype (a constant for None)."""
        if value is None:
            return _constant(float(fill_value), shape2)
        return _reshaped(value, shape2, self.stream)

    def running_groups(self, running, shape2, eps):
        mean, rstd = (self.library.scratch.array(shape2) for _ in range(2))
        blocks, threads = _grid(math.prod(shape2))
        running_as_groups[blocks, threads, self.stream](running[0], running[1], eps, mean, rstd)
        return mean, rstd

    def normalize(self, canon, weight2, bias2, out, *, eps, centered, stats, update, mask=None):
        """``y`` is written in the dtype of ``x`` (float16 stays float16); the statistics
        kernel's last block folds ``update``.  With a ``mask``, the statistics
        kernel counts the selected elements too (``count`` is float64 scratch):
        the launches are those of an unmasked call."""
        B, O, C, I = canon.shape4
        y, out4 = canon.output(out, canon.dtype)
        count = None
        if stats is None:
            # The kernels write the statistics into the public arrays.
            (rstd,) = canon.public_stats(canon.stat_dtype, 1)
            (mean,) = canon.public_stats(canon.stat_dtype, 1) if centered else canon.stats(1)
            (var,) = canon.stats(1)
            if mask is not None:
                (count,) = canon.stats(1)
        else:
            (mean, rstd), var = stats, None
        if not (B * C and O * I):
            if count is not None:
                fill(count, 0.0, canon.stream)
            if update is not None:
                self.update_running(*update[:2], mean, var, *update[2:])
            return y, mean, var, rstd, count
        selection = None if count is None else (mask, count)
        if _rows_regime(canon.shape4):
            blocks, threads, team_shift = _team_launch(canon.shape4, weight2.shape[1])
            rows_forward(canon.acc)[blocks, threads, canon.stream](
                canon.x4,
                team_shift,
                centered,
                stats is None,
                True,
                eps,
                mean,
                mean if var is None else var,
                rstd,
                weight2,
                bias2,
                out4,
                *_fold(canon, mean, update),
                selection,
            )
            return y, mean, var, rstd, count
        group_mean = mean
        if stats is None:
            # The elementwise pass needs the float64 mean, not its public rounding.
            (group_mean,) = canon.stats(1)
            _column_statistics(
                canon, centered, eps, group_mean, var, rstd, mean, update, mask, count
            )
        _columns_pass(canon, canon.x4, group_mean, rstd, weight2, bias2, rstd, rstd, False, out4)
        return y, mean, var, rstd, count

    def _gradients(self, canon, gradients, shape2):
        """``(dweight2, dbias2)`` targets of ``shape2``: views of new public arrays of
        ``gradients = (shape, dtype, bias)``, float64 scratch for no bias."""
        shape, dtype, bias = gradients
        targets = []
        for public in (True, bias):
            if public:
                obj, kernel = _new(self.library, shape, dtype)
                target = _dense(kernel, shape2)
                self._public_gradients[id(target)] = (target, obj, tuple(shape), dtype)
            else:
                target = canon.library.scratch.array(shape2)
            targets.append(target)
        return targets

    def backward(
        self, canon, dy, mean, rstd, weight2, input_stats, centered, *, out, gradients, mask=None
    ):
        """``dx`` is written in the dtype of ``x``, the gradients into public arrays.

        A ``mask`` costs no launch: the kernels that take the group sums count
        the selected elements too.
        """
        B, O, C, I = canon.shape4
        dx, dx4 = canon.output(out, canon.dtype)
        dweight2, dbias2 = self._gradients(canon, gradients, weight2.shape)
        if not (B * C and O * I):
            for g in (dweight2, dbias2):
                fill(g, 0.0, canon.stream)
            return dx, dweight2, dbias2
        dy4 = canon.view(dy)
        if not input_stats:
            mask = None  # constant statistics: nothing is fed back through them
        # float32 statistics round the mean by up to half an ulp of the data's
        # offset, which dx and dweight magnify: it is refined to the mean of x
        # in float64, as the CPU backend refines it.
        refine = input_stats and centered and canon.dtype.itemsize < 8
        rows = _rows_regime(canon.shape4)
        in_place = _address(dx4) in (_address(canon.x4), _address(dy4))
        if not rows:
            # One pass for every sum, the mean refined in its merge; then dx.
            refined, shift, offset = canon.stats()
            _column_sums(
                canon,
                dy4,
                mean,
                rstd,
                True,
                dweight2,
                dbias2,
                (weight2, input_stats, centered, refine, O * I, refined, shift, offset),
                mask,
            )
            _columns_pass(
                canon, dy4, refined, rstd, weight2, weight2, shift, offset, True, dx4, mask
            )
            return dx, dweight2, dbias2
        if refine and in_place:
            mean, var, count = canon.stats()
            _statistics(canon, True, 0.0, mean, var, var, mask, count)
            refine = False
        if not in_place:
            # dx first, refining the mean on the way; then the parameter sums.
            (refined,) = canon.stats(1)
            _rows_backward(
                canon, dy4, mean, rstd, weight2, input_stats, centered, refine, dx4, refined, mask
            )
            _column_sums(canon, dy4, refined if refine else mean, rstd, False, dweight2, dbias2)
            return dx, dweight2, dbias2
        # The parameter sums read x and dy before dx overwrites either.
        _column_sums(canon, dy4, mean, rstd, False, dweight2, dbias2)
        _rows_backward(
            canon, dy4, mean, rstd, weight2, input_stats, centered, False, dx4, mean, mask
        )
        return dx, dweight2, dbias2

    def parameter_sums(self, canon, dy, mean, rstd, weight2):
        B, O, C, I = canon.shape4
        dweight2, dbias2 = (canon.library.scratch.array(weight2.shape) for _ in range(2))
        if B * C and O * I:
            _column_sums(canon, canon.view(dy), mean, rstd, False, dweight2, dbias2)
        else:
            for g in (dweight2, dbias2):
                fill(g, 0.0, canon.stream)
        return self.to_host(dweight2), self.to_host(dbias2)

    def input_gradient(
        self, canon, dy, mean, rstd, weight2, group_g, group_gxhat, count, mask=None
    ):
        """With a ``mask``, the host counts go to the device with the group sums."""
        B, O, C, I = canon.shape4
        dx, dx4 = canon.output(None, canon.dtype)
        if dx4.size:
            # The group sums (and selected counts) as one-column partials of weight one.
            sums = tuple(
                _dense(self.from_host(np.asarray(g, np.float64)), (B, 1, C))
                for g in (group_g, group_gxhat)
            )
            counts = None
            if mask is not None:
                counts = _dense(self.from_host(np.asarray(count, np.float64)), (B, 1, C))
                count = 0  # each group's count is in ``counts``
            refined, shift, offset = canon.stats()
            group_coefficients(canon.acc)[1, BLOCK_THREADS, canon.stream](
                (*sums, sums[0]),
                _constant(1.0, (C, 1)),
                mean,
                rstd,
                count,
                refined,
                shift,
                offset,
                counts,
            )
            _columns_pass(
                canon, canon.view(dy), mean, rstd, weight2, weight2, shift, offset, True, dx4, mask
            )
        return dx

    def deliver(self, result, target, out, shape, dtype):
        """``result`` is in the result ``dtype`` already: the kernels write it."""
        if out is None:
            return self.library.reshaped(result, shape)
        if result is not target:
            copy(
                self.library.kernel_array(result),
                self.library.kernel_array(target),
                stream=self.stream,
            )
        return out

    @staticmethod
    def stats_out(canon, stat, axes, dtype):
        return canon.stats_to_axes(stat, axes, dtype)

    @staticmethod
    def group_zeros(canon):
        return _constant(0.0, canon.shape4[::2])

    def update_running(self, running_mean, running_var, mean, var, momentum, unbias):
        update_running[1, BLOCK_THREADS, self.stream](
            (True, running_mean, running_var, momentum, unbias), mean, var
        )

    def gradient_out(self, g2, shape, dtype):
        """The public array the backward wrote ``g2`` into, else a converted copy."""
        public = self._public_gradients.get(id(g2))
        if public and public[0] is g2 and public[2:] == (tuple(shape), dtype):
            return public[1]
        obj, grad = _new(self.library, shape, dtype)
        copy(_reshaped(g2, shape, self.stream), grad, stream=self.stream)
        return obj

    def _reduction(self, xc, axes):
        """The canonical view of ``xc`` reduced over ``axes``, and the axes it keeps."""
        roles = "".join("R" if a in axes else "K" for a in range(xc.ndim))
        return DeviceView(self.library, xc, roles), [a for a in range(xc.ndim) if a not in axes]

    def welford_state(self, xc, axes, where=None):
        canon, kept = self._reduction(xc, axes)
        if where is None:
            mean, m2 = group_moments(canon)
            count = math.prod(xc.shape[a] for a in axes)
            return count, *(
                self.to_host(canon.stats_to_axes(s, kept, np.float64)) for s in (mean, m2)
            )
        mean, var, count = (
            self.to_host(canon.stats_to_axes(s, kept, np.float64))
            for s in selected_statistics(canon, self.mask(canon, where, xc.shape))
        )
        empty = count == 0
        mean[empty] = math.nan
        m2 = np.where(empty, math.nan, var * count)
        return count, mean, m2

    def moments(self, xc, axes, ddof, keepdims, result_dtype, where=None):
        """Mean and variance as 0-d or N-d device arrays (0-d for full reductions, as CuPy).

        With ``where``, one more launch turns the selected elements'
        statistics into these, and the counts come to the host (a wait).
        """
        canon, kept = self._reduction(xc, axes)
        if where is None:
            mean, m2 = group_moments(canon)
            count = math.prod(xc.shape[a] for a in axes)
            dof = count - ddof
            stats = ((mean, 1.0), (m2, 1.0 / dof if dof > 0 else math.inf))
        else:
            mean, var, count = selected_statistics(canon, self.mask(canon, where, xc.shape))
            if mean.size:
                blocks, threads = _grid(mean.size)
                selected_moments[blocks, threads, self.stream](mean, var, count, ddof)
            stats = ((mean, 1.0), (var, 1.0))
            count = self.to_host(canon.stats_to_axes(count, kept, np.dtype(np.float64), 1.0))
        results = []
        for stat, scale in stats:
            stat = canon.stats_to_axes(stat, kept, result_dtype, scale)
            if keepdims:
                stat = self.library.reshaped(
                    stat, [1 if a in axes else n for a, n in enumerate(xc.shape)]
                )
            results.append(stat)
        return (*results, count)

    def to_host(self, a):
        """``a`` copied to the host; a host array (as :meth:`welford_state` gives) as it is."""
        if isinstance(a, np.ndarray):
            return a
        host = _kernel_array(a, self.stream).copy_to_host(stream=self.stream)
        if self.stream:
            self.stream.synchronize()
        return host

    def from_host(self, a):
        """A host array as a new Numba device array (statistics, parameters)."""
        # A fresh copy: views with zero strides on unit axes confuse the transfer.
        a = np.array(a, order="C")
        _, device = _new(self.library, a.shape, a.dtype)
        device.copy_to_device(a, stream=self.stream)
        return device
