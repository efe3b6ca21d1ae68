"""What ``python -m numbanorm`` runs: ``warmup``, ``bench`` and ``demo``.

Only ``numbanorm.__main__`` imports these modules, each when its command
runs; the library never does, so the benchmark's peers and the demo cost
``import numbanorm`` nothing.
"""
