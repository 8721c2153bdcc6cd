"""The experiment's trainers: one interface over Optax optimizers, the two schemes and evosax.

A trainer has ``init(rng_key, params, X, y) -> state``, ``step(state, X, y) -> (state,
counts)`` (``counts``: the update's ``grad_evals`` and ``forward_evals``) and
``params(state)``; its mini-batch size is a constructor option, fixed before anything is
compiled.  The ``build_*`` functions make a trainer from a method's settings (see
:mod:`vi_entropy.experiment.methods`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import potential_energy

from vi_entropy.driver import RunResult
from vi_entropy.heat import HeatRegularization
from vi_entropy.local_entropy import LocalEntropy
from vi_entropy.loop import Observers
from vi_entropy.observers import DrawKeeper, FaultGuard

__all__ = ["ESTrainer", "OptaxTrainer", "SWATrainer", "SchemeTrainer"]


class _CompiledTrainer:
    """A trainer whose update is one compiled function ``_update(state, X, y)``.

    ``counts`` is what one update costs; the loss is the model's potential ``f`` on one
    mini-batch of ``batch`` rows.
    """

    scheme = None  # only the schemes' runs keep a scheme and a last result (MethodRun)
    last = None

    def __init__(
        self,
        model: Callable,
        optimizer: optax.GradientTransformation,
        batch: int,
        counts: Mapping[str, int],
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.batch = batch
        self.counts = dict(counts)
        self._step = jax.jit(self._update)

    def _loss(self, params: Any, key: Any, X: Any, y: Any) -> jax.Array:
        # The network's sites are real-valued: constrained and unconstrained coincide.
        seeded = handlers.seed(self.model, rng_seed=key)
        return potential_energy(seeded, (X, y), {"batch_size": self.batch}, params)

    def _update(self, state: Any, X: Any, y: Any) -> Any:
        raise NotImplementedError

    def step(self, state: Any, X: Any, y: Any) -> tuple[Any, dict]:
        return self._step(state, X, y), dict(self.counts)


class OptaxTrainer(_CompiledTrainer):
    """Mini-batch optimization of the model's potential with an Optax optimizer.

    ``opaque`` optimizers (``optax.contrib.sam`` in opaque mode) get the mini-batch's
    gradient function as ``grad_fn``; ``grads_per_update`` is what one update costs.
    """

    def __init__(
        self,
        model: Callable,
        optimizer: optax.GradientTransformation,
        batch: int,
        grads_per_update: int = 1,
        opaque: bool = False,
    ) -> None:
        counts = {"grad_evals": grads_per_update, "forward_evals": grads_per_update}
        super().__init__(model, optimizer, batch, counts)
        self.opaque = opaque

    def init(self, rng_key: Any, params: Mapping[str, Any], X: Any = None, y: Any = None) -> tuple:
        return (dict(params), self.optimizer.init(dict(params)), rng_key)

    def _update(self, state: tuple, X: Any, y: Any) -> tuple:
        params, opt_state, key = state
        key, key_batch = random.split(key)
        grad = jax.grad(lambda p: self._loss(p, key_batch, X, y))
        extra = {"grad_fn": lambda p, _: grad(p)} if self.opaque else {}
        updates, opt_state = self.optimizer.update(grad(params), opt_state, params, **extra)
        return (optax.apply_updates(params, updates), opt_state, key)

    def params(self, state: tuple) -> dict:
        return state[0]


class SWATrainer(OptaxTrainer):
    """An Optax optimizer whose reported parameters are the average of its iterates.

    Stochastic weight averaging (Izmailov et al. 2018): from update ``start`` on, every
    iterate enters an arithmetic mean, and :meth:`params` returns that mean (the
    optimizer's own iterate before ``start``).
    """

    def __init__(
        self, model: Callable, optimizer: optax.GradientTransformation, batch: int, start: int
    ) -> None:
        super().__init__(model, optimizer, batch)
        self.start = int(start)

    def init(self, rng_key: Any, params: Mapping[str, Any], X: Any = None, y: Any = None) -> tuple:
        params = dict(params)
        zero = jnp.zeros((), jnp.int32)
        return (*super().init(rng_key, params), params, zero, zero)

    def _update(self, state: tuple, X: Any, y: Any) -> tuple:
        params, opt_state, key, mean, count, step = state
        params, opt_state, key = super()._update((params, opt_state, key), X, y)
        step = step + 1
        averaging = step >= self.start
        new_count = count + averaging.astype(count.dtype)
        weight = jnp.where(averaging, 1.0 / jnp.maximum(new_count, 1), 0.0)
        mean = jax.tree.map(lambda m, p: m + weight * (p - m), mean, params)
        return (params, opt_state, key, mean, new_count, step)

    def params(self, state: tuple) -> dict:
        params, _, _, mean, count, _ = state
        return mean if int(count) > 0 else params


class SchemeTrainer:
    """Outer steps of a :class:`LocalEntropy` or :class:`HeatRegularization` scheme.

    Each step is the scheme's ``update`` with the observers ``run`` uses (the last
    step's draws and their R-hat/ESS, the scheme's warnings once, RejectedStepsError), so
    the experiment's loop is a run's loop with an evaluation between the steps.
    """

    def __init__(self, scheme: LocalEntropy | HeatRegularization, batch: int) -> None:
        self.scheme = scheme
        self.batch = batch
        self.observers = Observers([DrawKeeper("last"), FaultGuard()])

    def init(self, rng_key: Any, params: Mapping[str, Any], X: Any, y: Any) -> Any:
        return self.scheme.init(rng_key, X, y, init_params=params, batch_size=self.batch)

    def step(self, state: Any, X: Any, y: Any) -> tuple[Any, dict]:
        state, info = self.scheme.update(
            state, X, y, observers=self.observers, batch_size=self.batch
        )
        return state, {
            "grad_evals": int(info["num_grad_evals"]),
            "forward_evals": int(info["num_potential_evals"]),
        }

    @property
    def last(self) -> RunResult | None:
        """The steps so far as a :class:`RunResult` (with the last step's draws)."""
        return None if self.observers.record is None else self.observers.close()

    def params(self, state: Any) -> dict:
        return self.scheme.get_params(state)


def _open_es(cls: type, size: int, flat: jax.Array, optimizer: Any, std: float) -> tuple:
    es = cls(size, flat, optimizer=optimizer, std_schedule=optax.constant_schedule(std))
    return es, es.default_params


def _with_std_init(cls: type, size: int, flat: jax.Array, optimizer: Any, std: float) -> tuple:
    """SNES, PGPE, Sep-CMA-ES: ``std_init`` starts the adapted scale; the optimizer, where
    there is one (not Sep-CMA-ES, which moves its mean by its own recombination), moves
    the mean."""
    es = cls(size, flat) if optimizer is None else cls(size, flat, optimizer=optimizer)
    return es, es.default_params.replace(std_init=jnp.asarray(std))


# evosax class and how it is made, by strategy name.  Every evosax strategy minimizes its
# fitness (ranks, lowest first), so the fitness is the potential itself.
_STRATEGIES = {
    "open_es": ("Open_ES", _open_es),
    "snes": ("SNES", _with_std_init),
    "pgpe": ("PGPE", _with_std_init),
    "sep_cma_es": ("Sep_CMA_ES", _with_std_init),
}


class ESTrainer(_CompiledTrainer):
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
        batch: int,
    ) -> None:
        try:
            import evosax.algorithms as algorithms
        except ImportError as err:  # an optional dependency
            raise ImportError(
                "the evolution-strategy methods (es-openes, es-snes, es-pgpe, es-sep-cma) "
                "need evosax: "
                "pip install 'vi-entropy[examples]'"
            ) from err
        super().__init__(
            model, optimizer, batch, {"grad_evals": 0, "forward_evals": population_size}
        )
        cls_name, self._make = _STRATEGIES[strategy]
        self.cls = getattr(algorithms, cls_name)
        self.population_size = population_size
        self.std = std

    def init(self, rng_key: Any, params: Mapping[str, Any], X: Any = None, y: Any = None) -> tuple:
        # The strategy needs the shape of the flat parameters: it is made here, before the
        # first (compiled) update reads it.
        flat, self.unravel = ravel_pytree(dict(params))
        self.es, self.es_params = self._make(
            self.cls, self.population_size, flat, self.optimizer, self.std
        )
        key, key_init = random.split(rng_key)
        es_state = self.es.init(key_init, flat, self.es_params)
        return (_strongly_typed(es_state), key)

    def _update(self, state: tuple, X: Any, y: Any) -> tuple:
        es_state, key = state
        key, key_ask, key_batch, key_tell = random.split(key, 4)
        population, es_state = self.es.ask(key_ask, es_state, self.es_params)
        # One batch for the whole population: the candidates are ranked on the same loss.
        loss = jax.vmap(lambda flat: self._loss(self.unravel(flat), key_batch, X, y))
        es_state, _ = self.es.tell(key_tell, population, loss(population), es_state, self.es_params)
        return (_strongly_typed(es_state), key)

    def params(self, state: tuple) -> dict:
        return self.unravel(state[0].mean)


def _strongly_typed(tree: Any) -> Any:
    """``tree`` with no weakly typed leaves.

    evosax's init and tell differ in which leaves are weakly typed (the best fitness so
    far, OpenES's search scale); a state that changes type would compile the update again.
    """
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


# -- building a trainer from a method's settings ----------------------------------------
_OPTAX = {"sgd": optax.sgd, "adam": optax.adam}


def _base_optimizer(s: dict[str, Any], name_key: str = "optimizer") -> Any:
    """``s[name_key]`` at ``s["learning_rate"]``, with ``momentum`` (and ``nesterov``) if set."""
    name = s.pop(name_key)
    learning_rate = s.pop("learning_rate")
    momentum = s.pop("momentum", None)
    nesterov = bool(s.pop("nesterov", False))
    if momentum is not None:
        if name != "sgd":
            raise ValueError(f"momentum: only for optimizer 'sgd', not {name!r}.")
        return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
    return _OPTAX[name](learning_rate)


# The options of a sampler given by name that its settings carry (as sampler_kwargs).
_SAMPLER_OPTIONS = {
    "sgld": ("step_size", "noise_scale"),
    "nuts": ("max_tree_depth",),
    "sa": ("adapt_state_size",),
    "pcn": ("rho_gain", "target_accept_prob", "antithetic", "adapt_reference"),
}


def build_optax(model: Callable, tau: float, s: dict[str, Any], batch: int) -> OptaxTrainer:
    """An Optax optimizer ``s["optimizer"]`` at ``s["learning_rate"]`` (SGD: ``momentum``,
    ``nesterov``)."""
    return OptaxTrainer(model, _base_optimizer(dict(s)), batch)


def build_swa(model: Callable, tau: float, s: dict[str, Any], batch: int) -> SWATrainer:
    """:class:`SWATrainer`: ``s["optimizer"]`` as in :func:`build_optax`, averaged from
    update ``s["swa_start"]`` on."""
    s = dict(s)
    start = s.pop("swa_start")
    return SWATrainer(model, _base_optimizer(s), batch, start)


def build_sam(model: Callable, tau: float, s: dict[str, Any], batch: int) -> OptaxTrainer:
    """SAM (``optax.contrib.sam``, opaque mode): steps of a base optimizer taken with the
    gradient at an adversarial point ``ρ`` away (normalized ascent step).

    The base optimizer is ``s["base_optimizer"]`` (default SGD) at ``s["learning_rate"]``,
    with ``momentum``/``nesterov`` for SGD; two gradients per update.
    """
    s = dict(s)
    s.setdefault("base_optimizer", "sgd")
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(s.pop("rho")))
    base = _base_optimizer(s, "base_optimizer")
    opt = optax.contrib.sam(base, adv, sync_period=2, opaque_mode=True)
    return OptaxTrainer(model, opt, batch, grads_per_update=2, opaque=True)


def _outer_optim(s: dict[str, Any]) -> dict[str, Any]:
    """Turn ``outer_optimizer``/``outer_learning_rate`` (and ``outer_momentum``, SGD's
    Nesterov momentum) settings into ``outer_optim``."""
    name = s.pop("outer_optimizer", None)
    learning_rate = s.pop("outer_learning_rate", None)
    momentum = s.pop("outer_momentum", None)
    if name is not None:
        if momentum is not None:
            s["outer_optim"] = optax.sgd(learning_rate, momentum=momentum, nesterov=True)
        else:
            s["outer_optim"] = _OPTAX[name](learning_rate)
    return s


def _tau(tau: float, s: dict[str, Any]) -> Any:
    """``τ``, or the schedule ``τ · tau_decay^k`` when the settings carry ``tau_decay``."""
    decay = s.pop("tau_decay", None)
    if decay is None:
        return tau
    return optax.exponential_decay(tau, transition_steps=1, decay_rate=decay)


def build_local_entropy(
    model: Callable, tau: float, s: dict[str, Any], batch: int
) -> SchemeTrainer:
    """:class:`LocalEntropy` with sampler ``s["sampler"]``; the rest are its options."""
    sampler = s.pop("sampler")
    kwargs = {k: s.pop(k) for k in _SAMPLER_OPTIONS.get(sampler, ()) if k in s}
    scheme = LocalEntropy(
        model,
        _tau(tau, s),
        sampler=sampler,
        sampler_kwargs=kwargs,
        progress_bar=False,
        **_outer_optim(s),
    )
    return SchemeTrainer(scheme, batch)


def build_entropy_sgd(model: Callable, tau: float, s: dict[str, Any], batch: int) -> SchemeTrainer:
    """:meth:`LocalEntropy.entropy_sgd` with ``step_size``, ``outer_learning_rate`` and the
    recipe's other options from ``s``."""
    s = dict(s)
    # Fixed by the recipe (kept in the settings so that a run's record says what it ran).
    assert (s.pop("sampler"), s.pop("averaging"), s.pop("outer_optimizer")) == (
        "sgld",
        "exponential",
        "nesterov",
    ), "entropy-sgd: the recipe runs SGLD, an exponential average and Nesterov SGD"
    scheme = LocalEntropy.entropy_sgd(
        model,
        tau,
        learning_rate=s.pop("outer_learning_rate"),
        step_size=s.pop("step_size"),
        num_steps=s.pop("num_samples"),
        noise_scale=s.pop("noise_scale"),
        ema_decay=s.pop("ema_decay"),
        scoping=s.pop("tau_scoping"),
        progress_bar=False,
        **s,
    )
    return SchemeTrainer(scheme, batch)


def build_heat(model: Callable, tau: float, s: dict[str, Any], batch: int) -> SchemeTrainer:
    """:class:`HeatRegularization` by ``s["method"]``; an ``optimizer`` becomes ``optim``."""
    if "optimizer" in s:  # the SVI fit's optimizer
        s["optim"] = _OPTAX[s.pop("optimizer")](s.pop("learning_rate"))
    scheme = HeatRegularization(model, tau, progress_bar=False, **_outer_optim(s))
    return SchemeTrainer(scheme, batch)


def _es_optimizer(name: str | None, learning_rate: float | None) -> Any:
    """The optimizer of an evolution strategy's mean: an Optax one, or evosax's ClipUp
    with its maximum speed at twice the learning rate (as EvoJAX's PGPE sets it)."""
    if name is None:
        return None
    if name == "clipup":
        from evosax.core.optimizer import clipup

        return clipup(learning_rate, max_velocity=2.0 * learning_rate)
    return _OPTAX[name](learning_rate)


def build_es(model: Callable, tau: float, s: dict[str, Any], batch: int) -> ESTrainer:
    """An evosax strategy ``s["strategy"]`` with optimizer ``s["optimizer"]`` on its mean
    (``"sgd"``, ``"adam"``, ``"clipup"``; none for Sep-CMA-ES)."""
    optimizer = _es_optimizer(s.get("optimizer"), s.get("learning_rate"))
    return ESTrainer(model, s["strategy"], s["population_size"], s["std"], optimizer, batch)
