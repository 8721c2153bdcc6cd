"""The documentation's own machinery (docs/conf.py), and the pages it builds.

``make docs`` (run by ``.ci/run`` after ``make test``) builds the site with warnings as
errors; these tests pin what the build relies on: the API-coverage check fails when a
public name is missing, optional pages join the table of contents only once they exist,
and executed notebooks are reused only for the exact source and size they ran with.
A small build of the landing, method and API pages (seconds: no tutorials) checks what a
reader offline sees: the formulas are left to a MathJax that is a file of the build, every
script and stylesheet is local, and, where a headless Chromium is installed, no raw TeX
is left on the pages once the browser has rendered them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

sphinx_errors = pytest.importorskip("sphinx.errors", reason="the docs extra is not installed")
ExtensionError = sphinx_errors.ExtensionError

# One group: the small site build (a module fixture) runs once, on one worker.
pytestmark = pytest.mark.xdist_group("docs")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def conf():
    """docs/conf.py as a module (importing it sets two environment defaults: undone)."""
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location("vi_entropy_docs_conf", ROOT / "docs" / "conf.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


class FakeDomain:
    def __init__(self, names):
        self.objects = {name: None for name in names}


class FakeEnv:
    """What the coverage check reads from Sphinx's build environment."""

    def __init__(self, names):
        self._domain = FakeDomain(names)

    def get_domain(self, name):
        assert name == "py"
        return self._domain


def test_public_names_cover_the_package_and_its_public_modules(conf):
    import vi_entropy

    names = conf.public_names()
    assert {f"vi_entropy.{n}" for n in vi_entropy.__all__} <= set(names)
    assert "vi_entropy.diagnostics.local_entropy" in names
    assert "vi_entropy.experiment.run_experiment" in names
    assert len(names) == len(set(names))


def test_api_coverage_check_passes_when_every_name_is_documented(conf):
    conf.check_api_coverage(None, FakeEnv(conf.public_names()))


def test_api_coverage_check_fails_naming_the_missing_public_name(conf):
    names = conf.public_names()
    documented = [n for n in names if n != "vi_entropy.LocalEntropy"]
    with pytest.raises(ExtensionError, match=r"missing public names: vi_entropy\.LocalEntropy "):
        conf.check_api_coverage(None, FakeEnv(documented))


def test_api_page_names_every_public_name(conf):
    # The build's check is authoritative; this catches a forgotten entry without a build.
    text = (ROOT / "docs" / "api.md").read_text()
    for name in conf.public_names():
        assert name.rsplit(".", 1)[-1] in text, name


class FakeApp:
    def __init__(self, srcdir):
        self.srcdir = str(srcdir)


def test_optional_pages_join_the_landing_page_only_when_present(conf, tmp_path):
    index = (ROOT / "docs" / "index.md").read_text()
    assert conf.OPTIONAL_MARKER in index

    source = [index]
    conf._add_optional_pages(FakeApp(tmp_path), "index", source)
    assert conf.OPTIONAL_MARKER not in source[0]
    assert ":caption: Results" not in source[0]

    (tmp_path / "results.md").write_text("# Results\n")
    (tmp_path / "scaling.md").write_text("# Scaling\n")
    source = [index]
    conf._add_optional_pages(FakeApp(tmp_path), "index", source)
    assert ":caption: Results\n\nresults\nscaling\n```" in source[0]

    other = ["text\n" + conf.OPTIONAL_MARKER + "\n"]
    conf._add_optional_pages(FakeApp(tmp_path), "method", other)
    assert conf.OPTIONAL_MARKER in other[0]  # only the landing page is touched


def test_choosing_tau_figure_is_drawn_from_the_committed_full_run(conf, tmp_path):
    """The method page's "Choosing τ" figure: its JSON is committed (a full run, both
    models, every τ), the figure is drawn at build time into the source's _static."""
    data = json.loads(conf.CHOOSING_TAU_JSON.read_text())
    assert data["quick"] is False and data["steps"] == 30
    assert set(data["models"]) == {"regression", "local_level"}
    for model in data["models"].values():
        assert len(model["runs"]) == len(data["ratios"]) + 1  # the grid and the default τ
    conf._choosing_tau_figure(FakeApp(tmp_path))
    assert (tmp_path / conf.CHOOSING_TAU_FIGURE).stat().st_size > 0
    assert "_static/generated/choosing_tau.png" in (ROOT / "docs" / "method.md").read_text()


def test_executed_notebooks_are_reused_only_for_the_same_source_and_size(
    conf, tmp_path, monkeypatch
):
    tutorials, executed = tmp_path / "tutorials", tmp_path / "executed"
    tutorials.mkdir()
    executed.mkdir()
    source = tutorials / "01_example.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, source)
    nb.metadata["vi_entropy"] = {"source_sha256": conf.source_digest(source), "smoke": "1"}
    nbformat.write(nb, executed / source.name)

    monkeypatch.setenv("VI_ENTROPY_SMOKE", "1")
    monkeypatch.delenv("VI_ENTROPY_DOCS_REUSE", raising=False)
    assert conf.reusable_notebooks(tutorials, executed) == ["01_example.ipynb"]

    monkeypatch.setenv("VI_ENTROPY_DOCS_REUSE", "0")
    assert conf.reusable_notebooks(tutorials, executed) == []
    monkeypatch.delenv("VI_ENTROPY_DOCS_REUSE")

    monkeypatch.setenv("VI_ENTROPY_SMOKE", "0")  # a full-size build executes afresh
    assert conf.reusable_notebooks(tutorials, executed) == []
    monkeypatch.setenv("VI_ENTROPY_SMOKE", "1")

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("2")]), source)
    assert conf.reusable_notebooks(tutorials, executed) == []  # the source changed


# --- The built site: formulas rendered and every asset local ------------------------------

#: The pages whose formulas are checked: the landing page and the method page.
MATH_PAGES = ("index.html", "method.html")


class _Page(HTMLParser):
    """What a built page loads (scripts, stylesheets) and its text outside math and code."""

    SKIP = {"script", "style"}  # their text is never shown

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts, self.stylesheets, self.text = [], [], []
        self._stack = []  # (tag, hidden) of the open elements

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "link" and "stylesheet" in (attrs.get("rel") or "").split():
            self.stylesheets.append(attrs["href"])
        if tag in ("link", "meta", "img", "br", "hr", "input", "source", "wbr"):
            return  # void elements: no end tag
        # Sphinx marks the spans and blocks that MathJax typesets with the class "math".
        hidden = tag in self.SKIP or "math" in (attrs.get("class") or "").split()
        self._stack.append((tag, hidden or any(h for _, h in self._stack)))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not any(h for _, h in self._stack):
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The landing, method and API pages, built with docs/conf.py (tutorials left out).

    The build is the real configuration (theme, MathJax, extensions) on a copy of those
    three pages, so it takes seconds: the tutorials' rendering is ``make docs``'s job.
    """
    from sphinx.application import Sphinx

    work = tmp_path_factory.mktemp("site")
    src = work / "src"
    src.mkdir()
    for name in ("index.md", "method.md", "api.md"):
        shutil.copy(ROOT / "docs" / name, src / name)
    shutil.copytree(ROOT / "docs" / "_static", src / "_static")
    saved = dict(os.environ)
    try:
        with warnings.catch_warnings():
            # Sphinx's and the theme's notices of their own API changes: not this package's.
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            app = Sphinx(
                srcdir=src,
                confdir=ROOT / "docs",
                outdir=work / "html",
                doctreedir=work / "doctrees",
                buildername="html",
                confoverrides={"exclude_patterns": ["_build", "tutorials"]},
                status=None,
                warning=io.StringIO(),
                freshenv=True,
            )
            app.build()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert app.statuscode == 0
    return work / "html"


@pytest.mark.parametrize("name", MATH_PAGES)
def test_page_text_has_no_raw_tex_outside_what_mathjax_typesets(site, name):
    page = _parse(site / name)
    text = "".join(page.text)
    assert "Gaussian" in text  # the page's own text was read
    for raw in ("\\(", "\\)", "\\[", "$$"):
        assert raw not in text, f"{name}: raw {raw!r} in the page's text"


@pytest.mark.parametrize("name", MATH_PAGES)
def test_mathjax_and_every_script_and_stylesheet_are_local_files_of_the_build(site, name):
    page = _parse(site / name)
    mathjax = [s for s in page.scripts if "mathjax" in s.lower()]
    assert mathjax, f"{name} loads no MathJax"
    for ref in page.scripts + page.stylesheets:
        assert "://" not in ref and not ref.startswith("//"), f"{name} fetches {ref}"
        assert (site / ref.split("?", 1)[0]).is_file(), f"{name}: {ref} is not in the build"
    html = (site / name).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//[^"']*\.(js|css|woff2?)\b""", html)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _browse(page: Path, profile: Path, width: int = 1400) -> str:
    """The page's DOM once headless Chromium has loaded it and run its scripts."""
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={width},1200",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


needs_chromium = pytest.mark.skipif(
    _chromium() is None, reason="no headless Chromium to render the pages"
)


@needs_chromium
@pytest.mark.parametrize("name", MATH_PAGES)
def test_formulas_render_in_a_browser_without_network(site, name, tmp_path):
    # The page as a browser shows it once its scripts ran: MathJax replaces each formula
    # by an <mjx-container>. The site is opened from disk, so only local files can load.
    dom = _browse(site / name, tmp_path)
    assert "<mjx-container" in dom, f"{name}: MathJax typeset nothing"
    page = _Page()
    page.feed(re.sub(r'class="math[^"]*"', "", dom))  # now judge every span's text
    text = "".join(page.text)
    assert "Gaussian" in text
    assert "\\(" not in text and "\\[" not in text, f"{name}: raw TeX left after rendering"


PROBE = """
<div class="highlight-python notranslate"><div class="highlight"><pre id="probe">{line}</pre></div></div>
<script>
window.addEventListener("load", () => {{
  const pre = document.getElementById("probe");
  document.body.dataset.overflow = String(pre.scrollWidth - pre.clientWidth);
}});
</script>
"""


@needs_chromium
@pytest.mark.parametrize(("length", "fits"), [(100, True), (130, False)])
def test_a_100_character_code_line_fits_the_content_column(site, tmp_path, length, fits):
    # A code block of one line of `length` characters, placed in the landing page's
    # article, in a window 1400 pixels wide; 130 characters must not fit (the probe works).
    html = (site / "index.html").read_text(encoding="utf-8")
    probe = PROBE.format(line="x" * length)
    html, n = re.subn(r'(<article class="bd-article"[^>]*>)', lambda m: m.group(1) + probe, html)
    assert n == 1, "no article element on the landing page"
    page = site / f"probe_{length}.html"
    page.write_text(html, encoding="utf-8")
    overflow = re.search(r'data-overflow="(-?\d+)"', _browse(page, tmp_path, width=1400))
    assert overflow, "the probe did not run"
    assert (int(overflow.group(1)) <= 0) == fits, f"{length} characters: {overflow.group(0)}"
