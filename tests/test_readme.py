"""The README's Python examples run as written.

Blocks fenced ```python run; an example that imports an optional dependency
(JAX) is skipped where it is not installed.  Blocks fenced ```py are only
shown: they need hardware the tests cannot assume (CuPy's GPU).
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if README.exists() else []
OPTIONAL_MODULES = ("jax",)


@pytest.mark.skipif(not EXAMPLES, reason="README.md with examples not found beside tests/")
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index):
    example = EXAMPLES[index]
    for module in OPTIONAL_MODULES:
        if re.search(rf"^\s*(import|from)\s+(\w+\.)*{module}\b", example, re.M):
            pytest.importorskip(module)
    exec(compile(example, f"README example {index + 1}", "exec"), {})
