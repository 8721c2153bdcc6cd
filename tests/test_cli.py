"""The ``vi-entropy reproduce`` command, end to end (smoke sizes) and on bad options."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from vi_entropy.cli import METHODS
from vi_entropy.experiment import GRADIENT_FREE, method_settings
from vi_entropy.local_entropy import SAMPLERS

# Methods whose sampler this build may not have yet: the smoke run leaves them out then.
NEEDS_SAMPLER = {"le-pcn": "pcn", "le-slice": "elliptical_slice", "le-pcn-adam": "pcn"}
MISSING = [m for m, sampler in NEEDS_SAMPLER.items() if sampler not in SAMPLERS]
RUN = [m for m in METHODS if m not in MISSING]

# One group: the smoke run (a module fixture) runs once, on one worker.
pytestmark = pytest.mark.xdist_group("cli")

ROOT = Path(__file__).resolve().parents[1]
# Chance level and a margin of 5 binomial standard errors on the 359 test digits.
CHANCE, N_TEST = 0.1, 359
BETTER_THAN_CHANCE = CHANCE + 5 * np.sqrt(CHANCE * (1 - CHANCE) / N_TEST)


# The runs' persistent compilation cache: this session's own, not the user's ~/.cache.
CACHE_HOME = Path(tempfile.mkdtemp(prefix="vi-entropy-test-cache-"))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(CACHE_HOME))
    return subprocess.run(
        [sys.executable, "-m", "vi_entropy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    out = work / "results"
    # Every method, those outside the default set too.
    methods = ["--methods", ",".join(RUN)]
    proc = cli("reproduce", "--smoke", "--out", str(out), "--no-progress", *methods, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_smoke_run_writes_every_output(smoke):
    out, proc = smoke
    expected = {
        "metrics.csv",
        "metrics.json",
        "table.md",
        "config.json",
        "accuracy_vs_updates.png",
        "accuracy_vs_evaluations.png",
    } | {f"draws_{m}_tau0.0005.nc" for m in RUN if m.startswith("le-")}
    assert expected <= {p.name for p in out.iterdir()}
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    assert f"Results in {out}" in proc.stdout


def test_metrics_parse_and_are_sane(smoke):
    out, _ = smoke
    records = json.loads((out / "metrics.json").read_text())
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(records) == len(RUN) * 21  # updates 0..20
    for r in records:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert np.isfinite(r["train_loss"])
        assert r["grad_evals"] >= 0 and r["forward_evals"] >= 0 and r["wall_time"] >= 0
    by_method = {m: [r for r in records if r["method"] == m] for m in RUN}
    for m, recs in by_method.items():
        evals = [r["grad_evals"] + r["forward_evals"] for r in recs]
        assert evals == sorted(evals), m  # cumulative counts never decrease
        if m in GRADIENT_FREE:
            assert recs[-1]["grad_evals"] == 0, m
    config = json.loads((out / "config.json").read_text())
    assert config["methods"] == RUN and config["smoke"] is True
    assert set(config["method_settings"]) == set(RUN)
    # An evolution strategy's cost is its population, once per update.
    for m in ("es-openes", "es-snes"):
        population = config["method_settings"][m]["0.0005"]["population_size"]
        assert [r["forward_evals"] for r in by_method[m]] == [population * u for u in range(21)]


def test_methods_that_train_beat_chance(smoke):
    out, _ = smoke
    records = json.loads((out / "metrics.json").read_text())
    trained = 0
    for m in RUN:
        recs = [r for r in records if r["method"] == m]
        # "Trains at all": the train loss fell by more than 5%. A method that does not
        # train (LE-SA on a network) moves its loss by noise of well under 1%.
        if recs[-1]["train_loss"] < 0.95 * recs[0]["train_loss"]:
            trained += 1
            assert recs[-1]["test_accuracy"] > BETTER_THAN_CHANCE, m
    assert trained >= 6  # the gradient-based methods at least


def test_table_has_a_row_per_method(smoke):
    out, _ = smoke
    lines = [ln for ln in (out / "table.md").read_text().splitlines() if ln.startswith("| ")]
    methods = [ln.split("|")[1].strip() for ln in lines[1:]]
    assert methods == RUN


def test_table_and_output_open_with_a_plain_reading(smoke):
    out, proc = smoke
    text = (out / "table.md").read_text()
    reading = text[text.index("What this run shows:") : text.index("| method")]
    rows = {ln.split("|")[1].strip(): float(ln.split("|")[3]) for ln in text.splitlines()
            if ln.startswith("| ") and not ln.startswith("| method")}  # fmt: skip
    best = max(rows, key=rows.get)
    # Generated from the rows: the best method is named with its accuracy, every method
    # at chance is named as not trained, and the same reading ends the printed output.
    assert f"- Best: {best} " in reading and f"{rows[best]:.3f}" in reading
    for method, accuracy in rows.items():
        if accuracy <= BETTER_THAN_CHANCE - 1e-9:
            assert f"{method} (τ = 0.0005) {accuracy:.3f}" in reading.split("Did not train")[1]
    assert reading.strip().splitlines()[-1] in proc.stdout


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(
            m,
            marks=pytest.mark.skipif(
                m in MISSING,
                reason=f"LocalEntropy has no sampler {NEEDS_SAMPLER[m]!r} yet "
                f"(vi_entropy.local_entropy.SAMPLERS = {SAMPLERS})",
            ),
        )
        for m in NEEDS_SAMPLER
    ],
)
def test_gradient_free_samplers_train_at_the_evolution_strategies_budget(smoke, method):
    out, _ = smoke
    records = [r for r in json.loads((out / "metrics.json").read_text()) if r["method"] == method]
    assert len(records) == 21 and records[-1]["grad_evals"] == 0
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    if method != "le-slice":  # pCN: chains × (transitions + 1) evaluations per update
        config = json.loads((out / "config.json").read_text())
        population = config["method_settings"]["es-openes"]["0.0005"]["population_size"]
        per_update = records[-1]["forward_evals"] / 20
        assert abs(per_update - population) <= 0.1 * population


def test_gradient_free_methods_share_one_budget():
    # At full size: the evolution strategies' population is le-pcn's evaluations per
    # update, and le-slice is set to about as many (4 evaluations per transition).
    pcn = method_settings("le-pcn", 5e-4, smoke=False)
    per_update = pcn["num_chains"] * (pcn["num_samples"] + 1)
    for m in ("es-openes", "es-snes"):
        assert method_settings(m, 5e-4, smoke=False)["population_size"] == per_update
    sl = method_settings("le-slice", 5e-4, smoke=False)
    assert abs(sl["num_chains"] * (4 * sl["num_samples"] + 1) - per_update) <= 0.1 * per_update
    assert set(GRADIENT_FREE) == {
        "le-is", "le-sa", "le-pcn", "le-slice", "le-pcn-adam", "es-openes", "es-snes"
    }  # fmt: skip
    for m in METHODS:  # every method has settings
        assert method_settings(m, 5e-4, smoke=True)


def test_draws_are_arviz_netcdf(smoke):
    out, _ = smoke
    tree = xr.open_dataset(out / "draws_le-nuts_tau0.0005.nc", group="posterior")
    assert {"chain", "draw"} <= set(tree.dims)
    assert {"W0", "b0", "W1", "b1"} <= set(tree.data_vars)


def test_methods_outside_the_default_set_say_why_in_the_help():
    from vi_entropy.experiment.methods import DEFAULT_METHODS, REGISTRY

    left_out = {m.name: m.not_default for m in REGISTRY if m.not_default}
    assert set(left_out) == {"le-sa", "le-pcn-adam"}
    assert set(DEFAULT_METHODS) == set(METHODS) - set(left_out)
    proc = cli("reproduce", "--help", cwd=ROOT)
    flat = " ".join(proc.stdout.split())
    for name, reason in left_out.items():
        assert f"{name} ({' '.join(reason.split())})" in flat


def test_help_explains_every_option():
    proc = cli("reproduce", "--help", cwd=ROOT)
    assert proc.returncode == 0
    for option in (
        "--dataset",
        "--path",
        "--hidden",
        "--methods",
        "--tau",
        "--updates",
        "--seed",
        "--out",
        "--smoke",
        "--batch-size",
    ):
        assert option in proc.stdout


@pytest.mark.parametrize(
    "args, option",
    [
        (["--methods", "sgd,bogus"], "--methods"),
        (["--tau", "0"], "--tau"),
        (["--tau", "-1e-3"], "--tau"),
        (["--dataset", "mnist"], "--path"),
        (["--updates", "0"], "--updates"),
        (["--dataset", "cifar"], "--dataset"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_fail_with_one_line(tmp_path, args, option):
    out = tmp_path / "res"
    proc = cli("reproduce", *args, "--out", str(out), cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unreadable_data_fails_cleanly(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"not a zip file")
    out = tmp_path / "res"
    proc = cli(
        "reproduce", "--dataset", "mnist", "--path", str(bad), "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--path" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]


def test_user_mnist_files_are_read(tmp_path):
    """A user's MNIST as IDX files (gzipped) and as .npz load to the same arrays."""
    import gzip

    from vi_entropy.data import load_mnist

    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    for name, a in arrays.items():
        header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, ">i4").tobytes()
        with gzip.open(tmp_path / f"{name}.gz", "wb") as fh:
            fh.write(header + a.tobytes())
    from_idx = load_mnist(tmp_path)
    np.savez(
        tmp_path / "m.npz",
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
    )
    from_npz = load_mnist(tmp_path / "m.npz")
    for a, b in zip(from_idx[:4], from_npz[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert from_idx.X_train.shape == (6, 784) and from_idx.X_train.max() <= 1.0


def test_experiment_passes_each_scheme_warning_on_once():
    # Every update of the experiment is a one-step run; a degenerate importance-sampling
    # run must warn once, not once per update. tau = 0.1 on a fresh network makes the
    # weights degenerate at every step.
    import warnings

    from vi_entropy import VIEntropyWarning
    from vi_entropy.data import load_digits
    from vi_entropy.experiment import Config, complete_settings, run_experiment

    config = complete_settings(
        Config(methods=("le-is",), taus=(0.1,), hidden=(4,), updates=3, smoke=True)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VIEntropyWarning)
        runs = run_experiment(config, load_digits(), progress=False, log=lambda line: None)
    ess = np.asarray(runs[0].last_result.info["importance_ess"])
    assert np.all(ess < 0.01 * config.method_settings["le-is"]["0.1"]["num_samples"])
    degenerate = [w for w in caught if "degenerated" in str(w.message)]
    assert len(degenerate) == 1


@pytest.mark.parametrize("method", ["es-openes", "es-snes"])
def test_evolution_strategy_update_compiles_once_and_costs_its_population(method):
    import jax

    from tests.test_compile import count_compilations
    from vi_entropy.data import load_digits
    from vi_entropy.experiment import make_trainer
    from vi_entropy.models import dense_network, init_network, model_sizes

    data = load_digits()
    model = dense_network(data.num_features, (4,), data.num_classes)
    init = init_network(jax.random.PRNGKey(0), model_sizes(model))
    settings = method_settings(method, 5e-4, smoke=True)
    trainer = make_trainer(method, model, 5e-4, settings, batch=128)
    state = trainer.init(jax.random.PRNGKey(1), init)
    state, counts = trainer.step(state, data.X_train, data.y_train)
    assert counts == {"grad_evals": 0, "forward_evals": settings["population_size"]}
    with count_compilations() as later:
        for _ in range(3):
            state, _ = trainer.step(state, data.X_train, data.y_train)
    assert later["n"] == 0
    moved = jax.tree.map(lambda a, b: bool((a != b).any()), trainer.params(state), init)
    assert all(moved.values())


def test_compilation_cache_directory_and_switches(tmp_path):
    from vi_entropy.cli import compilation_cache_dir

    assert compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "vi_entropy/jax"
    home = compilation_cache_dir({})
    assert home is not None and home.parts[-3:] == (".cache", "vi_entropy", "jax")
    assert compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": str(tmp_path)}) == tmp_path
    for off in ("off", "OFF", "0", "false"):
        assert compilation_cache_dir({"VI_ENTROPY_COMPILATION_CACHE": off}) is None
    proc = cli("reproduce", "--help", cwd=ROOT)
    assert "--no-compilation-cache" in proc.stdout


def test_compilation_cache_is_written(tmp_path):
    # In a fresh interpreter: JAX settles on a cache at its first compilation.
    code = (
        "import jax\n"
        "from vi_entropy.cli import enable_compilation_cache\n"
        "print(enable_compilation_cache())\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.block_until_ready(jax.jit(lambda x: x * 2 + 1)(1.0))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cache = tmp_path / "vi_entropy" / "jax"
    assert proc.stdout.strip() == str(cache) and any(cache.iterdir())
    env["VI_ENTROPY_COMPILATION_CACHE"] = "off"
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "None"
