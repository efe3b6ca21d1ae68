"""One rank of the synchronized batch norm runs of ``test_distributed.py`` (not a test module).

``mpiexec -n P python mpi_worker.py OUT_DIR [device]``: every rank builds the
same whole batches from fixed seeds, runs numbanorm.distributed on its own part
of each and saves what it got to ``OUT_DIR/rank<R>.npz``, where the test
compares it with the whole batch normalized in one process.  The batch data
and the split of each batch between the ranks are defined here for both sides.
With ``device`` the functional cases run on device arrays (under the CUDA
simulator when ``NUMBA_ENABLE_CUDASIM=1``), and the layer, a host object, does
not run.
"""

import pathlib
import sys
import traceback
import zlib

import numpy as np

# Functional cases: per-sample shape, channel axis of the batch, dtype, mean
# of the data, whether there are affine parameters and running statistics,
# and the samples on each rank for 2 and 3 ranks (unequal, some ranks empty or
# with one sample, which batch norm in one process would refuse).
CASES = {
    "nchw_float64": dict(
        sample_shape=(3, 4, 8),
        axis=1,
        dtype=np.float64,
        loc=0.5,
        affine=True,
        running=True,
        sizes={2: (5, 2), 3: (4, 0, 3)},
    ),
    "nhwc_float32_offset": dict(
        sample_shape=(3, 5, 4),
        axis=-1,
        dtype=np.float32,
        loc=100.0,
        affine=True,
        running=True,
        sizes={2: (1, 4), 3: (0, 3, 2)},
    ),
    "rows_float64": dict(
        sample_shape=(6,),
        axis=1,
        dtype=np.float64,
        loc=-2.0,
        affine=False,
        running=False,
        sizes={2: (1, 6), 3: (2, 1, 4)},
    ),
}
# Masked cases: as above, with a ``where`` made by ``mask``: "lengths", an
# ``(N, 1, T)`` mask of the valid frames of padded sequences (``lengths``
# per sample; a rank whose samples all have length 0 is all padding), or
# "elements", one of the shape of x with a channel selected nowhere.  A rank
# whose part of the mask selects everything passes None.
MASKED_CASES = {
    "padded_float64": dict(
        sample_shape=(3, 7),
        axis=1,
        dtype=np.float64,
        loc=0.5,
        affine=True,
        running=True,
        mask="lengths",
        sizes={2: (3, 2), 3: (2, 3, 2)},
        lengths={2: (7, 7, 7, 0, 0), 3: (3, 0, 0, 0, 0, 5, 1)},
    ),
    "padded_nwc_float32_offset": dict(
        sample_shape=(6, 4),
        axis=-1,
        dtype=np.float32,
        loc=100.0,
        affine=True,
        running=True,
        mask="lengths",
        sizes={2: (2, 3), 3: (1, 2, 3)},
        lengths={2: (0, 0, 2, 6, 3), 3: (6, 0, 0, 1, 6, 4)},
    ),
    "empty_channel_float64": dict(
        sample_shape=(3, 5),
        axis=1,
        dtype=np.float64,
        loc=-1.0,
        affine=True,
        running=False,
        mask="elements",
        sizes={2: (1, 3), 3: (2, 0, 2)},
    ),
}
MOMENTUM = 0.2

# SyncBatchNorm: NCHW float32 batches for two training steps and one evaluation.
LAYER_CHANNELS = 3
LAYER_SAMPLE_SHAPE = (LAYER_CHANNELS, 2, 5)
LAYER_SIZES = {2: ((3, 2), (1, 4), (2, 2)), 3: ((2, 0, 3), (1, 2, 2), (1, 1, 1))}


def case_arrays(name, n_ranks):
    """The whole batch of a functional case: ``x``, ``dy``, and the optional arrays."""
    case = {**CASES, **MASKED_CASES}[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}-{n_ranks}".encode()))
    shape = (sum(case["sizes"][n_ranks]),) + case["sample_shape"]
    channels = shape[case["axis"]]
    dtype = case["dtype"]
    arrays = {
        "x": (case["loc"] + 2.0 * rng.standard_normal(shape)).astype(dtype),
        "dy": rng.standard_normal(shape).astype(dtype),
    }
    if case["affine"]:
        arrays["weight"] = (1.0 + 0.5 * rng.standard_normal(channels)).astype(dtype)
        arrays["bias"] = rng.standard_normal(channels).astype(dtype)
    if case["running"]:
        arrays["running_mean"] = rng.standard_normal(channels).astype(dtype)
        arrays["running_var"] = rng.uniform(0.5, 2.0, channels).astype(dtype)
    if case.get("mask") == "lengths":
        time_axis = 1 if case["axis"] in (-1, len(shape) - 1) else 2
        lengths = np.array(case["lengths"][n_ranks])
        frames = np.arange(shape[time_axis])
        valid = frames[None, :] < lengths[:, None]
        arrays["where"] = np.expand_dims(valid, 3 - time_axis)
    elif case.get("mask") == "elements":
        arrays["where"] = rng.random(shape) < 0.6
        arrays["where"][:, -1] = False
    return arrays


def layer_batches(n_ranks):
    """``[(x, dy), ...]``: the whole batches of the layer's steps (float32)."""
    rng = np.random.default_rng(zlib.crc32(f"layer-{n_ranks}".encode()))
    return [
        tuple(
            (1.5 + rng.standard_normal((sum(sizes),) + LAYER_SAMPLE_SHAPE)).astype(np.float32)
            for _ in range(2)
        )
        for sizes in LAYER_SIZES[n_ranks]
    ]


def rank_part(whole, sizes, rank):
    """The samples of ``whole`` (along axis 0) that belong to ``rank``."""
    start = sum(sizes[:rank])
    return whole[start : start + sizes[rank]]


def run_case(comm, name, device=False):
    """This rank's forward and backward of a functional case, on host or device arrays."""
    from numbanorm.distributed import sync_batch_norm_backward, sync_batch_norm_forward

    if device:
        from numba import cuda

        place, fetch = cuda.to_device, lambda a: a.copy_to_host()
    else:
        place = fetch = lambda a: a
    case = {**CASES, **MASKED_CASES}[name]
    arrays = case_arrays(name, comm.size)
    for key in ("x", "dy", "where"):
        if key in arrays:
            arrays[key] = np.ascontiguousarray(
                rank_part(arrays[key], case["sizes"][comm.size], comm.rank)
            )
    if "where" in arrays and arrays["where"].all():
        del arrays["where"]
    arrays = {key: place(value) for key, value in arrays.items()}
    x, dy, where = arrays["x"], arrays["dy"], arrays.get("where")
    weight, bias = arrays.get("weight"), arrays.get("bias")
    running_mean, running_var = arrays.get("running_mean"), arrays.get("running_var")
    y, mean, rstd = sync_batch_norm_forward(
        x,
        running_mean,
        running_var,
        weight,
        bias,
        comm=comm,
        momentum=MOMENTUM,
        axis=case["axis"],
        where=where,
    )
    dx, dweight, dbias = sync_batch_norm_backward(
        dy, x, mean, rstd, weight, comm=comm, axis=case["axis"], where=where
    )
    results = dict(y=y, mean=mean, rstd=rstd, dx=dx, dweight=dweight, dbias=dbias)
    if running_mean is not None:
        results.update(running_mean=running_mean, running_var=running_var)
    return {key: fetch(value) for key, value in results.items()}


def layer_masks(n_ranks):
    """``[where, ...]``: ``(N, 1, 1, W)`` masks of the layer's batches for its masked run.

    Rank 0 selects nothing in every step; the others select random positions.
    """
    rng = np.random.default_rng(zlib.crc32(f"layer-masks-{n_ranks}".encode()))
    masks = []
    for sizes in LAYER_SIZES[n_ranks]:
        where = rng.random((sum(sizes), 1, 1, LAYER_SAMPLE_SHAPE[-1])) < 0.7
        where[: sizes[0]] = False
        masks.append(where)
    return masks


def run_layer(comm, masked=False):
    """This rank's two training steps and one evaluation of a SyncBatchNorm layer,
    with :func:`layer_masks` when ``masked``."""
    from numbanorm.distributed import SyncBatchNorm

    layer = SyncBatchNorm(LAYER_CHANNELS, comm=comm, momentum=None)
    layer.weight[...] = [0.5, 1.0, 2.0]
    layer.bias[...] = [0.1, -0.2, 0.3]
    results = {}
    batches = layer_batches(comm.size)
    masks = layer_masks(comm.size) if masked else [None] * len(batches)
    for step, ((x, dy), where, sizes) in enumerate(zip(batches, masks, LAYER_SIZES[comm.size])):
        if step == len(batches) - 1:
            # The gradients of the training steps; evaluation adds local ones.
            results.update({f"grad_{name}": grad.copy() for name, grad in layer.grads.items()})
            layer.eval()
        part = None if where is None else rank_part(where, sizes, comm.rank)
        results[f"y{step}"] = layer(rank_part(x, sizes, comm.rank), part)
        results[f"dx{step}"] = layer.backward(rank_part(dy, sizes, comm.rank))
    results.update(layer.state_dict())
    return results


def main(out_dir, device=False):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        results = {
            f"{name}.{key}": value
            for name in {**CASES, **MASKED_CASES}
            for key, value in run_case(comm, name, device).items()
        }
        if not device:
            results.update({f"layer.{key}": value for key, value in run_layer(comm).items()})
            results.update(
                {f"masked_layer.{key}": value for key, value in run_layer(comm, True).items()}
            )
        np.savez(pathlib.Path(out_dir) / f"rank{comm.rank}.npz", **results)
    except BaseException:
        # The other ranks would wait for this one in their next collective.
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)


if __name__ == "__main__":
    main(sys.argv[1], device=sys.argv[2:] == ["device"])
