"""Sphinx configuration of numbanorm's documentation site."""

import numbanorm

project = "numbanorm"
author = "The numbanorm developers"
copyright = "2026, the numbanorm developers"
version = release = numbanorm.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated/*.md"]
templates_path = ["_templates"]

# Headings become link targets, so that pages can link to each other's sections.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False


html_theme = "pydata_sphinx_theme"
html_title = f"numbanorm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
