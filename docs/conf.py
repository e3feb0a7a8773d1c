"""Sphinx configuration of the gmoe documentation.

Build from the repository root with::

    python -m sphinx -b html docs docs/_build/html
"""

import os
import sys
import warnings
from pathlib import Path

# The package is imported from the repository (flat layout), installed or not.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Headless plotting in the gallery and in plot directives.
os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

import gmoe  # noqa: E402

# -- Project -----------------------------------------------------------------------------
project = "gmoe"
author = "the gmoe developers"
copyright = "2024, the gmoe developers"
release = gmoe.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    # A copy of MathJax 3 shipped with the docs (into _static/mathjax), so the formulas
    # render without a network; the PyPI package of this name (the ``docs`` extra).
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "README.md", "examples", "**.ipynb_checkpoints",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "literal"
nitpicky = False

# The bundled MathJax (sphinx-mathjax-offline sets the same path; stated here so the
# choice is visible): the TeX input with the CommonHTML output, fonts included.
mathjax_path = "mathjax/tex-chtml.js"

# -- autodoc / autosummary ---------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"          # numpydoc carries the types
autodoc_member_order = "groupwise"

# -- numpydoc ----------------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_use_plots = False
# A modest validation set: every parameter documented (PR01), no unknown parameters
# (PR02), a Returns section on functions that return (RT01), a summary line (SS01).
# Reported as warnings; the build does not fail on them (it is not run with -W).
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "SS01"}
# Private objects and the inherited scikit-learn API are not validated.
numpydoc_validation_exclude = {
    r"\._",                         # private members
    r"\.__\w+__$",                  # dunder methods
    r"\.set_\w+_request$",          # sklearn metadata-routing methods
    r"\.get_params$",
    r"\.set_params$",
    r"\.get_metadata_routing$",
    # Result containers (dataclasses, named tuples): their fields are documented under
    # Attributes, which PR01 does not recognise as the constructor's parameters.
    r"\.(ParameterErrors|BootstrapResults|SelectionResult|Experiment|RunSummary|RateFit"
    r"|BootstrapSlope|LossByN|RateReport|MetricColumn|Theory|TaskTimes)$",
}

# -- intersphinx -------------------------------------------------------------------------
# Inventories are fetched at build time; offline they are skipped with one warning each
# (the build still succeeds; cross-references to these projects are then plain text).
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "sklearn": ("https://scikit-learn.org/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}
intersphinx_timeout = 3

# -- sphinx-gallery ----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "doc_module": ("gmoe",),
    "reference_url": {"gmoe": None},
    "backreferences_dir": "generated",
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
}

# Warnings that the examples raise on purpose are shown in the output, not as build noise.
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")

# -- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"gmoe {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": []}
html_show_sourcelink = False


# -- hooks -------------------------------------------------------------------------------
def _skip_member(app, what, name, obj, skip, options):
    """Leave scikit-learn's generated metadata-routing methods out of the API pages."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
