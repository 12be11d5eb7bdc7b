"""Sphinx configuration of the metasolve documentation site.

Build it from the repository root with
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# Document the source tree beside this folder, not whichever metasolve is installed.
sys.path.insert(0, str(DOCS.parent / "src"))
sys.path.insert(0, str(DOCS / "_ext"))
# Importing metasolve imports torch; one thread is plenty for reading docstrings.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from metasolve import __version__  # noqa: E402

project = "metasolve"
author = "the metasolve authors"
copyright = "the metasolve authors, MIT license"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "metasolve_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "results/*.json"]

# Markdown: ``{directive}`` fences, ``$...$`` is not math (the docs write `x^2` in code), and
# headings get anchors so that ``page.md#heading`` links resolve.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: docstrings are reST with Google-style "Args:" sections.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields, not as entries that autodoc repeats

html_theme = "alabaster"
html_title = f"metasolve {release}"
html_theme_options = {
    "description": "Learn to accelerate iterative numerical solvers",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
