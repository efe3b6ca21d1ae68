"""The README's and the documentation pages' Python examples run as written,
and their links between files lead somewhere.

Blocks fenced ```python run; an example that imports an optional dependency
(JAX) is skipped where it is not installed.  Blocks fenced ```py are only
shown: they need hardware or processes the tests cannot assume (CuPy's GPU,
MPI ranks, a Dask cluster).  The Sphinx build (CI) checks the site's
cross-references too; these checks also cover the README, which is not part
of the site.
"""

import importlib.util
import pathlib
import re
import sys

import pytest

from helpers import OPEN_MPI_ENV, environment, mpiexec_path, run_in_own_session

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
PAGES = [page for page in PAGES if page.exists()]
EXAMPLES = [
    (page, index, code)
    for page in PAGES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]
OPTIONAL_MODULES = ("jax",)
# [text](target): targets without a scheme are paths relative to the page.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _heading_anchors(page):
    """The anchors of a Markdown page's headings, as GitHub and MyST spell them."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.skipif(not EXAMPLES, reason="README.md and docs/ not found beside tests/")
@pytest.mark.parametrize(
    "page, index, code",
    EXAMPLES,
    ids=[f"{page.relative_to(ROOT)}-{index + 1}" for page, index, _ in EXAMPLES],
)
def test_example_runs(page, index, code):
    for module in OPTIONAL_MODULES:
        if re.search(rf"^\s*(import|from)\s+(\w+\.)*{module}\b", code, re.M):
            pytest.importorskip(module)
    exec(compile(code, f"{page.name} example {index + 1}", "exec"), {})


@pytest.mark.skipif(not PAGES, reason="README.md and docs/ not found beside tests/")
@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_links_between_files_lead_somewhere(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _heading_anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.name} links to missing files or headings: {broken}"


def test_every_example_script_is_on_the_examples_page():
    page = ROOT / "docs" / "examples.md"
    scripts = sorted((ROOT / "examples").glob("*.py"))
    if not page.exists() or not scripts:
        pytest.skip("docs/examples.md or examples/ not found beside tests/")
    missing = [s.name for s in scripts if f"../examples/{s.name}" not in page.read_text()]
    assert not missing, f"docs/examples.md does not show {missing}"


def test_the_mpi_training_snippet_runs_on_two_ranks(tmp_path):
    """docs/distributed.md's train.py, as written, on 2 ranks; its closing claim checked."""
    page = ROOT / "docs" / "distributed.md"
    if not page.exists():
        pytest.skip("docs/distributed.md not found beside tests/")
    if importlib.util.find_spec("mpi4py") is None or mpiexec_path() is None:
        pytest.skip("needs mpi4py and mpiexec (the mpi extra)")
    (snippet,) = re.findall(r"```py\n(# train\.py.*?)```", page.read_text(), re.S)
    claim = (
        "\nfor name in ('running_mean', 'running_var', 'weight', 'bias'):\n"
        "    mine = getattr(bn, name)\n"
        "    assert all(np.array_equal(other, mine) for other in comm.allgather(mine)), name\n"
    )
    script = tmp_path / "train.py"
    script.write_text(snippet + claim)
    command = [mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py", str(script)]
    run_in_own_session(
        command, env=environment(**OPEN_MPI_ENV), timeout=300, what="the train.py snippet"
    )
