"""Sphinx configuration: MyST-NB renders the Markdown pages and the executed tutorials."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Tutorials run smoke-sized at build time unless the builder asks for full size
# (VI_ENTROPY_SMOKE=0 make docs).  The notebook kernels inherit this environment, so
# they import this checkout's package.  Without MPLBACKEND, ipykernel selects
# matplotlib's inline backend, which puts the figures into the pages (Agg would not).
os.environ.setdefault("VI_ENTROPY_SMOKE", "1")
os.environ.pop("MPLBACKEND", None)
# tqdm.auto warns at import when ipywidgets is missing: noise about this machine, not
# about the package, so the kernels ignore that one warning.
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"])
)
_pythonpath = os.environ.get("PYTHONPATH", "")
if str(ROOT) not in _pythonpath.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), _pythonpath]))

project = "vi_entropy"
author = "The vi_entropy developers"
copyright = "2026, the vi_entropy developers"
release = importlib.import_module("vi_entropy").__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # MathJax from the package's copy, into the build's _static/mathjax: the pages render
    # their formulas without a network (the default loads MathJax from a CDN).
    "sphinx-mathjax-offline",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
autosummary_generate = False  # the API page lists its entries itself
autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
nb_execution_mode = "force"
nb_execution_timeout = 900
# Notebooks that the test suite has just executed from the same sources, at the same
# size, are rendered from that run instead of being executed a second time (see
# ``reusable_notebooks``); VI_ENTROPY_DOCS_REUSE=0 executes every notebook here.
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (the experiment's table) with tables
# A benchmark directory's notes.md is rendered into the results page, not a page itself.
exclude_patterns = ["_build", "**.ipynb_checkpoints", "results/*/notes.md"]
html_theme = "sphinx_book_theme"
html_title = "vi_entropy"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # a content column wide enough for a 100-character line
html_theme_options = {"show_toc_level": 2}
suppress_warnings = ["myst.header"]

#: Pages written from full runs (the main experiment's results, the benchmarks, the
#: scaling study).  Each joins the landing page's table of contents once its file exists,
#: so the site builds, without warnings, before and after they are added.
OPTIONAL_PAGES = ("results", "results_mnist5k", "benchmarks", "scaling")
OPTIONAL_MARKER = "% vi-entropy:optional-pages"


#: Where ``tests/test_notebooks.py`` leaves the notebooks it executed.
EXECUTED_DIR = ROOT / "docs" / "_build" / "executed"


def source_digest(path: Path) -> str:
    """SHA-256 of a notebook file: ties an executed copy to the exact source it ran."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def reusable_notebooks(tutorials: Path = ROOT / "tutorials", executed: Path = EXECUTED_DIR):
    """Names of the tutorials with an executed copy from the same source and size.

    The copy's metadata ``vi_entropy`` records the SHA-256 of the source notebook and the
    value of ``VI_ENTROPY_SMOKE`` it ran with; both must match this build.
    """
    if os.environ.get("VI_ENTROPY_DOCS_REUSE", "1") == "0":
        return []
    import nbformat

    names = []
    for nb in sorted(Path(tutorials).glob("*.ipynb")):
        copy = Path(executed) / nb.name
        if not copy.is_file():
            continue
        meta = nbformat.read(copy, as_version=4).metadata.get("vi_entropy", {})
        if meta.get("source_sha256") == source_digest(nb) and meta.get("smoke") == os.environ.get(
            "VI_ENTROPY_SMOKE"
        ):
            names.append(nb.name)
    return names


REUSED_NOTEBOOKS = reusable_notebooks()
nb_execution_excludepatterns = [f"tutorials/{name}" for name in REUSED_NOTEBOOKS]


def _copy_tutorials(app) -> None:
    """Render the notebooks of ``tutorials/`` (kept without outputs) as pages.

    Each is executed at build time, unless the test suite's executed copy of the same
    source is reused (``REUSED_NOTEBOOKS``).
    """
    target = Path(app.srcdir) / "tutorials"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        source = EXECUTED_DIR / nb.name if nb.name in REUSED_NOTEBOOKS else nb
        shutil.copy(source, target / nb.name)
    if REUSED_NOTEBOOKS:
        logger.info(
            "rendering the test suite's executed notebooks: %s", ", ".join(REUSED_NOTEBOOKS)
        )


def optional_pages(srcdir: Path) -> list[str]:
    """The pages of :data:`OPTIONAL_PAGES` that exist in ``srcdir``."""
    return [
        name
        for name in OPTIONAL_PAGES
        if any((Path(srcdir) / f"{name}{ext}").is_file() for ext in (".md", ".ipynb", ".rst"))
    ]


def _add_optional_pages(app, docname: str, source: list[str]) -> None:
    """Replace the landing page's marker by a toctree of the optional pages present."""
    if docname != "index":
        return
    pages = optional_pages(Path(app.srcdir))
    toctree = (
        "```{toctree}\n:maxdepth: 1\n:caption: Results\n\n" + "\n".join(pages) + "\n```\n"
        if pages
        else ""
    )
    source[0] = source[0].replace(OPTIONAL_MARKER + "\n", toctree)


def public_names() -> list[str]:
    """Every public name of the package: ``vi_entropy.__all__`` and its modules' ``__all__``.

    The modules are those of ``vi_entropy.__public_modules__`` (optional).
    """
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


def missing_names(documented: Iterable[str], names: Iterable[str] | None = None) -> list[str]:
    """The public names (default :func:`public_names`) without an entry in ``documented``."""
    documented = set(documented)
    return [n for n in (public_names() if names is None else names) if n not in documented]


def check_api_coverage(app, env) -> None:
    """Fail the build when a public name has no entry in the API reference."""
    missing = missing_names(env.get_domain("py").objects)
    if missing:
        raise ExtensionError(
            "API reference is missing public names: "
            + ", ".join(missing)
            + " (add them to docs/api.md)"
        )


def benchmark_directories(root: Path = ROOT / "docs" / "results") -> list[Path]:
    """The committed benchmarks (directories with a ``summary.json``), in name order."""
    return sorted(p.parent for p in Path(root).glob("*/summary.json"))


def _results_figures(app) -> None:
    """Draw the results page's figures from the committed benchmark JSON (not committed)."""
    directories = benchmark_directories()
    if not directories:
        return
    from vi_entropy.experiment.results import FIGURES, render_page

    figures = Path(app.srcdir) / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    render_page(directories, figures, root=Path(app.srcdir))


#: The data of the method page's "Choosing τ" figure (``benchmarks/choosing_tau.py``).
CHOOSING_TAU_JSON = ROOT / "benchmarks" / "results" / "choosing_tau.json"
#: That figure, drawn at build time (not committed), relative to the source directory.
CHOOSING_TAU_FIGURE = Path("_static") / "generated" / "choosing_tau.png"
#: One colour per τ/σ² of the grid, in its order (the default τ is drawn dashed, in black).
TAU_COLOURS = ("#fdae61", "#d7191c", "#2c7bb6", "#1a9641")


def draw_choosing_tau(data: dict, path: Path) -> Path:
    """One panel per model: the centre's distance to the posterior mean (RMS over the
    unconstrained coordinates, in posterior sds) against the outer step, a line per τ,
    the Gaussian prediction ``σ²/(σ² + τ)`` per step dotted in the same colour."""
    from matplotlib.figure import Figure  # no pyplot: no backend state in the build

    models = data["models"]
    fig = Figure(figsize=(4.8 * len(models), 4.8))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        grid = iter(TAU_COLOURS)
        for run in model["runs"]:
            ratio = run["tau_over_median_var"]
            if run["default_tau"]:
                colour, style = "0.15", "--"
                label = f"τ = {run['tau']:g} (default) = {ratio:.2g} σ²"
            else:
                colour, style = next(grid), "-"
                label = f"τ = {ratio:g} σ²"
            measured = run["measured"]["rms"]
            ax.plot(range(len(measured)), measured, style, color=colour, lw=1.8, label=label)
            if not run["default_tau"]:
                gauss = run["predicted"]["rms"]
                ax.plot(range(len(gauss)), gauss, ":", color=colour, lw=1.2)
        ax.set_yscale("log")
        ax.set_ylim(0.02, 2 * model["start_distance"]["rms"][0])
        ax.set_xlabel("outer step")
        ax.set_title(
            f"{name}: {model['dim']} coordinates, σ² = {model['median_var']:.2g}", fontsize=10
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    axes[0].set_ylabel("distance to the posterior mean (RMS, posterior sds)")
    fig.suptitle(
        "σ²: median posterior variance of the unconstrained coordinates (NUTS);  "
        "dotted: the Gaussian prediction",
        fontsize=8,
        color="0.3",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _choosing_tau_figure(app) -> None:
    """Draw the "Choosing τ" figure from the committed JSON (the figure is not committed)."""
    if CHOOSING_TAU_JSON.is_file():
        data = json.loads(CHOOSING_TAU_JSON.read_text())
        draw_choosing_tau(data, Path(app.srcdir) / CHOOSING_TAU_FIGURE)


def setup(app):
    app.connect("builder-inited", _copy_tutorials)
    app.connect("builder-inited", _results_figures)
    app.connect("builder-inited", _choosing_tau_figure)
    app.connect("source-read", _add_optional_pages)
    app.connect("env-check-consistency", check_api_coverage)
