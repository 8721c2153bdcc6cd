"""Sphinx configuration: MyST-NB renders the Markdown pages and the executed tutorials."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import sys
from pathlib import Path

from sphinx.errors import ExtensionError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Tutorials run smoke-sized at build time unless the builder asks for full size.
os.environ.setdefault("VI_ENTROPY_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

project = "vi_entropy"
author = "The vi_entropy developers"
copyright = "2026, the vi_entropy developers"
release = importlib.import_module("vi_entropy").__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
exclude_patterns = ["_build", "**.ipynb_checkpoints", "api/generated/*.rst.txt"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = "vi_entropy"
suppress_warnings = ["myst.header"]


def _copy_tutorials(app) -> None:
    """Render the notebooks of ``tutorials/`` (kept without outputs) as pages."""
    target = Path(app.srcdir) / "tutorials"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy(nb, target / nb.name)


def public_names() -> list[str]:
    """Every public name of the package: ``vi_entropy.__all__`` and its modules' ``__all__``."""
    pkg = importlib.import_module("vi_entropy")
    names = {f"vi_entropy.{n}" for n in pkg.__all__}
    for module_name in getattr(pkg, "__public_modules__", ()):
        module = importlib.import_module(f"vi_entropy.{module_name}")
        for n in getattr(module, "__all__", ()):
            obj = getattr(module, n)
            if inspect.ismodule(obj):
                continue
            names.add(f"vi_entropy.{module_name}.{n}")
    return sorted(names)


def _check_api_coverage(app, env) -> None:
    """Fail the build when a public name has no entry in the API reference."""
    documented = set(env.get_domain("py").objects)
    missing = [n for n in public_names() if n not in documented]
    if missing:
        raise ExtensionError(
            "API reference is missing public names: " + ", ".join(missing)
            + " (add them to docs/api.md)"
        )


def setup(app):
    app.connect("builder-inited", _copy_tutorials)
    app.connect("env-check-consistency", _check_api_coverage)
