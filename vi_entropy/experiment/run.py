"""Running the experiment: each method at each ``τ``, from one initialization.

:func:`run_experiment` builds the network, initializes it once and calls
:func:`train_one` for every ``(τ, method)`` of a :class:`Config`; each run's trainer
comes from the method's record (:mod:`vi_entropy.experiment.methods`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import random
from tqdm.auto import tqdm

from vi_entropy.data import Dataset
from vi_entropy.experiment.methods import (
    DEFAULT_METHODS,
    METHODS,
    get_method,
    method_settings,
    tau_key,
)
from vi_entropy.experiment.trainers import ESTrainer, OptaxTrainer, SchemeTrainer
from vi_entropy.models import (
    accuracy,
    dense_network,
    forward,
    init_network,
    model_sizes,
    num_parameters,
)

__all__ = [
    "Config",
    "MethodRun",
    "complete_settings",
    "make_trainer",
    "run_experiment",
    "train_one",
]


@dataclass
class Config:
    """Everything that defines a run (saved as ``config.json``).

    Parameters
    ----------
    dataset : str, default "digits"
        ``"digits"``, ``"mnist5k"`` or ``"mnist"`` (see :mod:`vi_entropy.data`).
    path : str, optional
        The user's MNIST files, for ``dataset="mnist"``.
    hidden : tuple of int, default (32,)
        Hidden layer widths of the dense network.
    methods : tuple of str, default ``DEFAULT_METHODS``
        Any of ``vi_entropy.experiment.methods.METHODS``: ``sgd, adam, sam, le-is,
        le-sgld, le-nuts, le-sa, hr-svi, hr-rm, le-pcn, le-slice, le-pcn-adam,
        le-sgld-adam, hr-svi-adam, es-openes, es-snes``; by default all but ``le-sa``
        and ``le-pcn-adam`` (their ``not_default`` reasons say why).
    taus : tuple of float, default (5e-4,)
        Values of ``τ`` (also SGD's and SAM's learning rate).
    updates : int, default 100
        Parameter updates per method (the paper: 500).
    batch_size : int, default 128
        Mini-batch size.
    seed : int, default 0
        Seed of the split, the initialization and every method.
    smoke : bool, default False
        Tiny sample counts (tests).
    eval_every : int, default 1
        Evaluate every this many updates.
    method_settings : dict
        Filled by :func:`complete_settings`: method -> ``τ`` -> settings.

    Example
    -------
    >>> config = complete_settings(Config(methods=("sgd", "le-sgld"), taus=(1e-3,)))
    >>> config.method_settings["le-sgld"]["0.001"]["step_size"]
    0.00025
    """

    dataset: str = "digits"
    path: str | None = None
    hidden: tuple[int, ...] = (32,)
    methods: tuple[str, ...] = DEFAULT_METHODS
    taus: tuple[float, ...] = (5e-4,)
    updates: int = 100
    batch_size: int = 128
    seed: int = 0
    smoke: bool = False
    eval_every: int = 1
    method_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def complete_settings(config: Config) -> Config:
    """Fill ``config.method_settings`` for every method and ``τ``.

    Parameters
    ----------
    config : Config
        Modified in place.

    Returns
    -------
    Config
        The same object, with ``method_settings[method][f"{tau:g}"]`` from
        :func:`method_settings`.

    Example
    -------
    >>> sorted(complete_settings(Config(methods=("sgd", "adam"))).method_settings)
    ['adam', 'sgd']
    """
    config.method_settings = {
        m: {tau_key(t): method_settings(m, t, config.smoke) for t in config.taus}
        for m in config.methods
    }
    return config


def make_trainer(
    method: str, model: Callable, tau: float, settings: Mapping[str, Any], batch: int
) -> OptaxTrainer | SchemeTrainer | ESTrainer:
    """The trainer of ``method`` from its ``settings``, on mini-batches of ``batch`` rows.

    Example
    -------
    >>> from vi_entropy.models import dense_network
    >>> settings = method_settings("sgd", 5e-4, smoke=False)
    >>> trainer = make_trainer("sgd", dense_network(4), 5e-4, settings, batch=8)
    >>> type(trainer).__name__, trainer.batch
    ('OptaxTrainer', 8)
    """
    return get_method(method).build(model, tau, dict(settings), batch)


@dataclass
class MethodRun:
    """Per-update records of one method at one ``τ``, and its last draws (LE).

    - **method**, **tau** - which run.
    - **records** - one dict per evaluation (update 0 is the initialization):
      ``train_loss``, ``test_accuracy``, cumulative ``grad_evals``, ``forward_evals``
      and ``wall_time``.
    - **last_result**, **scheme** - the last outer step's :class:`~vi_entropy.RunResult`
      and the scheme (local entropy and heat regularization), for ArviZ export.
    - **model_args**, **model_kwargs** - the model's arguments.

    Example
    -------
    >>> run = MethodRun("sgd", 5e-4, [{"update": 0, "test_accuracy": 0.1}])
    >>> run.records[-1]["test_accuracy"]
    0.1
    """

    method: str
    tau: float
    records: list[dict[str, float]]
    last_result: Any = None
    scheme: Any = None
    model_args: tuple = ()
    model_kwargs: dict = field(default_factory=dict)


@jax.jit
def _train_loss(params: Mapping[str, Any], X: jax.Array, y: jax.Array) -> jax.Array:
    """The mean negative log-likelihood of the labels ``y`` (the data part of ``f / N``)."""
    logits = forward(params, X)
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y))


def _evaluate(params: Mapping[str, Any], X: Any, y: Any, X_test: Any, y_test: Any) -> dict:
    return {
        "train_loss": float(_train_loss(params, X, y)),
        "test_accuracy": accuracy(params, X_test, y_test),
    }


def train_one(
    method: str,
    tau: float,
    data: Dataset,
    model: Callable,
    init: Mapping[str, Any],
    config: Config,
    settings: Mapping[str, Any],
    progress: bool = True,
) -> MethodRun:
    """Train one method from ``init`` for ``config.updates`` updates, evaluating as it goes.

    Parameters
    ----------
    method : str
        One of the methods of :class:`Config`.
    tau : float
        The variance ``τ`` (SGD's learning rate).
    data : Dataset
        Train and test images.
    model : callable
        The NumPyro network (:func:`~vi_entropy.models.dense_network`).
    init : dict
        Initial parameters (:func:`~vi_entropy.models.init_network`).
    config : Config
        Updates, batch size, seed, evaluation interval.
    settings : dict
        The method's settings at ``τ`` (:func:`method_settings`).
    progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    MethodRun

    Example
    -------
    >>> import jax
    >>> from vi_entropy.data import load_digits
    >>> from vi_entropy.models import dense_network, init_network, model_sizes
    >>> data = load_digits()
    >>> model = dense_network(64, hidden=(4,))
    >>> init = init_network(jax.random.PRNGKey(0), model_sizes(model))
    >>> config = Config(updates=3)
    >>> run = train_one("sgd", 5e-4, data, model, init, config,
    ...                 method_settings("sgd", 5e-4, False), progress=False)
    >>> [r["update"] for r in run.records], run.records[-1]["grad_evals"]
    ([0, 1, 2, 3], 3)
    """
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    test = jnp.asarray(data.X_test), jnp.asarray(data.y_test)
    batch = min(config.batch_size, len(data.y_train))
    trainer = make_trainer(method, model, tau, settings, batch)
    key = random.fold_in(random.PRNGKey(config.seed), METHODS.index(method))
    state = trainer.init(key, init, X, y)

    def record(params: Mapping[str, Any], update: int, cost: Mapping[str, Any]) -> dict:
        return {
            "method": method,
            "tau": tau,
            "update": update,
            **_evaluate(params, X, y, *test),
            **cost,
        }

    # A bar on a terminal; elsewhere (a log file, CI) one line when the method ends.
    tty = progress and sys.stderr.isatty()
    bar = tqdm(
        range(1, config.updates + 1),
        desc=f"{method} tau={tau:g}",
        disable=not tty,
        leave=False,
    )
    start = record(init, 0, {"grad_evals": 0, "forward_evals": 0, "wall_time": 0.0})
    records = [start, *_train(trainer, state, X, y, config, record, bar)]
    if progress and not tty:
        last = records[-1]
        print(
            f"    {method} tau={tau:g}: {last['update']} updates, test accuracy "
            f"{last['test_accuracy']:.3f}, {last['wall_time']:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return MethodRun(
        method, tau, records, trainer.last, trainer.scheme, (X, y), {"batch_size": batch}
    )


def _train(
    trainer: Any, state: Any, X: Any, y: Any, config: Config, record: Callable, bar: Any
) -> list[dict[str, Any]]:
    """The updates of ``bar``, with a ``record`` every ``config.eval_every`` and at the end.

    Costs are cumulative: evaluations as the trainer counts them, and the wall time of the
    updates alone (not of the evaluations).
    """
    cost = {"grad_evals": 0, "forward_evals": 0, "wall_time": 0.0}
    records = []
    for update in bar:
        start = time.perf_counter()
        state, counts = trainer.step(state, X, y)
        jax.block_until_ready(state)
        cost["wall_time"] += time.perf_counter() - start
        cost["grad_evals"] += counts["grad_evals"]
        cost["forward_evals"] += counts["forward_evals"]
        if update % config.eval_every == 0 or update == config.updates:
            records.append(record(trainer.params(state), update, cost))
            bar.set_postfix(acc=f"{records[-1]['test_accuracy']:.3f}")
    bar.close()
    return records


def run_experiment(
    config: Config, data: Dataset, progress: bool = True, log: Callable[[str], None] = print
) -> list[MethodRun]:
    """Train every method at every ``τ`` from the same initialization.

    Builds :func:`~vi_entropy.models.dense_network` for ``data``, initializes it once
    (Glorot, ``config.seed``) and calls :func:`train_one` for each ``(τ, method)``.

    Parameters
    ----------
    config : Config
        With ``method_settings`` filled (:func:`complete_settings`).
    data : Dataset
        Train and test images.
    progress : bool, default True
        tqdm progress bars.
    log : callable, default print
        Receives one line per run (its settings).

    Returns
    -------
    list of MethodRun
        In the order ``τ``, then method.

    Example
    -------
    >>> from vi_entropy.data import load_digits
    >>> config = complete_settings(Config(methods=("sgd", "le-sgld"), hidden=(4,), updates=2))
    >>> runs = run_experiment(config, load_digits(), progress=False, log=lambda line: None)
    >>> [(r.method, len(r.records)) for r in runs]
    [('sgd', 3), ('le-sgld', 3)]
    """
    model = dense_network(data.num_features, config.hidden, data.num_classes)
    sizes = model_sizes(model)
    init = init_network(random.PRNGKey(config.seed), sizes)
    log(
        f"{data.name}: {len(data.y_train)} train / {len(data.y_test)} test images; network "
        f"{sizes} ({num_parameters(sizes)} parameters); {config.updates} updates; "
        f"mini-batch {config.batch_size}"
    )
    runs = []
    for tau in config.taus:
        for method in config.methods:
            settings = config.method_settings[method][tau_key(tau)]
            log(f"  {method:<8} tau={tau:g}  " + json.dumps(settings, sort_keys=True))
            runs.append(train_one(method, tau, data, model, init, config, settings, progress))
    return runs
