"""Every ``benchmarks/*.py --quick`` runs and writes valid JSON (no timing is asserted);
``benchmarks/gpu.sh --quick`` runs every stage of the GPU script with its options.

The scripts run as ``python benchmarks/SCRIPT.py --quick`` runs them (as ``__main__``,
the repository root as working directory and on ``PYTHONPATH``), all of them one after
the other in one fresh interpreter (``tests/_quick_benchmarks.py``, a module fixture, on
one worker): their run time is almost all imports and XLA compilation, which one process
pays once.  They also share a JAX persistent compilation cache (a temporary directory)
and the suite's cheaper XLA flags (the quick timings mean nothing anyway).
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


# One group: the quick runs (a module fixture) run once, on one worker.
pytestmark = pytest.mark.xdist_group("benchmarks")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    # XLA_FLAGS: the suite's own (tests/conftest.py), inherited with the rest.
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


# The scaling script's chains sweep, with each sampler the GPU script sweeps.
SCALING_CHAINS = {
    f"scaling-{sampler}": ["--sampler", sampler, "--sweeps", "chains", "--chains", "2"]
    for sampler in ("pcn", "nuts")
}


@pytest.fixture(scope="module")
def quick_runs(env, tmp_path_factory):
    """Every script's ``--quick`` run (and the chains sweeps), in one fresh interpreter:
    the folder of their JSON, standard output and tracebacks."""
    out = tmp_path_factory.mktemp("quick")
    jobs = [(s, f"{s}.py", ["--quick", "--out", str(out / f"{s}.json")]) for s in SCRIPTS]
    jobs += [
        (name, "scaling.py", ["--quick", *args, "--out", str(out / f"{name}.json")])
        for name, args in SCALING_CHAINS.items()
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_quick_benchmarks.py"), str(out), json.dumps(jobs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _finished(out: Path, name: str) -> dict:
    """The JSON a job wrote; its traceback if it failed."""
    error = out / f"{name}.error"
    assert not error.exists(), error.read_text()[-4000:]
    return json.loads((out / f"{name}.json").read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_writes_json(script, quick_runs):
    data = _finished(quick_runs, script)
    assert data["benchmark"] == script and data["quick"] is True
    assert data["machine"]["jax"] and data["machine"]["nproc"] >= 1
    assert data["rows"], "no measurements"
    assert "|" in (quick_runs / f"{script}.stdout").read_text()  # the printed table


def test_gpu_script_quick_runs_every_stage_with_its_options(env, tmp_path):
    """``gpu.sh --quick``'s plan, with ``PYTHON`` a stub that records each command: every
    stage runs, with the options above, in order (each script's own ``--quick`` run is
    checked above, the new scaling samplers below; a real ``--quick`` run of the whole
    script takes about 100 s here, all compilation)."""
    out, log = tmp_path / "gpu", tmp_path / "calls.jsonl"
    stub = tmp_path / "python"
    stub.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--quick"],
        cwd=ROOT,
        env={**env, "OUT": str(out), "PYTHON": str(stub)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0][0] == "-c"  # the device check
    scripts = [(Path(c[0]).name, c[c.index("--out") + 1]) for c in calls[1:]]
    assert scripts == [
        ("overhead.py", str(out / "overhead.json")),
        ("overhead.py", str(out / "overhead-batch256.json")),
        ("scaling.py", str(out / "scaling.json")),
        ("scaling.py", str(out / "scaling-pcn.json")),
        ("scaling.py", str(out / "scaling-nuts.json")),
        ("first_run.py", str(out / "first_run.json")),
    ]
    assert all("--quick" in c for c in calls[1:])
    assert "256" in calls[2][calls[2].index("--batch-size") + 1]
    for call, sampler in ((calls[4], "pcn"), (calls[5], "nuts")):
        assert call[call.index("--sampler") + 1] == sampler
        assert call[call.index("--chains") + 1 : call.index("--chains") + 3] == ["2", "8"]


@pytest.mark.parametrize("sampler", ["pcn", "nuts"])
def test_scaling_over_chains_runs_each_sampler(sampler, quick_runs):
    rows = _finished(quick_runs, f"scaling-{sampler}")["rows"]
    assert [(r["sampler"], r["sweep"], r["chains"]) for r in rows] == [(sampler, "chains", 2)]
    assert all(r["evals_per_step"] > 0 and r["evals_per_s"] > 0 for r in rows)
