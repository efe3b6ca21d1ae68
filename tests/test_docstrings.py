"""Every public name has a complete numpydoc docstring whose examples run.

The public names are ``numbanorm.__all__`` and the ``__all__`` of the
optional submodules, read from their source so that the cases exist
without the dependency; a submodule's cases skip when its dependency is
missing.  Each name's doctests run in a namespace of their own, so an
example imports what it uses, as a reader copying it would.
"""

import ast
import doctest
import importlib
import importlib.util
import inspect
import pathlib
import re

import pytest

import numbanorm

# submodule -> the dependency its import needs
OPTIONAL_SUBMODULES = {
    "numbanorm.jax": "jax",
    "numbanorm.distributed": "mpi4py",
    "numbanorm.dask": "dask",
}
OPTION_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

# A section header: a title underlined by as many dashes.
SECTION = re.compile(r"^(?P<title>\S[^\n]*)\n(?P<rule>-+)[ \t]*$", re.MULTILINE)


def static_all(module_name):
    """A submodule's ``__all__``, read from its source without importing it."""
    source = pathlib.Path(importlib.util.find_spec(module_name).origin).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module_name} has no literal __all__")


PUBLIC_NAMES = [f"numbanorm.{name}" for name in numbanorm.__all__] + [
    f"{module}.{name}" for module in OPTIONAL_SUBMODULES for name in static_all(module)
]


def public_object(qualified_name):
    """The object a public name stands for, skipping where its dependency is missing."""
    module_name, name = qualified_name.rsplit(".", 1)
    if module_name in OPTIONAL_SUBMODULES:
        pytest.importorskip(OPTIONAL_SUBMODULES[module_name])
    return getattr(importlib.import_module(module_name), name)


def doctest_failures(obj, name):
    """The report of the failing examples in ``obj``'s docstrings ('' if none fail)."""
    report = []
    runner = doctest.DocTestRunner(optionflags=OPTION_FLAGS)
    for test in doctest.DocTestFinder().find(obj, name, globs={}):
        runner.run(test, out=report.append)
    return "".join(report)


def sections(docstring):
    """A numpydoc docstring's sections: ``{title: body}``, each body dedented."""
    headers = list(SECTION.finditer(docstring))
    bodies = {}
    for header, following in zip(headers, headers[1:] + [None]):
        end = len(docstring) if following is None else following.start()
        if len(header["rule"]) == len(header["title"].rstrip()):
            bodies[header["title"].strip()] = inspect.cleandoc(docstring[header.end() : end])
    return bodies


def documented_parameters(parameters_section):
    """The names a Parameters section documents: its unindented lines, before any ``:``."""
    names = set()
    for line in parameters_section.splitlines():
        if line and not line[0].isspace():
            names.update(n.strip().lstrip("*") for n in line.split(" : ")[0].split(","))
    return names


def docstring_defects(obj):
    """What a public function's or class's docstring lacks, as a list of sentences."""
    doc = inspect.getdoc(obj)
    if not doc:
        return ["no docstring"]
    found = sections(doc)
    signature = inspect.signature(obj)
    parameters = [p.name for p in signature.parameters.values() if p.name not in ("self", "cls")]
    required = ["Examples"]
    if parameters:
        required.append("Parameters")
    if not inspect.isclass(obj) and signature.return_annotation not in (None, "None"):
        required.append("Returns")
    defects = [f"no {title} section" for title in required if title not in found]
    documented = documented_parameters(found.get("Parameters", ""))
    defects += [f"parameter {p} is not documented" for p in parameters if p not in documented]
    defects += [f"{p} is documented but no parameter" for p in sorted(documented - {*parameters})]
    return defects


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_examples_run(name):
    failures = doctest_failures(public_object(name), name)
    assert not failures, f"doctests of {name} failed:\n{failures}"


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_numpydoc_sections(name):
    defects = docstring_defects(public_object(name))
    assert not defects, f"the docstring of {name}: " + "; ".join(defects)


def broken(x, y=1):
    """A function whose docstring has a failing example and misses a section.

    Parameters
    ----------
    x : int
        Documented.
    z : int
        Not a parameter.

    Examples
    --------
    >>> 1 + 1
    3
    """
    return x + y


def test_the_checks_catch_defects():
    assert "Expected:\n    3\nGot:\n    2" in doctest_failures(broken, "broken")
    assert docstring_defects(broken) == [
        "no Returns section",
        "parameter y is not documented",
        "z is documented but no parameter",
    ]


def test_every_public_name_is_in_the_api_reference():
    """docs/api.rst lists each public name under its module's ``currentmodule``."""
    api = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.rst"
    if not api.exists():
        pytest.skip("docs/api.rst not found beside tests/")
    listed, module = set(), None
    for line in api.read_text().splitlines():
        if line.startswith(".. currentmodule:: "):
            module = line.split("::")[1].strip()
        elif module and re.fullmatch(r"   \w+", line):
            listed.add(f"{module}.{line.strip()}")
    assert sorted(set(PUBLIC_NAMES) - listed) == []
