"""The benchmark peers compute what numbanorm computes, and the bench command reports it."""

import json
import re

import numpy as np
import pytest

from numbanorm.__main__ import main
from numbanorm._cli import bench, peers
from numbanorm._cli.peers import BENCHMARK_CASES, IMPLEMENTATIONS, Case, PeerUnavailable, build
from numbanorm._specs import NORMS

SMALL_CASES = (
    Case("layer_norm", (24, 40), "rows"),
    Case("rms_norm", (24, 40), "rows"),
    Case("batch_norm", (4, 6, 5, 3), "NCHW"),
    Case("batch_norm", (50, 6), "2-D"),
    Case("batch_norm", (4, 5, 3, 6), "NHWC"),
    Case("group_norm", (4, 6, 5, 3), "NCHW", groups=3),
    Case("group_norm", (4, 5, 3, 6), "NHWC", groups=3),
    Case("instance_norm", (4, 6, 5, 3), "NCHW"),
    Case("instance_norm", (4, 5, 3, 6), "NHWC"),
    Case("moments", (24, 40), "rows"),
    Case("moments", (4, 6, 5, 3), "NCHW"),
)


def test_every_norm_has_cases_and_every_peers_version():
    names = {norm.name for norm in NORMS}
    assert names <= {case.norm for case in BENCHMARK_CASES}
    assert names <= {case.norm for case in SMALL_CASES}
    assert set(peers.TORCH_FUNCTIONS) == set(peers.ONNX_OPERATORS) == names


def _arrays(result, case):
    """The arrays of any implementation's result, as NumPy, channels back where ``x`` has them."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    arrays = []
    for item in items:
        if hasattr(item, "detach"):  # a torch tensor, channels-first when x is channels-last
            item = item.detach()
            if case.layout == "NHWC" and item.ndim == len(case.shape):
                item = item.permute(0, *range(2, item.ndim), 1)
            item = item.numpy()
        arrays.append(np.asarray(item, dtype=np.float64))
    return arrays


@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda case: case.label)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS[1:])
@pytest.mark.parametrize("direction", ["forward", "eval", "backward"])
def test_peers_agree_with_numbanorm(case, impl, direction):
    data = case.data(np.float32, seed=3)
    try:
        peer = build(impl, direction, case, data)
    except PeerUnavailable:
        pytest.skip(f"{impl} has no {direction} of {case.label} here")
    expected = _arrays(build("numbanorm", direction, case, data)(), case)
    actual = _arrays(peer(), case)
    if direction == "forward" and case.norm != "moments":
        expected = expected[:1]  # numbanorm's forward also returns its statistics
        actual = actual[:1]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("direction", ["forward", "eval", "backward"])
def test_out_directions_write_what_the_allocating_ones_return(direction):
    case = SMALL_CASES[2]
    data = case.data(np.float64, seed=1)
    written = build("numbanorm", f"{direction}_out", case, data)()
    returned = build("numbanorm", direction, case, data)()
    if not isinstance(returned, tuple):  # eval: the plain function, y alone
        returned = (returned,)
    if direction != "backward":  # the plain function returns y; *_forward also the statistics
        written, returned = (written,), returned[:1]
    assert len(written) == len(returned)
    for a, e in zip(written, returned):
        np.testing.assert_array_equal(a, e)
    with pytest.raises(PeerUnavailable):
        build("numpy", f"{direction}_out", case, data)


def test_run_reports_bandwidth_and_peer_ratios():
    results = bench.run(
        ["layer_norm.backward", "moments"], quick=True, peers=("numpy",), cases=SMALL_CASES
    )
    assert [r["op"] for r in results] == [
        "layer_norm.backward",
        "moments.forward",
        "moments.forward",
    ]
    for r in results:
        moved = 4 * np.prod(r["shape"]) * (3 if r["op"].endswith("backward") else 1)
        assert r["gb_per_s"] == pytest.approx(moved / r["seconds"] / 1e9)
        assert r["fraction_of_copy"] == pytest.approx(r["gb_per_s"] / r["copy_gb_per_s"])
        assert set(r["peers"]) == {"numpy"} and r["peers"]["numpy"] > 0


def _table(lines):
    """The plain table's header and rows: the lines after the title, to the first blank
    one (a busy machine's warning follows)."""
    end = lines.index("") if "" in lines else len(lines)
    return lines[1], lines[2:end]


def test_bench_prints_a_row_per_op_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    bench.bench(["rms_norm.*"], quick=True, json_path=path, peers=("numpy",), cases=SMALL_CASES[:2])
    _, rows = _table(capsys.readouterr().out.splitlines())
    assert [row.split()[0] for row in rows] == [
        "rms_norm.forward",
        "rms_norm.forward_out",
        "rms_norm.backward",
        "rms_norm.backward_out",
    ]
    saved = json.loads(path.read_text())
    assert saved["machine"]["threads"] >= 1
    assert [r["op"] for r in saved["results"]] == [row.split()[0] for row in rows]


def _cells(line):
    """``(start, end, text)`` of each cell of a table line: text two or more spaces apart."""
    return [(m.start(), m.end(), m[0]) for m in re.finditer(r"\S+(?: \S+)*", line)]


@pytest.fixture
def fake_timings(monkeypatch):
    """Makes the bench's timing return the seconds ``copy`` and ``numbanorm`` are set to
    (lists, one per repeat); every other call takes the numbanorm times."""
    timings = {"copy": [1e-3] * 5, "numbanorm": [1e-3] * 5}

    def sample_seconds(calls, **_):
        return {name: timings.get(name, timings["numbanorm"]) for name in calls}

    monkeypatch.setattr(bench, "sample_seconds", sample_seconds)
    return timings


@pytest.mark.parametrize("where", [None, "full"])
def test_plain_table_columns_are_aligned_and_two_spaces_apart(fake_timings, capsys, where):
    bench.bench(
        ["instance_norm.backward_out", "layer_norm.forward"],
        quick=True,
        cases=SMALL_CASES,
        where=where,
    )
    header, rows = _table(capsys.readouterr().out.splitlines())
    columns = _cells(header)
    expected = ["op", "layout", "shape", "ms", "GB/s", "copy", "% copy", "pages"]
    expected += ["unmasked ms", "masked/unmasked"] if where else [f"vs {p}" for p in bench.PEERS]
    assert [text for *_, text in columns] == expected
    assert [row.split()[0] for row in rows] == [
        "layer_norm.forward",
        "instance_norm.backward_out",
        "instance_norm.backward_out",
    ]
    for row in rows:
        cells = _cells(row)
        # a pages cell is blank for the out= directions
        if len(cells) == len(columns) - 1:
            cells.insert(7, None)
        assert len(cells) == len(columns), row
        for column, cell in zip(columns, cells):
            if cell is not None:  # text to the left, numbers to the right
                assert cell[0] == column[0] or cell[1] == column[1], (row, column)


@pytest.mark.parametrize(
    "copy, ours, disturbed",
    [
        ([1e-3] * 5, [1e-3] * 5, None),  # 100% of the copy ceiling
        ([1e-3] * 5, [0.96e-3] * 5, None),  # 104%: within the margin
        ([1e-3] * 5, [0.85e-3] * 5, "faster than the copy ceiling"),  # 118%
        ([1e-3, 1e-3, 1.1e-3, 1.6e-3, 2e-3], [1.1e-3] * 5, "copy timings spread"),
    ],
)
def test_a_busy_machines_figures_are_marked_and_warned_of(
    fake_timings, capsys, copy, ours, disturbed
):
    fake_timings.update(copy=copy, numbanorm=ours)
    results = bench.bench(
        ["layer_norm.forward"], quick=True, peers=(), cases=SMALL_CASES[:1], markdown=True
    )
    assert results[0]["disturbed"] == disturbed
    lines = capsys.readouterr().out.splitlines()
    header, rows = _table(lines)
    percent = rows[0][: _cells(header)[6][1]].split()[-1]
    assert percent.endswith("!") == bool(disturbed)
    warnings = [line for line in lines if "busy" in line]
    markdown = lines[-1]
    if disturbed:
        assert len(warnings) == 1
        assert "unreliable" in warnings[0] and "rerun on a quiet machine" in warnings[0]
        assert lines.index(warnings[0]) > lines.index(rows[-1])
        assert "%!" in markdown
    else:
        assert warnings == [] and "!" not in markdown


def test_bench_lists_the_operations_and_what_they_run_on(capsys):
    main(["bench", "--list"])
    out = capsys.readouterr().out
    for case in BENCHMARK_CASES:
        for direction in case.directions:
            line = next(
                line for line in out.splitlines() if line.split()[0] == f"{case.norm}.{direction}"
            )
            assert f"{case.layout} {'x'.join(map(str, case.shape))}" in line
    assert "*.backward" in out.splitlines()[0]


def test_eval_runs_for_the_norms_with_running_statistics_alone():
    results = bench.run(["*.eval*"], quick=True, peers=(), cases=SMALL_CASES)
    assert {(r["op"], r["layout"]) for r in results} == {
        (f"{norm}.{direction}", layout)
        for norm, layout in [
            ("batch_norm", "NCHW"),
            ("batch_norm", "2-D"),
            ("batch_norm", "NHWC"),
            ("instance_norm", "NCHW"),
            ("instance_norm", "NHWC"),
        ]
        for direction in ("eval", "eval_out")
    }
    table = bench.markdown_table(results)
    assert table.splitlines()[0] == "| op | shape | eval, out= | eval |"


def test_bench_command_rejects_an_unknown_op(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--ops", "no_such_norm"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python -m numbanorm bench ")  # the bench's own options
    assert "no benchmark matches no_such_norm" in error
    assert "--list" in error
    for name in ("layer_norm", "batch_norm", "moments", "forward_out", "backward"):
        assert name in error


@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda case: case.label)
@pytest.mark.parametrize("kind", peers.MASKS)
def test_masked_calls_take_their_statistics_from_the_selected_elements(case, kind):
    data = case.data(np.float64, seed=3)
    mask = case.mask(kind)
    assert mask.dtype == bool and 0.6 < mask.mean() < 0.9
    if kind == "broadcast" and case.layout == "rows":
        assert mask.shape == (1, case.shape[-1])
    elif kind == "broadcast":
        axis = case.axis % len(case.shape)
        assert mask.shape == case.shape[:axis] + (1,) + case.shape[axis + 1 :]
    else:
        assert mask.shape == case.shape
    result = build("numbanorm", "forward", case, {**data, "where": mask})()
    selected = np.broadcast_to(mask, case.shape)
    if case.spec is None:
        axes = case.moment_axes
        np.testing.assert_allclose(result[0], data["x"].mean(axis=axes, where=selected))
        np.testing.assert_allclose(result[1], data["x"].var(axis=axes, where=selected))
        return
    view, axes, _ = case.grouped_view
    x, selected = data["x"].reshape(view), selected.reshape(view)
    if case.spec.centered:
        np.testing.assert_allclose(result[1].ravel(), x.mean(axis=axes, where=selected).ravel())
        spread, eps = x.var(axis=axes, where=selected), peers.EPS
    else:  # rms_norm's eps defaults to the dtype's
        spread, eps = (x * x).mean(axis=axes, where=selected), np.finfo(x.dtype).eps
    np.testing.assert_allclose(result[-1].ravel(), 1 / np.sqrt(spread.ravel() + eps))
    with pytest.raises(PeerUnavailable, match="no masked normalization"):
        build("numpy", "forward", case, {**data, "where": mask})


def test_masked_run_times_each_call_against_the_unmasked_one_and_no_peer():
    results = bench.run(
        ["batch_norm.backward", "moments"],
        quick=True,
        peers=("numpy",),
        cases=SMALL_CASES[2:4] + SMALL_CASES[-1:],
        where="full",
    )
    assert [(r["op"], r["layout"]) for r in results] == [
        ("batch_norm.backward", "NCHW"),
        ("batch_norm.backward", "2-D"),
        ("moments.forward", "NCHW"),
    ]
    for r in results:
        assert r["where"] == "full" and r["peers"] == {}
        assert r["masked_ratio"] == pytest.approx(r["seconds"] / r["unmasked_seconds"])
        elements = np.prod(r["shape"])
        arrays = 3 if r["op"].endswith("backward") else 1
        # the x-sized arrays in float32, and the full mask, one byte an element
        moved = (4 * arrays + 1) * elements
        assert r["gb_per_s"] == pytest.approx(moved / r["seconds"] / 1e9)


def test_masked_bench_prints_the_unmasked_time_and_the_ratio(capsys):
    results = bench.bench(
        ["layer_norm.forward"], quick=True, cases=SMALL_CASES[:1], where="broadcast", markdown=True
    )
    lines = capsys.readouterr().out.splitlines()
    assert "broadcast masks; ratios are masked time / unmasked time" in lines[0]
    header, rows = _table(lines)
    assert header.split()[-3:] == ["unmasked", "ms", "masked/unmasked"]
    row = rows[0].split()
    assert row[0] == "layer_norm.forward"
    assert float(row[-2]) == pytest.approx(results[0]["unmasked_seconds"] * 1e3, abs=0.01)
    assert row[-1] == f"{results[0]['masked_ratio']:.2f}x"
    assert f"{results[0]['masked_ratio']:.2f}x unmasked)" in lines[-1]


def test_bench_rejects_an_unknown_mask():
    with pytest.raises(ValueError, match="unknown mask 'half': the masks are broadcast, full"):
        bench.bench(["layer_norm.forward"], quick=True, cases=SMALL_CASES[:1], where="half")


def test_bench_command_times_masked_calls(capsys):
    main(["bench", "--quick", "--ops", "layer_norm.forward", "--where", "full"])
    lines = capsys.readouterr().out.splitlines()
    assert "full masks; ratios are masked time / unmasked time" in lines[0]
    assert lines[2].split()[0] == "layer_norm.forward"
    assert lines[2].split()[-1].endswith("x")
