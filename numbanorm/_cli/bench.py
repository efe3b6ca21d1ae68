"""``python -m numbanorm bench``: times, bandwidth and peers for every norm.

For each benchmark case and direction, the median time of numbanorm, the
effective bandwidth (bytes that must move divided by the time), that
bandwidth as a fraction of a same-size parallel copy measured in the same
run (the memory-bound ceiling), and the speed ratio against every importable
peer (a peer's time divided by numbanorm's: above 1, numbanorm is faster).
For the allocating directions, ``pages`` is the time to obtain a new
output's pages (an empty array written once in parallel): what an allocating
call may cost beyond its ``out=`` twin.

With a mask (``where``, one of ``MASKS``), numbanorm's calls take it, and
each is timed against the same call without it instead of the peers, which
have no masked normalization: the ratio masked / unmasked is what the mask
costs.

A figure is marked ``!`` when the machine was busy as it was measured (see
:func:`disturbance`), and a warning follows the table.
"""

import fnmatch
import json
import platform
import statistics
import time

import numba
import numpy as np
from numba import prange

from .._jit import jit
from .peers import (
    BENCHMARK_CASES,
    DIRECTIONS,
    IMPLEMENTATIONS,
    MASKS,
    PeerUnavailable,
    build,
)

PEERS = IMPLEMENTATIONS[1:]
COPY_BLOCK = 1 << 16
# A result is disturbed when numbanorm beats the copy ceiling by more than this
# factor, which a kernel that moves its bytes through memory cannot do: another
# process slowed the copy.
CEILING_MARGIN = 1.05
# Or when the middle half of the copy's times spans more than this fraction of
# their median, the ceiling: on a quiet machine a copy repeats within a few percent.
COPY_SPREAD = 0.25


@jit(parallel=True, fastmath=False)
def _parallel_copy(src, dst):
    for block in prange(-(-src.size // COPY_BLOCK)):
        start = block * COPY_BLOCK
        s = src[start : start + COPY_BLOCK]
        d = dst[start : start + COPY_BLOCK]
        for i in range(s.size):
            d[i] = s[i]


@jit(parallel=True, fastmath=False)
def _parallel_fill(dst):
    for block in prange(-(-dst.size // COPY_BLOCK)):
        d = dst[block * COPY_BLOCK : (block + 1) * COPY_BLOCK]
        for i in range(d.size):
            d[i] = 0


def sample_seconds(calls, *, min_time, min_repeats, max_repeats):
    """The wall times of each zero-argument call's repeats, after one warm-up call each.

    The calls take turns, so that a machine whose speed drifts (another
    process, frequency changes) slows them all alike and their ratios hold.
    """
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    start = time.perf_counter()
    repeats = 0
    while repeats < min_repeats or (
        repeats < max_repeats and time.perf_counter() - start < min_time
    ):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        repeats += 1
    return times


def median_seconds(calls, **timing):
    """Median wall time of each zero-argument call; ``timing`` as in :func:`sample_seconds`."""
    return {name: statistics.median(t) for name, t in sample_seconds(calls, **timing).items()}


def disturbance(fraction_of_copy, copy_seconds):
    """Why a result measured on a busy machine is unreliable, or None.

    ``"faster than the copy ceiling"`` beyond ``CEILING_MARGIN``, or ``"copy
    timings spread"`` beyond ``COPY_SPREAD``.
    """
    if fraction_of_copy > CEILING_MARGIN:
        return "faster than the copy ceiling"
    lower, _, upper = statistics.quantiles(copy_seconds, n=4, method="inclusive")
    if upper - lower > COPY_SPREAD * statistics.median(copy_seconds):
        return "copy timings spread"
    return None


def parallel_copy(x):
    """A zero-argument call copying ``x`` into a same-size array, in parallel."""
    src = x.reshape(-1)
    dst = np.empty_like(src)
    return lambda: _parallel_copy(src, dst)


def new_pages(x):
    """A zero-argument call obtaining the pages of an output like ``x``: a new array,
    written once in parallel.  What an allocating call pays beyond its ``out=`` twin."""
    return lambda: _parallel_fill(np.empty(x.size, x.dtype))


def operations(patterns=None, cases=BENCHMARK_CASES):
    """``(case, direction)`` pairs whose name ``"<norm>.<direction>"`` matches a pattern.

    A pattern is a norm (``layer_norm``), a full name (``batch_norm.backward``)
    or a shell-style wildcard (``*.forward_out``); None selects everything.
    """
    for case in cases:
        for direction in case.directions:
            name = f"{case.norm}.{direction}"
            if patterns is None or any(
                fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(case.norm, p) for p in patterns
            ):
                yield case, direction


def _select(patterns, cases=BENCHMARK_CASES):
    selected = list(operations(patterns, cases))
    if not selected:
        norms = ", ".join(dict.fromkeys(case.norm for case in cases))
        raise ValueError(
            f"no benchmark matches {' '.join(patterns)}; the names are the norms ({norms}) "
            f"and '<norm>.<direction>' with the directions {', '.join(DIRECTIONS)} "
            f"(moments: forward only; eval: norms with running statistics); "
            f"wildcards are allowed; bench --list lists them"
        )
    return selected


def operation_list(patterns=None, cases=BENCHMARK_CASES):
    """The names ``--ops`` takes: a line per operation ``patterns`` selects, with its inputs."""
    inputs = {}
    for case, direction in _select(patterns, cases):
        name = f"{case.norm}.{direction}"
        inputs.setdefault(name, []).append(f"{case.layout} {_shape(case.shape)}")
    width = max(map(len, ["operation", *inputs]))
    return "\n".join(
        [
            "--ops takes a norm, an operation or a shell-style wildcard such as '*.backward'",
            f"{'operation':<{width}}{GAP}inputs (layout and shape)",
        ]
        + [f"{name:<{width}}{GAP}{', '.join(shapes)}" for name, shapes in inputs.items()]
    )


def _check_mask(where):
    if where is not None and where not in MASKS:
        raise ValueError(f"unknown mask {where!r}: the masks are {', '.join(MASKS)}")


def _target(gpu):
    """``(build, copy_call, peers)`` of the CPU benchmark or of the GPU one."""
    if gpu:
        from . import gpu_peers

        return gpu_peers.build, gpu_peers.copy_call, gpu_peers.IMPLEMENTATIONS[1:]
    return build, parallel_copy, PEERS


def run(
    patterns=None,
    *,
    quick=False,
    dtype=np.float32,
    peers=None,
    cases=BENCHMARK_CASES,
    progress=None,
    gpu=False,
    where=None,
):
    """Time the selected operations of ``cases``, on the CPU or (``gpu``) on device arrays.

    Returns one dict per operation: ``op``, ``layout``, ``shape``, ``dtype``,
    ``where`` (the mask's kind or None), ``seconds`` (median), ``gb_per_s``,
    ``copy_gb_per_s`` (the ceiling: a parallel copy on the CPU, a
    device-to-device copy on the GPU), ``fraction_of_copy``, ``disturbed``
    (see :func:`disturbance`),
    ``pages_seconds`` (allocating directions on the CPU: the time to obtain
    the output's pages, see :func:`new_pages`; else None), ``peers`` (peer
    name -> peer time / numbanorm time, for the peers that have the
    operation; against numbanorm's ``out=`` call for the peers of
    ``REUSES_OUTPUT``), and with a mask ``unmasked_seconds`` and
    ``masked_ratio`` (masked time / unmasked time, the two timed in turns).

    With ``where``, a kind of mask of ``MASKS`` (see
    :meth:`~numbanorm._cli.peers.Case.mask`), numbanorm's calls are masked, the
    bytes moved include the mask's, and no peer runs.
    """
    selected = _select(patterns, cases)
    _check_mask(where)
    build_call, copy_call, all_peers = _target(gpu)
    peers = all_peers if peers is None else peers
    if where is not None:
        peers = ()
    timing = (
        dict(min_time=0.05, min_repeats=3, max_repeats=20)
        if quick
        else dict(min_time=0.5, min_repeats=10, max_repeats=200)
    )
    itemsize = np.dtype(dtype).itemsize
    results = []
    for case, direction in selected:
        data = case.data(dtype)
        mask = None if where is None else case.mask(where)
        numbanorm = build_call("numbanorm", direction, case, {**data, "where": mask})
        calls = {"copy": copy_call(data["x"]), "numbanorm": numbanorm}
        if mask is not None:
            calls["unmasked"] = build_call("numbanorm", direction, case, data)
        if not (gpu or direction.endswith("_out")):
            calls["pages"] = new_pages(data["x"])
        samples = sample_seconds(calls, **timing)
        seconds = {name: statistics.median(t) for name, t in samples.items()}
        ours = seconds["numbanorm"]
        copy_bandwidth = 2 * data["x"].nbytes / seconds["copy"]
        moved = case.bytes_moved(direction, itemsize) + (0 if mask is None else mask.nbytes)
        fraction = moved / ours / copy_bandwidth
        result = {
            "op": f"{case.norm}.{direction}",
            "layout": case.layout,
            "shape": list(case.shape),
            "dtype": np.dtype(dtype).name,
            "where": where,
            "seconds": ours,
            "gb_per_s": moved / ours / 1e9,
            "copy_gb_per_s": copy_bandwidth / 1e9,
            "fraction_of_copy": fraction,
            "disturbed": disturbance(fraction, samples["copy"]),
            "pages_seconds": seconds.get("pages"),
            "peers": {},
        }
        if mask is not None:
            result["unmasked_seconds"] = seconds["unmasked"]
            result["masked_ratio"] = ours / seconds["unmasked"]
        for peer in peers:
            try:
                fn = build_call(peer, direction, case, data)
            except PeerUnavailable:
                continue
            # Each peer takes turns with numbanorm alone: a peer's allocations
            # and cache traffic then weigh on the pair they belong to.  A peer
            # whose outputs reuse its memory meets numbanorm's out= call.
            ours_call = numbanorm
            if peer in REUSES_OUTPUT:
                ours_call = build_call("numbanorm", direction + "_out", case, data)
            pair = median_seconds({"numbanorm": ours_call, peer: fn}, **timing)
            result["peers"][peer] = pair[peer] / pair["numbanorm"]
        results.append(result)
        if progress:
            progress(result)
    return results


def machine(gpu=False):
    """What the numbers were measured on."""
    info = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": numba.get_num_threads(),
        "threading_layer": _threading_layer(),
        "numba": numba.__version__,
        "numpy": np.__version__,
    }
    if gpu:
        from numba import cuda

        name = cuda.get_current_device().name
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    return info


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet chosen"


GAP = "  "


def _shape(shape):
    return "x".join(map(str, shape))


def _percent(result):
    """The fraction of the copy ceiling, marked ``!`` when disturbed."""
    return f"{result['fraction_of_copy']:.0%}" + ("!" if result["disturbed"] else "")


class PlainTable:
    """The table printed as the results come, a row each.

    Every column is as wide as its header and the widest cell ``cases`` may
    give it, text aligned left and numbers right, with ``GAP`` between columns.
    ``masked`` adds the unmasked time and the ratio.
    """

    def __init__(self, peers, masked, cases):
        self.peers = peers
        self.masked = masked
        columns = [
            ("op", max(len(f"{c.norm}.{d}") for c in cases for d in c.directions), "<"),
            ("layout", max(len(case.layout) for case in cases), "<"),
            ("shape", max(len(_shape(case.shape)) for case in cases), "<"),
            ("ms", 8, ">"),
            ("GB/s", 6, ">"),
            ("copy", 6, ">"),
            ("% copy", 7, ">"),
            ("pages", 7, ">"),
            *((f"vs {peer}", 7, ">") for peer in peers),
        ]
        if masked:
            columns += [("unmasked ms", 8, ">"), ("masked/unmasked", 7, ">")]
        self.columns = [(name, max(width, len(name)), align) for name, width, align in columns]

    def _line(self, cells):
        return GAP.join(
            f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, self.columns)
        ).rstrip()

    def header(self):
        return self._line([name for name, *_ in self.columns])

    def row(self, result):
        pages = result["pages_seconds"]
        peers = result["peers"]
        cells = [
            result["op"],
            result["layout"],
            _shape(result["shape"]),
            f"{result['seconds'] * 1e3:.2f}",
            f"{result['gb_per_s']:.1f}",
            f"{result['copy_gb_per_s']:.1f}",
            _percent(result),
            "" if pages is None else f"{pages * 1e3:.2f}",
            *(f"{peers[p]:.2f}x" if p in peers else "-" for p in self.peers),
        ]
        if self.masked:
            cells += [f"{result['unmasked_seconds'] * 1e3:.2f}", f"{result['masked_ratio']:.2f}x"]
        return self._line(cells)


# Peers whose outputs come from memory they reuse (ONNX Runtime's arena): their
# allocating calls never pay for new pages, so they meet numbanorm's out= calls.
REUSES_OUTPUT = ("onnxruntime",)

PEER_NAMES = {
    "torch": "torch",
    "onnxruntime": "ONNX Runtime",
    "jax": "JAX",
    "numpy": "NumPy",
    "cupy": "CuPy",
}


def _versus(peer):
    return f"vs {PEER_NAMES[peer]}" + (" (out=)" if peer in REUSES_OUTPUT else "")


def markdown_table(results):
    """One row per case: milliseconds, % of the copy ceiling, and ratios to the peers.

    A ratio above 1 means numbanorm is faster; peers are compared with the
    allocating forward, eval and backward, as they allocate too, except those
    that reuse their output memory (``REUSES_OUTPUT``), compared with ``out=``.  Each
    direction has a column for every peer that ran it, and eval columns
    appear when some case has it.  A masked result's cell also gives its
    time over the unmasked one's.  A disturbed result's percentage is marked ``!``.
    """
    rows = {}
    for r in results:
        norm, direction = r["op"].split(".")
        key = (norm, r["layout"], _shape(r["shape"]))
        rows.setdefault(key, {})[direction] = r
    ran = {
        direction: [
            p
            for p in PEER_NAMES
            if any(p in r["peers"] for r in results if r["op"].endswith("." + direction))
        ]
        for direction in ("forward", "eval", "backward")
        if any(r["op"].split(".")[1].startswith(direction) for r in results)
    }

    def cell(r):
        if not r:
            return ""
        masked = f", {r['masked_ratio']:.2f}x unmasked" if "masked_ratio" in r else ""
        return f"{r['seconds'] * 1e3:.2f} ({_percent(r)}{masked})"

    def ratio(r, peer):
        return f"{r['peers'][peer]:.2f}x" if r and peer in r["peers"] else ""

    header = ["op", "shape"]
    for direction, peers in ran.items():
        header += [f"{direction}, out=", direction, *(_versus(p) for p in peers)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (norm, layout, shape), d in rows.items():
        cells = [f"| {norm} {layout}", shape]
        for direction, peers in ran.items():
            allocating = d.get(direction)
            cells += [
                cell(d.get(direction + "_out")),
                cell(allocating),
                *(ratio(allocating, p) for p in peers),
            ]
        lines.append(" | ".join(cells) + " |")
    return "\n".join(lines)


def bench(
    patterns=None,
    *,
    quick=False,
    json_path=None,
    dtype="float32",
    peers=None,
    cases=BENCHMARK_CASES,
    markdown=False,
    gpu=False,
    where=None,
):
    """Print the benchmark table and optionally write the results as JSON or Markdown.

    With ``where`` (see :func:`run`), the table gives numbanorm's masked calls
    and their time over the unmasked ones' instead of the peers.  A warning
    follows the table when the machine was busy (see :func:`disturbance`).
    """
    _check_mask(where)
    peers = _target(gpu)[2] if peers is None else peers
    if where is not None:
        peers = ()
    table = PlainTable(peers, where is not None, [case for case, _ in _select(patterns, cases)])
    info = machine(gpu)
    device = f"GPU {info['gpu']}" if gpu else f"{info['threads']} threads"
    if where is None:
        ratios = (
            f"ratios are peer time / numbanorm time, against numbanorm's out= for "
            f"{', '.join(PEER_NAMES[p] for p in REUSES_OUTPUT)}"
        )
    else:
        ratios = f"{where} masks; ratios are masked time / unmasked time"
    print(f"numbanorm bench: {device}, {dtype}, {'quick' if quick else 'full'} timing; {ratios}")
    print(table.header())
    results = run(
        patterns,
        quick=quick,
        dtype=np.dtype(dtype),
        peers=peers,
        cases=cases,
        gpu=gpu,
        where=where,
        progress=lambda r: print(table.row(r), flush=True),
    )
    disturbed = sum(1 for r in results if r["disturbed"])
    if disturbed:
        print()
        print(
            f"! the machine was busy: the figures marked ! ({disturbed} of {len(results)}) "
            f"are unreliable, faster than the copy ceiling or with copy times spread over "
            f"more than {COPY_SPREAD:.0%}; rerun on a quiet machine"
        )
    if markdown:
        print()
        print(markdown_table(results))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1)
    return results
