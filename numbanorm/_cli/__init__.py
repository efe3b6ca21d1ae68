"""What ``python -m numbanorm`` runs: ``warmup``, ``bench`` and ``demo``.

Only ``numbanorm.__main__`` imports these modules, each when its command
runs; the library never does, so the benchmark's peers and the demo cost
``import numbanorm`` nothing.
"""

# The dtypes the commands take; float16 runs the float32 kernels.
DTYPES = ("float32", "float64", "float16")
WARMUP_DTYPES = ("float32", "float64")
