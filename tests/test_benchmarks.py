"""Every ``benchmarks/*.py --quick`` runs and writes valid JSON (no timing is asserted).

The scripts run as a user runs them: a fresh interpreter, the repository root as working
directory and on ``PYTHONPATH``.  Their run time is almost all XLA compilation, so they
share one JAX persistent compilation cache (a temporary directory: the eager operations
they all compile are compiled once for the whole file) and XLA's cheaper optimization
level (the quick timings mean nothing anyway).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    env["XLA_FLAGS"] = " ".join(
        [
            env.get("XLA_FLAGS", ""),
            "--xla_backend_optimization_level=0",
            "--xla_llvm_disable_expensive_passes=true",
        ]
    ).strip()
    return env


def test_every_script_is_covered():
    assert {
        "overhead",
        "naive",
        "compilation",
        "scaling",
        "accuracy_per_cost",
        "first_run",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_writes_json(script, env, tmp_path):
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == script and data["quick"] is True
    assert data["machine"]["jax"] and data["machine"]["nproc"] >= 1
    assert data["rows"], "no measurements"
    assert "|" in proc.stdout  # the printed table
