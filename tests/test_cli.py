"""The command line: its code stays out of the library; warmup covers every norm."""

import math
import os
import pathlib
import re
import sys

import pytest

import numbanorm
from numbanorm.__main__ import main
from numbanorm._cli import warmup
from numbanorm._jit import cache_directory
from numbanorm._kernels import SERIAL_MAX_ELEMENTS
from numbanorm._specs import NORMS

from helpers import environment, run_python


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"numbanorm {numbanorm.__version__}\n"


def test_import_numbanorm_imports_no_command_line_code():
    loaded = run_python(
        "import sys, numbanorm; print(*sorted(sys.modules))", env=environment()
    ).split()
    assert "numbanorm" in loaded
    assert not [m for m in loaded if m == "numbanorm._cli" or m.startswith("numbanorm._cli.")]


def _small(call):
    return math.prod(call.shape) <= SERIAL_MAX_ELEMENTS


def test_warmup_calls_every_norm_both_ways_on_both_sizes_and_layouts():
    units = warmup.plan(["float32", "float64"])
    calls = [call for unit in units for call in unit]
    for dtype in ("float32", "float64"):
        for norm in NORMS:
            for direction in ("forward", "backward"):
                found = [
                    c
                    for c in calls
                    if c.dtype == dtype and c.norm is norm and c.direction == direction
                ]
                layouts = {"channels-first", "channels-last"} if norm.per_channel else {"rows"}
                assert {(c.layout, _small(c)) for c in found} == {
                    (layout, small) for layout in layouts for small in (True, False)
                }
                for call in found:
                    assert call.function == f"{norm.name}_{direction}"
                    assert call.shape[call.axis] == norm.example_shape[norm.default_axis]
        moments = [c for c in calls if c.dtype == dtype and c.function == "moments"]
        assert sorted(map(_small, moments)) == [False, True]
    assert all(callable(getattr(numbanorm, call.function)) for call in calls)


def test_warmup_units_share_no_kernel_signature():
    units = warmup.plan(["float32", "float16", "float64"])
    kernel_dtypes = [{warmup.kernel_dtype(call.dtype) for call in unit} for unit in units]
    assert kernel_dtypes == [{"float32"}, {"float64"}]
    assert {call.dtype for call in units[0]} == {"float32", "float16"}


@pytest.fixture
def small_rows_plan(monkeypatch):
    """Warmup's plan cut down to layer and RMS norm on small inputs."""

    def plan(dtypes):
        return [
            [
                call
                for call in unit
                if call.norm is not None and not call.norm.per_channel and _small(call)
            ]
            for unit in full(dtypes)
        ]

    full = warmup.plan
    monkeypatch.setattr(warmup, "plan", plan)


def test_warmup_command_prints_a_line_per_call_and_the_totals(small_rows_plan, capsys):
    main(["warmup", "--dtypes", "float64"])
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"numbanorm warmup: 4 calls in (1 process|2 processes); .*", lines[0])
    assert lines[1] == f"compiled code cached in {cache_directory()}"
    progress = [
        re.fullmatch(r"\[(\d)/4\] float64 (\w+) +rows +16x1024 +\d+\.\d s", line)
        for line in lines[2:-1]
    ]
    assert all(progress), lines
    assert [int(match[1]) for match in progress] == [1, 2, 3, 4]
    assert sorted(match[2] for match in progress) == [
        "layer_norm_backward",
        "layer_norm_forward",
        "rms_norm_backward",
        "rms_norm_forward",
    ]
    assert re.fullmatch(r"float64: \d+\.\d s  \(total \d+\.\d s wall\)", lines[-1])


def test_the_cache_directory_is_the_imported_package_s_own_unless_numba_is_told_another():
    kernels_source = pathlib.Path(numbanorm._kernels.__file__)
    expected = (
        pathlib.Path(os.environ["NUMBA_CACHE_DIR"])
        if os.environ.get("NUMBA_CACHE_DIR")
        else kernels_source.parent / "__pycache__"
    )
    assert pathlib.Path(cache_directory()).is_relative_to(expected)


def test_warmup_returns_the_seconds_of_each_dtype(small_rows_plan):
    reported = []
    timings = warmup.warmup(["float32", "float16"], progress=lambda *args: reported.append(args))
    assert list(timings) == ["float32", "float16"]
    assert [done for done, *_ in reported] == list(range(1, 9))
    for dtype, seconds in timings.items():
        assert seconds == pytest.approx(sum(s for *_, call, s in reported if call.dtype == dtype))


def test_warmup_on_a_terminal_draws_a_bar_above_which_it_prints_the_calls(
    small_rows_plan, capsys, monkeypatch
):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    main(["warmup", "--dtypes", "float64"])
    out = capsys.readouterr().out
    assert "4/4 calls" in out
    calls = re.findall(r"\[\d/4\] float64 \w+ +rows +16x1024 +\d+\.\d s", out)
    assert len(calls) == 4


def test_warmup_on_a_terminal_without_tqdm_prints_plain_lines(small_rows_plan, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    main(["warmup", "--dtypes", "float64"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(line.startswith("[") for line in lines[2:-1])


def test_quiet_warmup_prints_the_totals_alone(small_rows_plan, capsys):
    main(["warmup", "--quiet", "--dtypes", "float64"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"float64: \d+\.\d s  \(total \d+\.\d s wall\)", lines[0])


@pytest.mark.parametrize("dtypes", [["foo"], ["float32", "int8"]])
def test_warmup_rejects_unknown_dtypes_listing_the_valid_ones(capsys, dtypes):
    with pytest.raises(SystemExit) as exit:
        main(["warmup", "--dtypes", *dtypes])
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"invalid choice: '{dtypes[-1]}'" in captured.err
    assert "'float32', 'float64', 'float16'" in captured.err
    assert "Traceback" not in captured.err


def test_warmup_function_rejects_unknown_dtypes():
    with pytest.raises(ValueError, match="cannot warm up float8: the dtypes are float32"):
        warmup.warmup(["float8"])
