"""The command line's code stays out of the library."""

from helpers import environment, run_python


def test_import_numbanorm_imports_no_command_line_code():
    loaded = run_python(
        "import sys, numbanorm; print(*sorted(m for m in sys.modules if m.startswith('numbanorm')))",
        env=environment()).split()
    assert "numbanorm" in loaded
    assert not [m for m in loaded if m == "numbanorm._cli" or m.startswith("numbanorm._cli.")]
