"""The benchmark protocol (``vi-entropy benchmark``), its metrics and its results page.

One ``--quick`` run (digits, tiny sizes, the protocol's shape) on methods that cover every
kind of trainer (an Optax baseline, SWA, Entropy-SGD with its τ scoping and Nesterov
outer step, heat regularization) is shared by the module; the committed full benchmark is
checked against its own page.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_entropy.data import load_digits, load_fashion_mnist, validation_split
from vi_entropy.experiment.benchmark import METRICS, choose
from vi_entropy.experiment.methods import BENCHMARK, GRID_SIZE, resolve_point
from vi_entropy.experiment.metrics import (
    classification_metrics,
    expected_calibration_error,
    hessian_top_eigenvalue,
)
from vi_entropy.experiment.results import render_page
from vi_entropy.inner.svi import GAP_PARTICLES
from vi_entropy.models import forward, init_network

pytestmark = pytest.mark.xdist_group("benchmark")

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT.parent / "shared" / "tools" / "check_benchmark.py"
COMMITTED = ROOT / "docs" / "results" / "fashion-mnist"
CACHE_HOME = Path(tempfile.mkdtemp(prefix="vi-entropy-test-cache-"))
QUICK_METHODS = ("sgd", "swa", "entropy-sgd", "hr-svi")
FIELDS = (
    "method", "setting", "seed", "phase", "validation_accuracy", "test_accuracy", "test_nll",
    "test_ece", "hessian_top_eig", "f_tau", "grad_evals", "forward_evals", "wall_s",
)  # fmt: skip


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(CACHE_HOME))
    return subprocess.run(
        [sys.executable, "-m", "vi_entropy", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def read_runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")  # one run for the module, on whichever worker runs it
def quick(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = work / "quick"
    methods = ",".join(QUICK_METHODS)
    proc = cli("benchmark", "--quick", "--methods", methods, "--seeds", "3", "--out", str(out),
               "--no-progress", cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


# -- the protocol -----------------------------------------------------------------------


def test_quick_run_has_the_protocols_shape(quick):
    out, proc = quick
    runs = read_runs(out)
    for run in runs:
        assert all(field in run for field in FIELDS), sorted(set(FIELDS) - set(run))
        assert all(np.isfinite(run[f]) for f in FIELDS[4:]), run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == {"name": "digits", "train": 1138, "validation": 300, "test": 359}
    for method in QUICK_METHODS:
        search = [r for r in runs if r["method"] == method and r["phase"] == "search"]
        final = [r for r in runs if r["method"] == method and r["phase"] == "final"]
        # Two settings of the method's grid, then three fresh seeds at the validation argmax.
        assert len({json.dumps(r["setting"], sort_keys=True) for r in search}) == 2
        best = max(search, key=lambda r: r["validation_accuracy"])["validation_accuracy"]
        chosen = summary["methods"][method]["chosen"]
        assert all(r["setting"] == chosen for r in final)
        assert [r for r in search if r["setting"] == chosen][0]["validation_accuracy"] == best
        assert sorted(r["seed"] for r in final) == [1, 2, 3]
        for metric in METRICS:
            values = [r[metric] for r in final]
            entry = summary["methods"][method][metric]
            assert entry["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert entry["sd"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-12)
    # The cost counts: SGD one gradient an update, the LE/HR methods their inner steps.
    final = {r["method"]: r for r in runs if r["phase"] == "final"}
    assert final["sgd"]["grad_evals"] == 20
    # --quick: 5 SGLD steps an update, and the gradient at the chain's point for the new
    # centre (from which its first proposal is made).
    assert final["entropy-sgd"]["grad_evals"] == 20 * (5 + 1)
    # 3 SVI steps × 2 particles, and the fit's inner_gap diagnostic (GAP_PARTICLES each).
    assert final["hr-svi"]["grad_evals"] == 20 * (3 + GAP_PARTICLES) * 2
    assert "sgd" in proc.stdout and "summary.json" in proc.stdout


@pytest.mark.skipif(not CHECKER.is_file(), reason="the shared benchmark checker is not here")
def test_quick_run_passes_the_protocol_checker(quick):
    out, _ = quick
    proc = subprocess.run([sys.executable, str(CHECKER), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_a_rerun_resumes_and_reproduces_a_lost_run(quick, tmp_path):
    out, _ = quick
    copy = tmp_path / "quick"
    copy.mkdir()
    lines = (out / "runs.jsonl").read_text().splitlines()
    for name in ("config.json",):
        (copy / name).write_text((out / name).read_text())
    # An interrupted benchmark: the last run never finished, one line is cut short.
    (copy / "runs.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    methods = ",".join(QUICK_METHODS)
    proc = cli("benchmark", "--quick", "--methods", methods, "--seeds", "3", "--out", str(copy),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Not a terminal: no bar redraws, one line per run that ran (one, not the whole grid).
    assert "\r" not in proc.stdout + proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].startswith(f"[{len(lines)}/{len(lines)}]"), (
        proc.stdout
    )
    redone = [json.loads(x) for x in (copy / "runs.jsonl").read_text().splitlines()[-1:]][0]
    lost = json.loads(lines[-1])
    # Same key, same result (timings aside); the cut line is gone, every line is a run.
    for field in ("method", "setting", "seed", "phase", *FIELDS[4:10]):
        assert redone[field] == lost[field], field
    assert len(read_runs(copy)) == len(lines)


def test_a_mismatched_directory_is_refused(quick, tmp_path):
    out, _ = quick
    proc = cli("benchmark", "--quick", "--hidden", "8", "--methods", "sgd", "--out", str(out),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "--hidden" in proc.stderr and "hidden = [16]" in proc.stderr


@pytest.mark.parametrize(
    "args, option",
    [
        (["--methods", "sgd,le-bogus"], "--methods"),
        (["--seeds", "0"], "--seeds"),
        (["--dataset", "digits", "--path", "x"], "--path"),
        (["--dataset", "fashion-mnist", "--path", "/nonexistent"], "apt-get install"),
        (["--validation", "5000", "--dataset", "digits"], "--validation"),
    ],
)
def test_bad_benchmark_options_name_the_option(tmp_path, args, option):
    proc = cli("benchmark", *args, "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], proc.stderr


def test_validation_defaults_to_a_fifth_of_the_training_images(tmp_path):
    """Without ``--validation``, digits holds out 287 of its 1,437 training images (the
    5,000 of Fashion-MNIST would be refused): what the run would use is what a directory
    of other runs is checked against, before any training."""
    out = tmp_path / "b"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"num_validation": 1}))
    proc = cli("benchmark", "--dataset", "digits", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "num_validation = 1, not 287" in proc.stderr, proc.stderr


def test_fashion_mnist_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "none")


def test_validation_split_holds_out_training_images_only():
    data = load_digits()
    train, val = validation_split(data, 300, seed=0)
    assert len(train.y_train) + len(val.y_test) == len(data.y_train)
    np.testing.assert_array_equal(train.X_test, data.X_test)  # the test set untouched
    rows = {r.tobytes() for r in np.asarray(train.X_train)}
    assert sum(r.tobytes() in rows for r in np.asarray(val.X_test)) <= 5  # (duplicate digits)
    with pytest.raises(ValueError, match="num_validation"):
        validation_split(data, len(data.y_train))


def test_every_method_searches_the_same_number_of_settings():
    assert {len(m.grid) for m in BENCHMARK} == {GRID_SIZE} and GRID_SIZE >= 6
    for m in BENCHMARK:
        settings = [resolve_point(m.name, p, 500, False) for p in m.grid]
        assert len({json.dumps(s, sort_keys=True) for s in settings}) == GRID_SIZE, m.name


def test_choose_takes_the_validation_argmax_not_the_test():
    runs = [
        {"setting": {"a": 1}, "validation_accuracy": 0.80, "test_accuracy": 0.95},
        {"setting": {"a": 2}, "validation_accuracy": 0.85, "test_accuracy": 0.70},
    ]
    assert choose(runs) == {"a": 2}


# -- the metrics ------------------------------------------------------------------------


def test_hessian_top_eigenvalue_matches_the_dense_hessian_of_a_network():
    X = jax.random.normal(jax.random.PRNGKey(1), (30, 4))
    y = jnp.arange(30) % 3
    params = init_network(jax.random.PRNGKey(0), [4, 3, 3])

    def loss(p):
        logits = forward(p, X)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = jax.hessian(lambda v: loss(unravel(v)))(flat)
    eigs = np.linalg.eigvalsh(np.asarray(dense, dtype=np.float64))
    top = eigs[np.argmax(np.abs(eigs))]
    estimate = float(hessian_top_eigenvalue(loss, params, jax.random.PRNGKey(2), 200))
    assert estimate == pytest.approx(top, rel=1e-3)


def test_ece_and_nll_of_a_known_classifier():
    # Two confidence levels: 0.9 right 9 times in 10 (calibrated), 0.6 always wrong.
    logits = np.log(np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10))
    y = np.array([0] * 9 + [1] + [1] * 10)
    assert expected_calibration_error(logits, y) == pytest.approx(0.5 * 0.0 + 0.5 * 0.6, abs=1e-6)
    m = classification_metrics(logits, y)
    nll = -(9 * np.log(0.9) + np.log(0.1) + 10 * np.log(0.4)) / 20
    assert m["accuracy"] == pytest.approx(0.45) and m["nll"] == pytest.approx(nll, rel=1e-5)


# -- the results page -----------------------------------------------------------------------


def test_results_page_is_written_from_the_quick_run(quick, tmp_path):
    out, _ = quick
    page = tmp_path / "docs" / "results.md"
    proc = cli("results", str(out), "--page", str(page), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    for method in QUICK_METHODS:
        assert f"| `{method}`" in text
    assert "### Plain reading" in text and "Best mean test accuracy" in text
    assert (page.parent / "_static" / "generated" / "quick_accuracy.png").stat().st_size > 10_000


@pytest.mark.skipif(not (COMMITTED / "summary.json").is_file(), reason="no committed benchmark")
def test_the_committed_results_page_is_the_generated_one(tmp_path):
    directories = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/summary.json"))
    generated = render_page(directories, tmp_path, root=ROOT / "docs")
    assert (ROOT / "docs" / "results.md").read_text() == generated, (
        "docs/results.md differs from what `vi-entropy results docs/results/* "
        "--page docs/results.md` writes: rerun it"
    )


def test_entropy_sgd_recipe_is_the_composition_of_the_packages_parts():
    """``LocalEntropy.entropy_sgd`` (the benchmark's ``entropy-sgd``) is bitwise the scheme
    composed by hand: SGLD, exponential average, τ scoping, outer Nesterov SGD."""
    import optax

    from vi_entropy import LocalEntropy
    from vi_entropy.experiment.trainers import SchemeTrainer, build_entropy_sgd
    from vi_entropy.models import dense_network, model_sizes

    data = load_digits()
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    model = dense_network(64, (8,), 10)
    init = init_network(jax.random.PRNGKey(0), model_sizes(model))
    point = {"tau": 1e-3, "outer_learning_rate_per_tau": 0.1}
    tau, s = resolve_point("entropy-sgd", point, 20, True)
    by_hand = LocalEntropy(
        model,
        optax.exponential_decay(tau, transition_steps=1, decay_rate=1 / (1 + s["tau_scoping"])),
        sampler="sgld",
        num_chains=1,
        num_samples=s["num_samples"],
        num_warmup=0,
        sampler_kwargs={"step_size": s["step_size"], "noise_scale": s["noise_scale"]},
        averaging="exponential",
        ema_decay=s["ema_decay"],
        outer_optim=optax.sgd(s["outer_learning_rate"], momentum=0.9, nesterov=True),
        progress_bar=False,
    )
    flat = []
    for trainer in (SchemeTrainer(by_hand, 32), build_entropy_sgd(model, tau, dict(s), 32)):
        state = trainer.init(jax.random.PRNGKey(3), init, X, y)
        for _ in range(3):
            state, _ = trainer.step(state, X, y)
        flat.append(np.asarray(jax.flatten_util.ravel_pytree(trainer.params(state))[0]))
    np.testing.assert_array_equal(flat[0], flat[1])
    assert not np.array_equal(flat[0], jax.flatten_util.ravel_pytree(init)[0])  # it moved
    scheme = build_entropy_sgd(model, tau, dict(s), 32).scheme
    assert float(scheme.tau(jnp.asarray(1000))) == pytest.approx(
        tau / 1.001**1000, rel=1e-4
    )  # float32


def test_every_method_has_its_own_colour_in_every_figure():
    from vi_entropy.experiment.figures import COLOURS, colour
    from vi_entropy.experiment.methods import METHODS

    names = set(METHODS) | {m.name for m in BENCHMARK} | {"es-pgpe", "es-sep-cma"}
    assert {n.removesuffix("-20x") for n in names} <= set(COLOURS)
    # Two names share a colour only where one is the other's alias (SAM over SGD) or the
    # same method run to 20× the gradients (drawn in a panel of its own).
    base = {n: n.removesuffix("-20x").replace("sam-sgdm", "sam") for n in names}
    for n in names:
        for m in names:
            assert (colour(n) == colour(m)) == (base[n] == base[m]), (n, m)
