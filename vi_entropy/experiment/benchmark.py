"""The benchmark: every method tuned on a validation split, then rerun with fresh seeds.

The protocol (``vi-entropy benchmark``):

1. Hold out ``num_validation`` training images (:func:`~vi_entropy.data.validation_split`,
   seed 0).  Every choice is made on them; the test set only gives the reported figures.
2. For each method of :data:`~vi_entropy.experiment.methods.BENCHMARK`, train once per
   setting of its search grid (the same number of settings for every method), from
   initialization seed ``search_seed``, for a fixed budget of updates, and pick the
   setting with the best validation accuracy.
3. Train the chosen setting with ``num_seeds`` fresh seeds (initialization, mini-batches
   and sampler randomness all follow the seed).
4. At every trained point measure validation and test accuracy, test negative
   log-likelihood, expected calibration error (15 bins), the top eigenvalue of the
   training loss's Hessian and the smoothed training loss ``f_τ`` at one common ``τ``
   (:mod:`vi_entropy.experiment.metrics`), and the cost: gradient and forward
   evaluations and wall time.

Each run is appended to ``<out>/runs.jsonl`` as soon as it ends, and a run already there
is not run again, so an interrupted benchmark resumes where it stopped.  At the end
``<out>/summary.json`` holds the data set's sizes and, per method, the chosen setting
and the mean and standard deviation of every metric over the final seeds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from vi_entropy.data import Dataset, load_dataset, validation_split
from vi_entropy.diagnostics import heat_loss
from vi_entropy.experiment.methods import (
    BENCHMARK_METHODS,
    get_benchmark_method,
    resolve_point,
)
from vi_entropy.experiment.metrics import (
    classification_metrics,
    cross_entropy_model,
    hessian_top_eigenvalue,
)
from vi_entropy.models import conv_network, dense_network, forward
from vi_entropy.types import RejectedStepsError

__all__ = [
    "METRICS",
    "BenchmarkConfig",
    "ConfigMismatch",
    "quick_config",
    "run_benchmark",
    "summarize",
]

#: The metrics of a run that the summary averages over seeds.
METRICS = (
    "validation_accuracy",
    "test_accuracy",
    "test_nll",
    "test_ece",
    "train_loss",
    "hessian_top_eig",
    "f_tau",
    "f_tau_gap",
    "grad_evals",
    "forward_evals",
    "wall_s",
)


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark (saved in ``summary.json``).

    Parameters
    ----------
    dataset : str, default "fashion-mnist"
        A name of :func:`~vi_entropy.data.load_dataset`.
    path : str, optional
        The data's files (``mnist``; ``fashion-mnist`` outside the Debian package's place).
    hidden : tuple of int, default (64,)
        Hidden widths of the dense network.
    network : str, default "dense"
        ``"dense"`` (:func:`~vi_entropy.models.dense_network` with ``hidden``) or ``"cnn"``
        (:func:`~vi_entropy.models.conv_network`: two 5 × 5 convolutions of 8 and 16
        channels and a dense head, 11,274 parameters on 28 × 28 images).
    methods : tuple of str, default every benchmark method
    updates : int, default 500
        Updates per run (the paper's budget); ``update_factor`` times this for the methods
        that have one.
    batch_size : int, default 128
    num_validation : int, default 5000
        Training images held out for the choice of settings (``vi-entropy benchmark``
        without ``--validation``: :func:`default_validation` of the dataset).
    num_seeds : int, default 3
        Final seeds at the chosen setting (seeds ``1 .. num_seeds``).
    search_seed : int, default 0
        The seed of every search run.
    grid : tuple of int, optional
        Which points of each method's grid to search (default all); ``--quick`` takes two.
    eval_every : int, default 25
        Test accuracy is recorded every this many updates (the curves of the figures).
    flatness_tau : float, default 1e-3
        The common ``τ`` of ``f_τ``: every weight perturbed with standard deviation 0.03.
    flatness_samples : int, default 64
        Draws of the ``f_τ`` estimate.
    hessian_iters : int, default 20
        Power iterations of the Hessian's top eigenvalue.
    metric_train_size : int, default 5000
        Training images (a fixed random subset) on which the training loss, its Hessian
        and ``f_τ`` are measured.
    smoke : bool, default False
        The methods' small sample counts (``--quick``).
    """

    dataset: str = "fashion-mnist"
    path: str | None = None
    hidden: tuple[int, ...] = (64,)
    network: str = "dense"
    methods: tuple[str, ...] = BENCHMARK_METHODS
    updates: int = 500
    batch_size: int = 128
    num_validation: int = 5000
    num_seeds: int = 3
    search_seed: int = 0
    grid: tuple[int, ...] | None = None
    eval_every: int = 25
    flatness_tau: float = 1e-3
    flatness_samples: int = 64
    hessian_iters: int = 20
    metric_train_size: int = 5000
    smoke: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def quick_config(**overrides: Any) -> BenchmarkConfig:
    """The protocol's shape at tiny sizes (``--quick``, tests): digits, 2 settings, 3 seeds.

    Example
    -------
    >>> c = quick_config(methods=("sgd",))
    >>> c.dataset, c.updates, c.grid, c.num_seeds
    ('digits', 20, (1, 4), 3)
    """
    values = dict(
        dataset="digits",
        hidden=(16,),
        updates=20,
        batch_size=32,
        num_validation=300,
        grid=(1, 4),
        eval_every=5,
        flatness_samples=8,
        hessian_iters=5,
        metric_train_size=300,
        smoke=True,
    )
    values.update(overrides)
    return BenchmarkConfig(**values)


def default_validation(num_train: int) -> int:
    """``vi-entropy benchmark``'s held-out images when ``--validation`` is not given: a
    fifth of the training images, at most 5,000 (digits: 287 of 1,437; Fashion-MNIST:
    5,000 of 60,000).

    Example
    -------
    >>> default_validation(1437), default_validation(60_000)
    (287, 5000)
    """
    return min(5000, num_train // 5)


class ConfigMismatch(ValueError):
    """The output directory holds runs of another configuration (not resumable)."""


# What a resumed benchmark must share with the runs already written (more methods and more
# seeds may be added), and the command-line option of each.
_RUN_DEFINING = {
    "dataset": "--dataset",
    "hidden": "--hidden",
    "network": "--network",
    "updates": "--updates",
    "batch_size": "--batch-size",
    "num_validation": "--validation",
    "search_seed": "search_seed",
    "grid": "--quick",
    "eval_every": "eval_every",
    "flatness_tau": "flatness_tau",
    "flatness_samples": "flatness_samples",
    "hessian_iters": "hessian_iters",
    "metric_train_size": "metric_train_size",
    "smoke": "--quick",
}


def _jsonable_config(config: BenchmarkConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _check_resumable(out: Path, config: BenchmarkConfig) -> None:
    """Write ``out/config.json``, or check that it matches ``config`` where runs depend on it."""
    path = out / "config.json"
    mine = _jsonable_config(config)
    if path.exists():
        theirs = json.loads(path.read_text())
        for key, option in _RUN_DEFINING.items():
            if key in theirs and theirs[key] != mine[key]:
                raise ConfigMismatch(
                    f"{option}: {out} holds runs with {key} = {theirs[key]!r}, not "
                    f"{mine[key]!r}; use another --out or the same settings to resume."
                )
    path.write_text(json.dumps(mine, indent=1) + "\n")


def setting_key(setting: Mapping[str, Any]) -> str:
    """A setting as a canonical string (how runs are matched when resuming)."""
    return json.dumps(setting, sort_keys=True)


class _Evaluator:
    """The metrics of a trained point, each compiled once for the whole benchmark."""

    def __init__(
        self,
        config: BenchmarkConfig,
        train: Dataset,
        validation: Dataset,
        forward: Callable = forward,
    ) -> None:
        self.config = config
        self.X_val, self.y_val = jnp.asarray(validation.X_test), jnp.asarray(validation.y_test)
        self.X_test, self.y_test = jnp.asarray(train.X_test), jnp.asarray(train.y_test)
        n = len(train.y_train)
        subset = np.random.default_rng(1).permutation(n)[: min(config.metric_train_size, n)]
        X_sub, y_sub = jnp.asarray(train.X_train[subset]), jnp.asarray(train.y_train[subset])
        self.logits = jax.jit(forward)

        def train_loss(params: Mapping[str, Any]) -> jax.Array:
            logits = forward(params, X_sub)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y_sub[:, None], 1))

        self.train_loss = jax.jit(train_loss)
        self.hessian = jax.jit(
            lambda params, key: hessian_top_eigenvalue(
                train_loss, params, key, config.hessian_iters
            )
        )
        self._X_sub, self._y_sub = X_sub, y_sub
        self._forward = forward
        self._f_tau: Callable | None = None

    def f_tau(self, params: Mapping[str, Any], key: Any) -> float:
        if self._f_tau is None:  # the model needs the parameters' shapes
            shapes = {k: v.shape for k, v in params.items()}
            model = cross_entropy_model(self._forward, shapes)
            cfg = self.config

            def estimate(params: Mapping[str, Any], key: Any) -> jax.Array:
                return heat_loss(
                    model,
                    params,
                    cfg.flatness_tau,
                    self._X_sub,
                    self._y_sub,
                    rng_key=key,
                    num_samples=cfg.flatness_samples,
                    batch_size=8,
                ).value

            self._f_tau = jax.jit(estimate)
        return float(self._f_tau(params, key))

    def __call__(self, params: Mapping[str, Any], key: Any) -> dict[str, float]:
        val = classification_metrics(self.logits(params, self.X_val), self.y_val)
        test = classification_metrics(self.logits(params, self.X_test), self.y_test)
        key_h, key_f = random.split(key)
        train_loss = float(self.train_loss(params))
        f_tau = self.f_tau(params, key_f)
        return {
            "validation_accuracy": val["accuracy"],
            "test_accuracy": test["accuracy"],
            "test_nll": test["nll"],
            "test_ece": test["ece"],
            "train_loss": train_loss,
            "hessian_top_eig": float(self.hessian(params, key_h)),
            "f_tau": f_tau,
            "f_tau_gap": f_tau - train_loss,
        }

    def accuracy(self, params: Mapping[str, Any]) -> float:
        return float(jnp.mean(jnp.argmax(self.logits(params, self.X_test), -1) == self.y_test))


def _finite(params: Mapping[str, Any]) -> bool:
    return bool(jnp.all(jnp.isfinite(ravel_pytree(dict(params))[0])))


def _train(
    method: str,
    setting: Mapping[str, Any],
    seed: int,
    config: BenchmarkConfig,
    data: tuple[Any, Any],
    model: Callable,
    evaluator: _Evaluator,
) -> dict[str, Any]:
    """One run: train ``method`` at ``setting`` from seed ``seed``; its record."""
    record = get_benchmark_method(method)
    updates = config.updates * record.update_factor
    tau, settings = resolve_point(method, setting, updates, config.smoke)
    X, y = data
    batch = min(config.batch_size, len(y))
    trainer = record.build(model, tau, dict(settings), batch)
    init = model.init(random.PRNGKey(seed))
    key = random.fold_in(random.PRNGKey(seed), BENCHMARK_METHODS.index(method) + 1000)
    every = config.eval_every * record.update_factor
    cost = {"grad_evals": 0, "forward_evals": 0}
    curve = [[0, 0, 0, evaluator.accuracy(init)]]
    wall = 0.0
    stop = None
    good = dict(init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        state = trainer.init(key, init, X, y)
        jax.block_until_ready(state)
        wall += time.perf_counter() - start
        for update in range(1, updates + 1):
            start = time.perf_counter()
            try:
                new_state, counts = trainer.step(state, X, y)
                jax.block_until_ready(new_state)
            except RejectedStepsError as err:  # the centre stayed at the last good step
                stop = f"update {update}: {str(err).splitlines()[0]}"
                break
            finally:
                wall += time.perf_counter() - start
            state = new_state
            cost["grad_evals"] += counts["grad_evals"]
            cost["forward_evals"] += counts["forward_evals"]
            if update % every == 0 or update == updates:
                params = trainer.params(state)
                if not _finite(params):  # keep the last finite point, and say so
                    stop = f"update {update}: non-finite parameters; kept update {curve[-1][0]}"
                    break
                good = dict(params)
                curve.append([update, *cost.values(), evaluator.accuracy(good)])
        if stop is not None and stop.startswith("update") and "non-finite" not in stop:
            good = dict(trainer.params(state))
    metrics = evaluator(good, random.fold_in(random.PRNGKey(seed), 7))
    messages = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    return {
        "method": method,
        "setting": dict(setting),
        "seed": seed,
        "tau": tau,
        "settings": settings,
        "updates": updates,
        **metrics,
        **cost,
        "wall_s": wall,
        "stopped_early": stop,
        "warnings": messages,
        "curve": curve,
    }


def _read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _drop_cut_line(path: Path, log: Callable[[str], None]) -> None:
    """Remove a last line cut short by an interruption (its run is run again)."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        try:
            json.loads(lines[-1])
            path.write_text(text + "\n")  # complete, only its newline is missing
        except json.JSONDecodeError:
            log(f"{path}: its last line was cut short by an interruption; that run runs again")
            path.write_text("".join(lines[:-1]))


def _append(path: Path, run: Mapping[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(run) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _grid(config: BenchmarkConfig, method: str) -> list[dict[str, Any]]:
    grid = get_benchmark_method(method).grid
    picks = range(len(grid)) if config.grid is None else config.grid
    return [dict(grid[i]) for i in picks]


def choose(search: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The setting with the best mean validation accuracy (the first of equals).

    Example
    -------
    >>> choose([{"setting": {"lr": 1}, "validation_accuracy": 0.8},
    ...         {"setting": {"lr": 2}, "validation_accuracy": 0.9}])
    {'lr': 2}
    """
    by_setting: dict[str, list[float]] = {}
    first: dict[str, dict[str, Any]] = {}
    for r in search:
        k = setting_key(r["setting"])
        by_setting.setdefault(k, []).append(r["validation_accuracy"])
        first.setdefault(k, dict(r["setting"]))
    best = max(by_setting, key=lambda k: statistics.mean(by_setting[k]))
    return first[best]


def _plan(config: BenchmarkConfig) -> int:
    per_method = len(config.grid) if config.grid is not None else None
    return sum(
        (per_method or len(get_benchmark_method(m).grid)) + config.num_seeds for m in config.methods
    )


class _Progress:
    """A tqdm bar over the whole benchmark on a terminal; a line per run elsewhere."""

    def __init__(self, total: int, enabled: bool, log: Callable[[str], None]) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.log = log
        self.total = total
        self.done = 0
        self.bar = tqdm(total=total, desc="benchmark", disable=not self.tty)

    def skip(self) -> None:
        self.done += 1
        self.bar.update(1)

    def finished(self, run: Mapping[str, Any], phase: str) -> None:
        self.done += 1
        self.bar.update(1)
        line = (
            f"[{self.done}/{self.total}] {run['method']} {phase} seed {run['seed']} "
            f"{setting_key(run['setting'])}: validation {run['validation_accuracy']:.3f}, "
            f"test {run['test_accuracy']:.3f} ({run['wall_s']:.0f} s)"
            + (f"; stopped early at {run['stopped_early']}" if run["stopped_early"] else "")
        )
        if self.tty:
            self.bar.set_postfix_str(f"{run['method']} {run['test_accuracy']:.3f}")
        elif self.enabled:
            self.log(line)

    def close(self) -> None:
        self.bar.close()


def run_benchmark(
    config: BenchmarkConfig,
    out: str | os.PathLike,
    data: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``out``; return the summary.

    Parameters
    ----------
    config : BenchmarkConfig
    out : path
        Directory of ``runs.jsonl`` (appended to, run by run) and ``summary.json``.
    data : Dataset, optional
        Instead of loading ``config.dataset``.
    progress : bool, default True
        A progress bar over the whole benchmark on a terminal; one line per finished run
        when the output is not a terminal.
    log : callable, default print

    Returns
    -------
    dict
        The summary (:func:`summarize`), also written to ``out/summary.json``.

    Raises
    ------
    ConfigMismatch
        When ``out`` holds runs of another configuration (``out/config.json``).
    """
    out = Path(out)
    data = load_dataset(config.dataset, config.path) if data is None else data
    train, validation = validation_split(data, config.num_validation, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"
    _check_resumable(out, config)
    _drop_cut_line(runs_path, log)
    model = network(config, train)
    evaluator = _Evaluator(config, train, validation, model.forward)
    X, y = jnp.asarray(train.X_train), jnp.asarray(train.y_train)
    done = {
        (r["method"], setting_key(r["setting"]), r["seed"], r["phase"]): r
        for r in _read_runs(runs_path)
    }
    shapes = {k: v.shape for k, v in model.init(random.PRNGKey(0)).items()}
    num_params = sum(int(np.prod(v)) for v in shapes.values())
    described = model.sizes if config.network == "dense" else "CNN"
    log(
        f"{data.name}: {len(train.y_train)} train / {len(validation.y_test)} validation / "
        f"{len(train.y_test)} test images; network {described} ({num_params} "
        f"parameters); {config.updates} updates, mini-batch {config.batch_size}; "
        f"{len(done)} runs already in {runs_path}"
    )
    bar = _Progress(_plan(config), progress, log)
    try:
        for method in config.methods:
            search = []
            for setting in _grid(config, method):
                search.append(
                    _run(
                        done,
                        runs_path,
                        bar,
                        "search",
                        method,
                        setting,
                        config.search_seed,
                        config,
                        (X, y),
                        model,
                        evaluator,
                    )
                )
            chosen = choose(search)
            for seed in range(1, config.num_seeds + 1):
                _run(
                    done,
                    runs_path,
                    bar,
                    "final",
                    method,
                    chosen,
                    seed,
                    config,
                    (X, y),
                    model,
                    evaluator,
                )
    finally:
        bar.close()
    runs = _read_runs(runs_path)
    summary = summarize(runs, config, data_sizes(data.name, train, validation))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def network(config: BenchmarkConfig, train: Dataset) -> Callable:
    """The benchmark's NumPyro network for ``config.network`` on ``train``'s images."""
    if config.network == "dense":
        return dense_network(train.num_features, config.hidden, train.num_classes)
    if config.network == "cnn":
        return conv_network(train.num_features, num_classes=train.num_classes)
    raise ValueError(f"network: expected 'dense' or 'cnn', got {config.network!r}.")


def _run(
    done: dict,
    runs_path: Path,
    bar: _Progress,
    phase: str,
    method: str,
    setting: Mapping[str, Any],
    seed: int,
    config: BenchmarkConfig,
    data: tuple,
    model: Callable,
    evaluator: _Evaluator,
) -> dict[str, Any]:
    key = (method, setting_key(setting), seed, phase)
    if key in done:
        bar.skip()
        return done[key]
    start = time.perf_counter()
    run = {"phase": phase, **_train(method, setting, seed, config, data, model, evaluator)}
    # The whole run: compilation, training, the test curve and the metrics.
    run["elapsed_s"] = time.perf_counter() - start
    run = {k: run[k] for k in ("method", "setting", "seed", "phase")} | run
    _append(runs_path, run)
    done[key] = run
    bar.finished(run, phase)
    return run


def data_sizes(name: str, train: Dataset, validation: Dataset) -> dict[str, Any]:
    """The ``data`` entry of the summary: the name and the three sets' sizes."""
    return {
        "name": name,
        "train": len(train.y_train),
        "validation": len(validation.y_test),
        "test": len(train.y_test),
    }


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd}


def summarize(
    runs: Sequence[Mapping[str, Any]], config: BenchmarkConfig, data: Mapping[str, Any]
) -> dict[str, Any]:
    """``summary.json``: the data's sizes, the configuration and, per method, the chosen
    setting, its search and the mean and sd of every metric over the final seeds.

    Example
    -------
    >>> runs = [{"method": "sgd", "phase": p, "seed": s, "setting": {"lr": 1},
    ...          **{m: 0.5 + s / 10 for m in METRICS}, "stopped_early": None}
    ...         for p, s in [("search", 0), ("final", 1), ("final", 2), ("final", 3)]]
    >>> s = summarize(runs, quick_config(methods=("sgd",)), {"name": "digits"})
    >>> s["methods"]["sgd"]["chosen"], round(s["methods"]["sgd"]["test_accuracy"]["mean"], 6)
    ({'lr': 1}, 0.7)
    """
    methods: dict[str, Any] = {}
    for method in config.methods:
        search = [r for r in runs if r["method"] == method and r["phase"] == "search"]
        final = [r for r in runs if r["method"] == method and r["phase"] == "final"]
        if not final:
            continue
        record = get_benchmark_method(method)
        entry: dict[str, Any] = {
            "family": record.family,
            "gradient_free": record.gradient_free,
            "about": record.about,
            "chosen": final[0]["setting"],
            "seeds": sorted(r["seed"] for r in final),
            "search": [
                {
                    "setting": r["setting"],
                    "validation_accuracy": r["validation_accuracy"],
                    "stopped_early": r.get("stopped_early"),
                }
                for r in search
            ],
            "stopped_early": sum(1 for r in final if r.get("stopped_early")),
        }
        for metric in METRICS:
            entry[metric] = _mean_sd([r[metric] for r in final])
        methods[method] = entry
    return {
        "data": dict(data),
        "config": _jsonable_config(config),
        "machine": machine(),
        # Every run's time from start to its record (compilation and metrics included).
        "elapsed_s": sum(float(r.get("elapsed_s", 0.0)) for r in runs),
        "runs": len(runs),
        "methods": methods,
    }


def machine() -> dict[str, Any]:
    """The machine the runs were timed on (for the results page)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
    }
