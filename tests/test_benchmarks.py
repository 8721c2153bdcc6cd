"""Every ``benchmarks/*.py --quick`` runs and writes valid JSON (no timing is asserted);
so does ``benchmarks/gpu.sh --quick``, every stage of the GPU script on the CPU.

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


#: What each stage of ``benchmarks/gpu.sh`` writes: file -> (benchmark, keys of every row).
GPU_STAGES = {
    "overhead": ("overhead", {"scheme", "params", "step_s", "overhead", "overhead_cpu"}),
    "overhead-batch256": ("overhead", {"scheme", "params", "step_s", "overhead", "overhead_cpu"}),
    "scaling": ("scaling", {"sampler", "sweep", "params", "chains", "step_s", "evals_per_s"}),
    "scaling-pcn": ("scaling", {"sampler", "sweep", "params", "chains", "step_s", "evals_per_s"}),
    "scaling-nuts": ("scaling", {"sampler", "sweep", "params", "chains", "step_s", "evals_per_s"}),
    "first_run": ("first_run", {"case", "code", "wall_s", "compilations"}),
}


def test_gpu_script_quick_writes_every_stage(env, tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--quick"],
        cwd=ROOT,
        env={**env, "OUT": str(out), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = {}
    for name, (benchmark, keys) in GPU_STAGES.items():
        data[name] = json.loads((out / f"{name}.json").read_text())
        assert data[name]["benchmark"] == benchmark, name
        assert data[name]["quick"] is True and data[name]["complete"] is True, name
        assert data[name]["rows"] and all(keys <= row.keys() for row in data[name]["rows"]), name
    assert data["overhead-batch256"]["settings"]["batch_size"] == 256
    assert {(r["sampler"], r["sweep"]) for r in data["scaling"]["rows"]} == {("sgld", "params")}
    for sampler in ("pcn", "nuts"):
        rows = data[f"scaling-{sampler}"]["rows"]
        assert [(r["sampler"], r["sweep"], r["chains"]) for r in rows] == [
            (sampler, "chains", 2),
            (sampler, "chains", 8),
        ]
    assert {"first_run_ours_over_numpyro", "naive_over_ours"} <= data["first_run"]["summary"].keys()
