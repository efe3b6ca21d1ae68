"""Synchronized batch norm over MPI: each rank normalizes its part of one batch.

Every rank draws the same whole batch ``(N, C, T)`` and keeps its own part of
it, of a different size on each rank (rank r holds 2r + 3 samples).  A
``SyncBatchNorm`` layer normalizes the parts with the statistics of the whole
batch, forward and backward, and updates its running statistics identically
on every rank.  Rank 0 gathers the parts and checks them against a
``BatchNorm`` layer given the whole batch in one process.  Run it with
``mpiexec -n 2 python examples/mpi_batch_norm.py`` (any number of ranks;
without ``mpiexec`` it runs as one rank).
"""

import numpy as np
from mpi4py import MPI

import numbanorm as nn
from numbanorm.distributed import SyncBatchNorm

comm = MPI.COMM_WORLD
C, T = 6, 10
sizes = [2 * rank + 3 for rank in range(comm.size)]
rng = np.random.default_rng(0)
x = (2 + rng.standard_normal((sum(sizes), C, T))).astype(np.float32)
dy = rng.standard_normal(x.shape).astype(np.float32)
part = slice(sum(sizes[: comm.rank]), sum(sizes[: comm.rank + 1]))

synchronized = SyncBatchNorm(C, comm=comm)
y = synchronized(x[part])
dx = synchronized.backward(dy[part])
y_parts, dx_parts = comm.gather(y), comm.gather(dx)

if comm.rank == 0:
    whole = nn.BatchNorm(C)
    whole_y = whole(x)
    whole_dx = whole.backward(dy)
    pairs = [
        (np.concatenate(y_parts), whole_y),
        (np.concatenate(dx_parts), whole_dx),
        *((synchronized.grads[name], whole.grads[name]) for name in whole.grads),
        (synchronized.running_mean, whole.running_mean),
        (synchronized.running_var, whole.running_var),
    ]
    error = max(np.abs(part_result - whole_result).max() for part_result, whole_result in pairs)
    assert error < 1e-4, error
    print(f"samples per rank: {sizes}, one batch of {sum(sizes)}")
    print(f"synchronized against whole-batch batch norm, max error: {error:.2e}")
