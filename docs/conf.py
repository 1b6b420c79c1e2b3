"""Sphinx configuration of Catur's documentation site (``./run docs`` builds it into build/docs/).

The pages are MyST Markdown. The CLI, gRPC API, metrics and Python API reference pages are
generated from the code by ``docs/gen_reference.py`` (run by ``./run docs`` before each build);
the Python API is rendered by autodoc + napoleon from the docstrings.
"""

from __future__ import annotations

import catur

project = "Catur"
author = "The Catur authors"
copyright = "2026, the Catur authors"  # noqa: A001  (Sphinx's name)
release = catur.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
# `## Heading` anchors, so that links such as `page.md#section` resolve (and are checked).
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"Catur {release}"

# autodoc: members in source order, type hints in the description, private names skipped.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Optional extras: their modules import these lazily, but autodoc must never need them.
autodoc_mock_imports = ["libvirt", "ray"]
napoleon_google_docstring = True
napoleon_numpy_docstring = True
