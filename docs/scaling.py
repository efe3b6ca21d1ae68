"""The scaling figure of docs/performance.md: bandwidth against input size.

Times the asv suite's ``Scaling`` calls (layer norm over rows of 1024 and
NCHW batch norm with 16 samples and 64 channels, float32, ``out=`` forward
and backward) and a same-size parallel copy, from 4 KiB to 1 GiB, prints the
table and draws it to ``docs/scaling.svg``.  Run from the repository root on a
quiet machine::

    python docs/scaling.py

It needs matplotlib (the ``examples`` extra) and about 4 GB of memory.
"""

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "asv_bench"))

from benchmarks.bench_scaling import SIZES, scaling_case  # noqa: E402
from benchmarks.peers import build  # noqa: E402

from numbanorm._cli.bench import median_seconds, parallel_copy  # noqa: E402

CALLS = [
    ("layer_norm", "forward_out", 2),
    ("layer_norm", "backward_out", 3),
    ("batch_norm", "forward_out", 2),
    ("batch_norm", "backward_out", 3),
]


def measure():
    """``{label: [GB/s per size]}``: each call and the copy, timed in turns."""
    rates = {f"{norm} {direction}": [] for norm, direction, _ in CALLS}
    rates["copy"] = []
    for size in SIZES:
        copy = parallel_copy(np.ones(size // 4, np.float32))
        for norm, direction, arrays in CALLS:
            call = build("numbanorm", direction, scaling_case(norm, size), "float32")
            seconds = median_seconds(
                {"call": call, "copy": copy}, min_time=0.5, min_repeats=5, max_repeats=2000
            )
            rates[f"{norm} {direction}"].append(arrays * size / seconds["call"] / 1e9)
            if norm == "layer_norm" and direction == "forward_out":
                rates["copy"].append(2 * size / seconds["copy"] / 1e9)
            del call
    return rates


def draw(rates, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in rates.items():
        style = dict(color="black", linestyle="--") if label == "copy" else {}
        ax.plot(SIZES, values, marker="o", label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(SIZES, ["4 KiB", "32 KiB", "256 KiB", "2 MiB", "16 MiB", "128 MiB", "1 GiB"])
    ax.set_xlabel("input size (float32)")
    ax.set_ylabel("GB/s (bytes that must move / time)")
    ax.set_title("numbanorm on 2 cores: out= calls and a parallel copy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    rates = measure()
    print("size".ljust(10) + "".join(label.rjust(26) for label in rates))
    for i, size in enumerate(SIZES):
        print(f"{size:<10}" + "".join(f"{values[i]:>26.1f}" for values in rates.values()))
    draw(rates, ROOT / "docs" / "scaling.svg")


if __name__ == "__main__":
    main()
