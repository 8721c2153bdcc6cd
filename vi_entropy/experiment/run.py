"""The paper's experiment: a dense network on real digits, trained by every method.

García Trillos, Kaplan & Sanz-Alonso (2019, Table 1 and Figure 4) train dense networks
on MNIST from one random initialization for 500 updates and compare, per update, SGD
with learning rate ``τ`` against local entropy (importance sampling, SGLD) and heat
regularization (Robbins-Monro).  This module runs that comparison, extended to the
samplers and baselines a user would compare today, all on the same NumPyro model from
the same initialization:

================ ==============================================================
``sgd``           SGD with learning rate ``τ`` on ``f`` (mini-batches)
``adam``          Adam (mini-batches)
``sam``           sharpness-aware minimization, ``optax.contrib.sam`` (2 gradients)
``le-is``         local entropy, importance sampling (gradient-free)
``le-sgld``       local entropy, SGLD inner loop (Entropy-SGD-equivalent)
``le-nuts``       local entropy, NUTS
``le-sa``         local entropy, sample-adaptive MCMC (gradient-free)
``hr-svi``        heat regularization, SVI on the Gaussian guide
``hr-rm``         heat regularization, Robbins-Monro (the paper's Algorithm 5)
``le-pcn``        local entropy, preconditioned Crank-Nicolson MCMC (gradient-free)
``le-slice``      local entropy, elliptical slice sampling (gradient-free)
``le-pcn-adam``   ``le-pcn`` with Adam as outer optimizer (``outer_optim``; ours)
``le-sgld-adam``  ``le-sgld`` with Adam as outer optimizer
``hr-svi-adam``   ``hr-svi`` with Adam as outer optimizer
``es-openes``     OpenAI evolution strategy (evosax ``Open_ES``, Adam; gradient-free)
``es-snes``       separable natural evolution strategy (evosax ``SNES``, Adam)
================ ==============================================================

The gradient-free methods run at one forward-evaluation budget per update: the
evolution strategies' population is ``le-pcn``'s chains × (transitions + 1), and
``le-slice`` is set to about as many evaluations (its count varies).  The evolution
strategies are peers, not local entropy: they have no ``τ``; they evaluate the same
loss, on a fresh mini-batch per update shared by the whole population.

The loss is the model's potential ``f`` (softmax negative log-likelihood summed over
the ``N`` training images, plus the Gaussian prior), so SGD with learning rate ``τ`` and
the local-entropy step ``x − τ∇F_τ`` move on the same scale (``τN`` per unit of the
mean loss).  One "update" is one outer step of a scheme or one optimizer step.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import potential_energy
from tqdm.auto import tqdm

from vi_entropy.cli import METHODS
from vi_entropy.data import Dataset
from vi_entropy.driver import VIEntropyWarning
from vi_entropy.heat import HeatRegularization
from vi_entropy.local_entropy import LocalEntropy
from vi_entropy.models import dense_network, forward, init_network, model_sizes, num_parameters

__all__ = [
    "Config",
    "MethodRun",
    "complete_settings",
    "markdown_table",
    "method_settings",
    "run_experiment",
    "save_draws",
    "save_figures",
    "summary_rows",
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
    methods : tuple of str, default all of them
        Any of ``vi_entropy.cli.METHODS``: ``sgd, adam, sam, le-is, le-sgld,
        le-nuts, le-sa, hr-svi, hr-rm, le-pcn, le-slice, le-pcn-adam, le-sgld-adam,
        hr-svi-adam, es-openes, es-snes``.
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
    methods: tuple[str, ...] = METHODS
    taus: tuple[float, ...] = (5e-4,)
    updates: int = 100
    batch_size: int = 128
    seed: int = 0
    smoke: bool = False
    eval_every: int = 1
    method_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def method_settings(method: str, tau: float, smoke: bool) -> dict[str, Any]:
    """The settings of one method at one ``τ`` (printed and saved with the results).

    Sample counts, inner steps and step sizes are ours (the paper does not give them);
    they keep each scheme at tens to hundreds of model evaluations per update.  Step
    sizes scale with ``τ``: the tilted posterior has curvature at least ``1/τ``.  The
    evolution strategies' population is the forward evaluations per update of
    ``le-pcn`` (chains × (transitions + 1)), so that the gradient-free methods compare
    at equal cost.

    Parameters
    ----------
    method : str
        One of the methods of :class:`Config`.
    tau : float
        The variance ``τ``.
    smoke : bool
        Smaller counts for tests.

    Returns
    -------
    dict
        JSON-serializable settings, as passed to the trainer.

    Example
    -------
    >>> method_settings("sgd", 5e-4, smoke=False)
    {'optimizer': 'sgd', 'learning_rate': 0.0005}
    >>> method_settings("es-openes", 5e-4, smoke=False)["population_size"]
    162
    """
    if method not in _METHODS:
        raise ValueError(f"--methods: unknown method {method!r}; expected some of {METHODS}.")
    return _METHODS[method].settings(tau, smoke)


def _sgd(tau: float, small: bool) -> dict[str, Any]:
    return {"optimizer": "sgd", "learning_rate": tau}


def _adam(tau: float, small: bool) -> dict[str, Any]:
    return {"optimizer": "adam", "learning_rate": 1e-2}


def _sam(tau: float, small: bool) -> dict[str, Any]:
    return {"optimizer": "sam(sgd)", "learning_rate": tau, "rho": 0.05}


def _le_is(tau: float, small: bool) -> dict[str, Any]:
    return {"sampler": "importance", "num_samples": 256}


def _le_sgld(tau: float, small: bool) -> dict[str, Any]:
    return {
        "sampler": "sgld",
        "num_chains": 1,
        "num_samples": 10 if small else 20,
        "num_warmup": 0,
        "step_size": 0.25 * tau,
        "noise_scale": 1.0,
        "averaging": "arithmetic",
    }


def _le_nuts(tau: float, small: bool) -> dict[str, Any]:
    return {
        "sampler": "nuts",
        "num_chains": 2,
        "num_samples": 5,
        "num_warmup": 10 if small else 50,
        "max_tree_depth": 4 if small else 5,
    }


def _le_sa(tau: float, small: bool) -> dict[str, Any]:
    # SA's transition costs O(K² d) for a population of K points: keep K small.
    return {
        "sampler": "sa",
        "num_chains": 2,
        "num_samples": 4 if small else 20,
        "num_warmup": 4 if small else 50,
        "adapt_state_size": 8 if small else 16,
    }


def _le_pcn(tau: float, small: bool) -> dict[str, Any]:
    # chains × (transitions + 1) forward evaluations per update (one per chain to refresh
    # its density for the new centre and batch): 2 × 81 = 162.  Few long chains beat many
    # short ones (digits, 100 updates, about 17k evaluations: 2 × 80 reached 0.936 test
    # accuracy, 4 × 40 0.900, 8 × 20 0.861): each step averages all its draws, and a
    # chain's early draws still lag behind the new tilted mean.  rho_gain keeps ρ at the
    # target acceptance as the centre moves (it drifted from 0.15 to 0.50 without).
    return {
        "sampler": "pcn",
        "num_chains": 2,
        "num_samples": 4 if small else 80,
        "num_warmup": 4 if small else 50,
        "rho_gain": 0.05,
    }


def _le_slice(tau: float, small: bool) -> dict[str, Any]:
    # About 4 evaluations per transition (the shrinking bracket varies): 2 × 20 × 4 + 2,
    # within 10% of le-pcn's 162 (digits: 2 × 20 reached 0.886, 4 × 10 0.830).
    return {
        "sampler": "elliptical_slice",
        "num_chains": 2,
        "num_samples": 8 if small else 20,
        "num_warmup": 2 if small else 10,
    }


def _hr_svi(tau: float, small: bool) -> dict[str, Any]:
    # SGD with learning rate τ/2 solves the proximal problem (curvature at least 1/τ)
    # geometrically; Adam's scale-free steps would not realize the implicit step.
    return {
        "method": "svi",
        "optimizer": "sgd",
        "learning_rate": 0.5 * tau,
        "num_inner_steps": 5 if small else 10,
        "num_particles": 2 if small else 4,
    }


def _hr_rm(tau: float, small: bool) -> dict[str, Any]:
    return {
        "method": "robbins_monro",
        "num_inner_steps": 5 if small else 10,
        "num_particles": 2 if small else 4,
        "gain": 0.5,
        "gain_t0": 10.0,
        "gain_kappa": 0.6,
        "estimator": "gradient",
    }


def _outer_adam(settings: Callable, learning_rate: float) -> Callable:
    """``settings`` plus an Adam outer optimizer on the direction ``(x_k − m_k)/τ``."""

    def with_adam(tau: float, small: bool) -> dict[str, Any]:
        return {
            **settings(tau, small),
            "outer_optimizer": "adam",
            "outer_learning_rate": learning_rate,
        }

    return with_adam


def _es(strategy: str, std: float, learning_rate: float) -> Callable:
    """Settings of an evosax strategy whose population is le-pcn's evaluations per update."""

    def settings(tau: float, small: bool) -> dict[str, Any]:
        pcn = _le_pcn(tau, small)
        return {
            "strategy": strategy,
            "population_size": pcn["num_chains"] * (pcn["num_samples"] + 1),
            "std": std,
            "optimizer": "adam",
            "learning_rate": learning_rate,
        }

    return settings


# -- trainers: one interface over optax optimizers, the two schemes and evosax -----------
class OptaxTrainer:
    """Mini-batch optimization of the model's potential with an Optax optimizer."""

    def __init__(
        self,
        model: Callable,
        optimizer: optax.GradientTransformation,
        grads_per_update: int,
        opaque: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.grads_per_update = grads_per_update
        self.opaque = opaque
        self._step = jax.jit(self._step_impl)

    def _loss(self, params: Any, key: Any, X: Any, y: Any, batch: int) -> jax.Array:
        # The network's sites are real-valued: constrained and unconstrained coincide.
        seeded = handlers.seed(self.model, rng_seed=key)
        return potential_energy(seeded, (X, y), {"batch_size": batch}, params)

    def init(self, rng_key: Any, params: Mapping[str, Any]) -> tuple:
        return (dict(params), self.optimizer.init(dict(params)), rng_key)

    def _step_impl(self, state: tuple, X: Any, y: Any) -> tuple:
        params, opt_state, key = state
        key, key_batch = random.split(key)
        grad = jax.grad(self._loss)
        g = grad(params, key_batch, X, y, self.batch)
        if self.opaque:
            updates, opt_state = self.optimizer.update(
                g, opt_state, params, grad_fn=lambda p, _: grad(p, key_batch, X, y, self.batch)
            )
        else:
            updates, opt_state = self.optimizer.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key)

    def step(self, state: tuple, X: Any, y: Any) -> tuple[tuple, dict]:
        state = self._step(state, X, y)
        return state, {"grad_evals": self.grads_per_update, "forward_evals": self.grads_per_update}

    def params(self, state: tuple) -> dict:
        return state[0]


class SchemeTrainer:
    """Outer steps of a :class:`LocalEntropy` or :class:`HeatRegularization` scheme."""

    def __init__(self, scheme: LocalEntropy | HeatRegularization) -> None:
        self.scheme = scheme
        self.last = None
        self.warned: set[str] = set()

    def init(self, rng_key: Any, params: Mapping[str, Any], X: Any, y: Any) -> Any:
        return self.scheme.init(rng_key, X, y, init_params=params, batch_size=self.batch)

    def step(self, state: Any, X: Any, y: Any) -> tuple[Any, dict]:
        # Every update is a one-step run, so a run's "shown once" warnings would repeat on
        # every update: pass on the first of each kind only.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", VIEntropyWarning)
            result = self.scheme.run(
                None,
                1,
                X,
                y,
                init_state=state,
                progress_bar=False,
                track_every=0,
                batch_size=self.batch,
            )
        for w in caught:
            kind = str(w.message).split(":", 1)[-1].split(" at outer step")[0]
            if issubclass(w.category, VIEntropyWarning) and kind in self.warned:
                continue
            self.warned.add(kind)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.last = result
        info = result.info
        return result.state, {
            "grad_evals": int(info["num_grad_evals"][0]),
            "forward_evals": int(info["num_potential_evals"][0]),
        }

    def params(self, state: Any) -> dict:
        return self.scheme.get_params(state)


class ESTrainer:
    """An evosax evolution strategy on the flat parameter vector (gradient-free).

    Every update asks the strategy for ``population_size`` candidates, evaluates the
    model's potential at each on one fresh mini-batch (the loss the other methods
    use) and tells it the values; the reported parameters are the search mean.  One
    update is one compiled function (ask, evaluate, tell).
    """

    def __init__(
        self,
        model: Callable,
        strategy: str,
        population_size: int,
        std: float,
        optimizer: optax.GradientTransformation,
    ) -> None:
        try:
            import evosax.algorithms as algorithms
        except ImportError as err:  # an optional dependency
            raise ImportError(
                "the evolution-strategy methods (es-openes, es-snes) need evosax: "
                "pip install 'vi-entropy[examples]'"
            ) from err
        self.model = model
        self.cls = {"open_es": algorithms.Open_ES, "snes": algorithms.SNES}[strategy]
        self.strategy = strategy
        self.population_size = population_size
        self.std = std
        self.optimizer = optimizer
        self._step = jax.jit(self._step_impl)

    def _loss(self, params: Any, key: Any, X: Any, y: Any, batch: int) -> jax.Array:
        seeded = handlers.seed(self.model, rng_seed=key)
        return potential_energy(seeded, (X, y), {"batch_size": batch}, params)

    def init(self, rng_key: Any, params: Mapping[str, Any]) -> tuple:
        flat, self.unravel = ravel_pytree(dict(params))
        if self.strategy == "open_es":
            self.es = self.cls(
                self.population_size,
                flat,
                optimizer=self.optimizer,
                std_schedule=optax.constant_schedule(self.std),
            )
            self.es_params = self.es.default_params
        else:
            self.es = self.cls(self.population_size, flat, optimizer=self.optimizer)
            self.es_params = self.es.default_params.replace(std_init=jnp.asarray(self.std))
        key, key_init = random.split(rng_key)
        es_state = self.es.init(key_init, flat, self.es_params)
        return (_strongly_typed(es_state), key)

    def _step_impl(self, state: tuple, X: Any, y: Any) -> tuple:
        es_state, key = state
        key, key_ask, key_batch, key_tell = random.split(key, 4)
        population, es_state = self.es.ask(key_ask, es_state, self.es_params)
        # One batch for the whole population: the candidates are ranked on the same loss.
        loss = jax.vmap(lambda flat: self._loss(self.unravel(flat), key_batch, X, y, self.batch))
        es_state, _ = self.es.tell(key_tell, population, loss(population), es_state, self.es_params)
        return (_strongly_typed(es_state), key)

    def step(self, state: tuple, X: Any, y: Any) -> tuple[tuple, dict]:
        state = self._step(state, X, y)
        return state, {"grad_evals": 0, "forward_evals": self.population_size}

    def params(self, state: tuple) -> dict:
        return self.unravel(state[0].mean)


def _strongly_typed(tree: Any) -> Any:
    """``tree`` with no weakly typed leaves.

    evosax's init and tell differ in which leaves are weakly typed (the best fitness so
    far, OpenES's search scale); a state that changes type would compile the update again.
    """
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


_OPTAX = {"sgd": optax.sgd, "adam": optax.adam}
# The options of a sampler given by name that its settings carry (as sampler_kwargs).
_SAMPLER_OPTIONS = {
    "sgld": ("step_size", "noise_scale"),
    "nuts": ("max_tree_depth",),
    "sa": ("adapt_state_size",),
    "pcn": ("rho_gain",),
}


def _optax_trainer(model: Callable, tau: float, s: dict[str, Any]) -> OptaxTrainer:
    return OptaxTrainer(model, _OPTAX[s["optimizer"]](s["learning_rate"]), 1)


def _sam_trainer(model: Callable, tau: float, s: dict[str, Any]) -> OptaxTrainer:
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(s["rho"]))
    opt = optax.contrib.sam(optax.sgd(s["learning_rate"]), adv, sync_period=2, opaque_mode=True)
    return OptaxTrainer(model, opt, 2, opaque=True)


def _outer_optim(s: dict[str, Any]) -> dict[str, Any]:
    """Turn ``outer_optimizer``/``outer_learning_rate`` settings into ``outer_optim``."""
    name = s.pop("outer_optimizer", None)
    learning_rate = s.pop("outer_learning_rate", None)
    if name is not None:
        s["outer_optim"] = _OPTAX[name](learning_rate)
    return s


def _le_trainer(model: Callable, tau: float, s: dict[str, Any]) -> SchemeTrainer:
    sampler = s.pop("sampler")
    kwargs = {k: s.pop(k) for k in _SAMPLER_OPTIONS.get(sampler, ())}
    scheme = LocalEntropy(
        model, tau, sampler=sampler, sampler_kwargs=kwargs, progress_bar=False, **_outer_optim(s)
    )
    return SchemeTrainer(scheme)


def _hr_trainer(model: Callable, tau: float, s: dict[str, Any]) -> SchemeTrainer:
    hr_method = s.pop("method")
    if hr_method == "svi":
        s["optim"] = _OPTAX[s.pop("optimizer")](s.pop("learning_rate"))
    scheme = HeatRegularization(model, tau, method=hr_method, progress_bar=False, **_outer_optim(s))
    return SchemeTrainer(scheme)


def _es_trainer(model: Callable, tau: float, s: dict[str, Any]) -> ESTrainer:
    optimizer = _OPTAX[s["optimizer"]](s["learning_rate"])
    return ESTrainer(model, s["strategy"], s["population_size"], s["std"], optimizer)


class _Method(NamedTuple):
    """A method of the experiment: its settings at ``(τ, smoke)``, its trainer, its cost."""

    settings: Callable[[float, bool], dict[str, Any]]
    build: Callable[[Callable, float, dict[str, Any]], Any]
    gradient_free: bool = False


_METHODS: dict[str, _Method] = {
    "sgd": _Method(_sgd, _optax_trainer),
    "adam": _Method(_adam, _optax_trainer),
    "sam": _Method(_sam, _sam_trainer),
    "le-is": _Method(_le_is, _le_trainer, gradient_free=True),
    "le-sgld": _Method(_le_sgld, _le_trainer),
    "le-nuts": _Method(_le_nuts, _le_trainer),
    "le-sa": _Method(_le_sa, _le_trainer, gradient_free=True),
    "hr-svi": _Method(_hr_svi, _hr_trainer),
    "hr-rm": _Method(_hr_rm, _hr_trainer),
    "le-pcn": _Method(_le_pcn, _le_trainer, gradient_free=True),
    "le-slice": _Method(_le_slice, _le_trainer, gradient_free=True),
    "le-pcn-adam": _Method(_outer_adam(_le_pcn, 3e-3), _le_trainer, gradient_free=True),
    "le-sgld-adam": _Method(_outer_adam(_le_sgld, 1e-2), _le_trainer),
    "hr-svi-adam": _Method(_outer_adam(_hr_svi, 1e-2), _hr_trainer),
    # Search scale and Adam's learning rate: the best of std in {0.01, 0.02, 0.05} and
    # learning rate in {0.01, 0.03, 0.05} on digits (100 updates; all ended 0.92-0.95).
    "es-openes": _Method(_es("open_es", 0.05, 3e-2), _es_trainer, gradient_free=True),
    "es-snes": _Method(_es("snes", 0.05, 3e-2), _es_trainer, gradient_free=True),
}

#: The methods that evaluate no gradient (their cost is counted in forward evaluations).
GRADIENT_FREE = tuple(m for m in METHODS if _METHODS[m].gradient_free)


def make_trainer(
    method: str, model: Callable, tau: float, settings: Mapping[str, Any], batch: int
) -> OptaxTrainer | SchemeTrainer | ESTrainer:
    """Build the trainer of ``method`` from its ``settings``."""
    trainer = _METHODS[method].build(model, tau, dict(settings))
    trainer.batch = batch
    return trainer


# -- the run ------------------------------------------------------------------------------


def _evaluate_fn(model: Callable) -> Callable:
    @jax.jit
    def evaluate(params: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> tuple:
        logits = forward(params, X_train)
        loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y_train.shape[0]), y_train])
        acc = jnp.mean(jnp.argmax(forward(params, X_test), -1) == y_test)
        return loss, acc

    return evaluate


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
    Xt, yt = jnp.asarray(data.X_test), jnp.asarray(data.y_test)
    batch = min(config.batch_size, len(data.y_train))
    trainer = make_trainer(method, model, tau, settings, batch)
    evaluate = _evaluate_fn(model)
    key = random.fold_in(random.PRNGKey(config.seed), METHODS.index(method))
    if isinstance(trainer, SchemeTrainer):
        state = trainer.init(key, init, X, y)
    else:
        state = trainer.init(key, init)
    grads = fwd = 0
    wall = 0.0
    step_times = []
    loss, acc = evaluate(init, X, y, Xt, yt)
    records: list[dict[str, float]] = [
        {
            "method": method,
            "tau": tau,
            "update": 0,
            "train_loss": float(loss),
            "test_accuracy": float(acc),
            "grad_evals": 0,
            "forward_evals": 0,
            "wall_time": 0.0,
            "step_time": 0.0,
        }
    ]
    bar = tqdm(
        range(1, config.updates + 1),
        desc=f"{method} tau={tau:g}",
        disable=not progress,
        leave=False,
    )
    for update in bar:
        start = time.perf_counter()
        state, counts = trainer.step(state, X, y)
        jax.block_until_ready(state)
        step_times.append(time.perf_counter() - start)
        wall += step_times[-1]
        grads += counts["grad_evals"]
        fwd += counts["forward_evals"]
        if update % config.eval_every == 0 or update == config.updates:
            loss, acc = evaluate(trainer.params(state), X, y, Xt, yt)
            records.append(
                {
                    "method": method,
                    "tau": tau,
                    "update": update,
                    "train_loss": float(loss),
                    "test_accuracy": float(acc),
                    "grad_evals": grads,
                    "forward_evals": fwd,
                    "wall_time": wall,
                }
            )
            bar.set_postfix(acc=f"{float(acc):.3f}")
    bar.close()
    last = getattr(trainer, "last", None)
    return MethodRun(
        method, tau, records, last, getattr(trainer, "scheme", None), (X, y), {"batch_size": batch}
    )


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
            settings = config.method_settings[method][_tau_key(tau)]
            log(f"  {method:<8} tau={tau:g}  " + json.dumps(settings, sort_keys=True))
            runs.append(train_one(method, tau, data, model, init, config, settings, progress))
    return runs


def _tau_key(tau: float) -> str:
    return f"{tau:g}"


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
        m: {_tau_key(t): method_settings(m, t, config.smoke) for t in config.taus}
        for m in config.methods
    }
    return config


def summary_rows(runs: Sequence[MethodRun]) -> list[dict[str, Any]]:
    """Table-1-like rows: final and best test accuracy, evaluations, time per method/τ.

    Parameters
    ----------
    runs : sequence of MethodRun

    Returns
    -------
    list of dict
        Per run: ``method``, ``tau``, ``final_accuracy``, ``best_accuracy`` (over the
        updates, not the initialization), ``final_train_loss``, ``grad_evals``,
        ``forward_evals``, ``wall_time`` and ``seconds_per_update``.

    Example
    -------
    >>> recs = [{"update": u, "test_accuracy": a, "train_loss": 2.0 - u, "grad_evals": u,
    ...          "forward_evals": u, "wall_time": 0.5 * u} for u, a in enumerate([0.1, 0.6, 0.5])]
    >>> row = summary_rows([MethodRun("sgd", 5e-4, recs)])[0]
    >>> row["final_accuracy"], row["best_accuracy"], row["seconds_per_update"]
    (0.5, 0.6, 0.5)
    """
    rows = []
    for r in runs:
        last = r.records[-1]
        rows.append(
            {
                "method": r.method,
                "tau": r.tau,
                "final_accuracy": last["test_accuracy"],
                "best_accuracy": max(x["test_accuracy"] for x in r.records[1:]),
                "final_train_loss": last["train_loss"],
                "grad_evals": last["grad_evals"],
                "forward_evals": last["forward_evals"],
                "wall_time": last["wall_time"],
                "seconds_per_update": last["wall_time"] / last["update"],
            }
        )
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`summary_rows` as a Markdown table (``table.md``).

    Example
    -------
    >>> row = {"method": "sgd", "tau": 5e-4, "final_accuracy": 0.9, "best_accuracy": 0.91,
    ...        "final_train_loss": 0.3, "grad_evals": 100, "forward_evals": 100,
    ...        "wall_time": 1.0, "seconds_per_update": 0.01}
    >>> print(markdown_table([row]).splitlines()[-1])
    | sgd | 0.0005 | 0.900 | 0.910 | 0.300 | 100 | 100 | 1.0 | 0.010 |
    """
    head = (
        "| method | τ | final test acc | best test acc | final train loss | "
        "gradient evals | forward evals | wall time (s) | s / update |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tau']:g} | {r['final_accuracy']:.3f} | "
            f"{r['best_accuracy']:.3f} | {r['final_train_loss']:.3f} | {r['grad_evals']:,} | "
            f"{r['forward_evals']:,} | {r['wall_time']:.1f} | {r['seconds_per_update']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def config_dict(config: Config) -> dict[str, Any]:
    """``config`` as a JSON-serializable dict (tuples become lists)."""
    d = asdict(config)
    d["hidden"] = list(config.hidden)
    d["methods"] = list(config.methods)
    d["taus"] = list(config.taus)
    return d


def as_float_array(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """``records[i][key]`` for every record, as a float array."""
    return np.asarray([r[key] for r in records], dtype=float)


def save_figures(runs: Sequence[MethodRun], out_dir: Any) -> list[str]:
    """Figure-4-like plots: test accuracy against updates and against evaluations.

    One panel per ``τ``; the cost axis counts gradient evaluations, or forward
    evaluations for the gradient-free methods (dashed lines), on a log axis that starts
    at the first update.  Uses matplotlib's Agg backend.

    Parameters
    ----------
    runs : sequence of MethodRun
    out_dir : str or path
        Existing directory to write the PNG files into.

    Returns
    -------
    list of str
        ``["accuracy_vs_updates.png", "accuracy_vs_evaluations.png"]``.

    Example
    -------
    >>> import tempfile
    >>> recs = [{"update": u, "test_accuracy": 0.1 * u, "grad_evals": u, "forward_evals": u}
    ...         for u in range(3)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_figures([MethodRun("sgd", 5e-4, recs)], tmp)
    ['accuracy_vs_updates.png', 'accuracy_vs_evaluations.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = sorted({r.tau for r in runs})
    names = []
    for xkey, fname, xlabel in (
        ("update", "accuracy_vs_updates.png", "update"),
        (
            "cost",
            "accuracy_vs_evaluations.png",
            "gradient evaluations (forward evaluations for gradient-free methods)",
        ),
    ):
        fig, axes = plt.subplots(
            1, len(taus), figsize=(5.5 * len(taus), 4), squeeze=False, sharey=True
        )
        for ax, tau in zip(axes[0], taus, strict=True):
            for r in (r for r in runs if r.tau == tau):
                if xkey == "update":
                    x = as_float_array(r.records, "update")
                else:
                    key = "forward_evals" if r.method in GRADIENT_FREE else "grad_evals"
                    x = as_float_array(r.records, key)
                style = "--" if r.method in GRADIENT_FREE else "-"
                acc = as_float_array(r.records, "test_accuracy")
                if xkey == "cost":
                    # Zero evaluations (the initialization) has no place on a log axis; a
                    # line from it would draw a false flat start at the first accuracy.
                    x, acc = x[x > 0], acc[x > 0]
                ax.plot(x, acc, style, label=r.method)
            if xkey == "cost":
                ax.set_xscale("log")
            ax.set_title(f"τ = {tau:g}")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(f"{out_dir}/{fname}", dpi=110)
        plt.close(fig)
        names.append(fname)
    return names


def save_draws(runs: Sequence[MethodRun], out_dir: Any) -> list[str]:
    """ArviZ netcdf of the last outer step's inner draws of each local-entropy run.

    Parameters
    ----------
    runs : sequence of MethodRun
        Runs of other methods are skipped.
    out_dir : str or path
        Existing directory; files are named ``draws_<method>_tau<τ>.nc``.

    Returns
    -------
    list of str
        The file names written.

    Example
    -------
    >>> import tempfile
    >>> from vi_entropy.data import load_digits
    >>> config = complete_settings(Config(methods=("sgd", "le-sgld"), hidden=(4,), updates=2))
    >>> runs = run_experiment(config, load_digits(), progress=False, log=lambda line: None)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_draws(runs, tmp)
    ['draws_le-sgld_tau0.0005.nc']
    """
    from vi_entropy.arviz import to_inference_data

    names = []
    for r in runs:
        if not isinstance(r.scheme, LocalEntropy) or r.last_result is None:
            continue
        idata = to_inference_data(
            r.last_result, r.scheme, model_args=r.model_args, model_kwargs=r.model_kwargs
        )
        name = f"draws_{r.method}_tau{_tau_key(r.tau)}.nc"
        idata.to_netcdf(f"{out_dir}/{name}")
        names.append(name)
    return names
