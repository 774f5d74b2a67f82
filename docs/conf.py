"""Sphinx configuration of the mmemu documentation site.

Pages are Markdown (myst-parser) or reStructuredText files in docs/; a new page is one line
in the toctree of index.md. The API reference (api.rst) is generated from the numpydoc
docstrings; a new public module is one line there. The gallery is sphinx-gallery over
examples/plot_*.py, run during the build.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
try:                    # the installed package (pip install ".[docs]"), or PYTHONPATH=src
    import mmemu
except ImportError:     # a checkout built in place (python setup.py build_ext --inplace)
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    import mmemu

project = "mmemu"
author = "the mmemu authors"
copyright = "2026, the mmemu authors"
release = version = mmemu.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": False}
autodoc_typehints = "none"          # the numpydoc Parameters sections carry the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


sphinx_gallery_conf = {
    "examples_dirs": os.path.join(HERE, "..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"user_script\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

html_theme = "furo"
html_title = f"mmemu {release}"
html_static_path: list = []
