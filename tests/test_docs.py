"""The documentation's own machinery (docs/conf.py), without building the site.

``make docs`` (run by ``.ci/run`` after ``make test``) builds the site with warnings as
errors; these tests pin what the build relies on: the API-coverage check fails when a
public name is missing, optional pages join the table of contents only once they exist,
and executed notebooks are reused only for the exact source and size they ran with.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

sphinx_errors = pytest.importorskip("sphinx.errors", reason="the docs extra is not installed")
ExtensionError = sphinx_errors.ExtensionError

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
