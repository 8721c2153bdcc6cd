"""Every tutorial notebook runs top to bottom (smoke sizes) and is committed without outputs.

The notebooks are found by a glob, so a new ``tutorials/*.ipynb`` is tested without
editing this file.  Each runs in a fresh ``python3`` kernel of this interpreter with
``VI_ENTROPY_SMOKE=1`` (tiny sizes) and this checkout first on ``PYTHONPATH``, so the
kernel imports the package under test.  ``MPLBACKEND`` is removed from the kernel's
environment: ipykernel then uses matplotlib's inline backend, which is headless too but
renders every figure to PNG, so a figure that fails to draw fails the test and the
executed notebook carries its figures (``Agg`` would silently drop them).

The executed notebooks are left in ``docs/_build/executed/`` with the digest of their
source: ``make docs`` renders those instead of executing the same notebooks again
(``docs/conf.py``, ``reusable_notebooks``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell: generous for a loaded 2-core machine


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_tutorials_exist():
    assert NOTEBOOKS, "no notebooks found in tutorials/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The kernel inherits this environment (jupyter_client copies os.environ).
    monkeypatch.setenv("VI_ENTROPY_SMOKE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # As in docs/conf.py: tqdm.auto's warning about a missing ipywidgets is machine noise.
    warnings = [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"]
    monkeypatch.setenv("PYTHONWARNINGS", ",".join(filter(None, warnings)))
    path_entries = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path_entries))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",  # jupyter_client runs it with this interpreter (sys.executable)
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},  # files it writes land in tmp_path
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    _keep_for_docs(nb, path)


def _keep_for_docs(nb: nbformat.NotebookNode, source: Path) -> None:
    """Leave the executed notebook where the documentation build looks for it."""
    out = ROOT / "docs" / "_build" / "executed"
    out.mkdir(parents=True, exist_ok=True)
    nb.metadata["vi_entropy"] = {
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "smoke": os.environ["VI_ENTROPY_SMOKE"],
    }
    tmp = out / f".{source.name}.{os.getpid()}.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, out / source.name)  # atomic: a concurrent docs build sees old or new
