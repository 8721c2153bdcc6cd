"""The experiment's methods: one record each, with its trainer, its cost and its settings.

:data:`METHODS`, :data:`GRADIENT_FREE` and :func:`method_settings` are read from
:data:`REGISTRY`.  A new method is one more record at the end (a method's seed is
derived from its index).

Sample counts, inner steps and step sizes are ours (the paper does not give them); they
keep each scheme at tens to hundreds of model evaluations per update.  Most settings are
a table whose values may depend on the run: a :class:`Count` is smaller in smoke runs,
a :class:`TimesTau` scales with ``τ`` (the tilted posterior has curvature at least
``1/τ``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from vi_entropy.experiment.trainers import (
    build_entropy_sgd,
    build_es,
    build_heat,
    build_local_entropy,
    build_optax,
    build_sam,
    build_swa,
)

__all__ = [
    "DEFAULT_METHODS",
    "GRADIENT_FREE",
    "METHODS",
    "REGISTRY",
    "Count",
    "Method",
    "TimesTau",
    "method_settings",
]

Settings = Callable[[float, bool], dict[str, Any]]


class Count(NamedTuple):
    """A setting that is ``smoke`` in smoke runs (tests) and ``full`` otherwise."""

    smoke: int
    full: int


class TimesTau(NamedTuple):
    """A setting of ``factor × τ``."""

    factor: float


class Method(NamedTuple):
    """A method of the experiment.

    - **name** - as given to ``--methods``.
    - **build** - ``build(model, tau, settings, batch)`` makes its trainer
      (:mod:`vi_entropy.experiment.trainers`); it may consume ``settings``.
    - **settings** - ``settings(tau, smoke)``: its JSON-serializable settings.
    - **gradient_free** - it evaluates no gradient: its cost is counted in forward
      evaluations.
    - **not_default** - why it is left out of the default set, if it is.
    """

    name: str
    build: Callable[[Callable, float, dict[str, Any], int], Any]
    settings: Settings
    gradient_free: bool = False
    #: Why the method is outside the default set (``--methods`` still runs it), or None.
    not_default: str | None = None


def table(values: Mapping[str, Any]) -> Settings:
    """The settings function of a table: :class:`Count` and :class:`TimesTau` resolved.

    Example
    -------
    >>> table({"num_samples": Count(4, 80), "step_size": TimesTau(0.5)})(1e-3, False)
    {'num_samples': 80, 'step_size': 0.0005}
    """

    def settings(tau: float, smoke: bool) -> dict[str, Any]:
        return {key: _resolve(value, tau, smoke) for key, value in values.items()}

    return settings


def _resolve(value: Any, tau: float, smoke: bool) -> Any:
    if isinstance(value, Count):
        return value.smoke if smoke else value.full
    if isinstance(value, TimesTau):
        return value.factor * tau
    return value


def _outer_adam(values: Mapping[str, Any], learning_rate: float) -> dict[str, Any]:
    """``values`` plus an Adam outer optimizer on the direction ``(x_k − m_k)/τ``."""
    return {**values, "outer_optimizer": "adam", "outer_learning_rate": learning_rate}


SGD = {"optimizer": "sgd", "learning_rate": TimesTau(1.0)}
ADAM = {"optimizer": "adam", "learning_rate": 1e-2}
SAM = {"optimizer": "sam(sgd)", "learning_rate": TimesTau(1.0), "rho": 0.05}
LE_IS = {"sampler": "importance", "num_samples": 256}
LE_SGLD = {
    "sampler": "sgld",
    "num_chains": 1,
    "num_samples": Count(10, 20),
    "num_warmup": 0,
    "step_size": TimesTau(0.25),
    "noise_scale": 1.0,
    "averaging": "arithmetic",
}
LE_NUTS = {
    "sampler": "nuts",
    "num_chains": 2,
    "num_samples": 5,
    "num_warmup": Count(10, 50),
    "max_tree_depth": Count(4, 5),
}
# SA's transition costs O(K² d) for a population of K points: keep K small.
LE_SA = {
    "sampler": "sa",
    "num_chains": 2,
    "num_samples": Count(4, 20),
    "num_warmup": Count(4, 50),
    "adapt_state_size": Count(8, 16),
}
# chains × (transitions + 1) forward evaluations per update (one per chain to refresh its
# density for the new centre and batch): 2 × 81 = 162.  Few long chains beat many short
# ones (digits, 100 updates, about 17k evaluations: 2 × 80 reached 0.936 test accuracy,
# 4 × 40 0.900, 8 × 20 0.861): each step averages all its draws, and a chain's early
# draws still lag behind the new tilted mean.  rho_gain keeps ρ at the target acceptance
# as the centre moves (it drifted from 0.15 to 0.50 without).
LE_PCN = {
    "sampler": "pcn",
    "num_chains": 2,
    "num_samples": Count(4, 80),
    "num_warmup": Count(4, 50),
    "rho_gain": 0.05,
}
# About 4 evaluations per transition (the shrinking bracket varies): 2 × 20 × 4 + 2,
# within 10% of le-pcn's 162 (digits: 2 × 20 reached 0.886, 4 × 10 0.830).
LE_SLICE = {
    "sampler": "elliptical_slice",
    "num_chains": 2,
    "num_samples": Count(8, 20),
    "num_warmup": Count(2, 10),
}
# SGD with learning rate τ/2 solves the proximal problem (curvature at least 1/τ)
# geometrically; Adam's scale-free steps would not realize the implicit step.
HR_SVI = {
    "method": "svi",
    "optimizer": "sgd",
    "learning_rate": TimesTau(0.5),
    "num_inner_steps": Count(5, 10),
    "num_particles": Count(2, 4),
}
HR_RM = {
    "method": "robbins_monro",
    "num_inner_steps": Count(5, 10),
    "num_particles": Count(2, 4),
    "gain": 0.5,
    "gain_t0": 10.0,
    "gain_kappa": 0.6,
    "estimator": "gradient",
}


def _es(strategy: str, std: float, learning_rate: float) -> Settings:
    """An evosax strategy whose population is le-pcn's forward evaluations per update."""

    def settings(tau: float, smoke: bool) -> dict[str, Any]:
        pcn = table(LE_PCN)(tau, smoke)
        return {
            "strategy": strategy,
            "population_size": pcn["num_chains"] * (pcn["num_samples"] + 1),
            "std": std,
            "optimizer": "adam",
            "learning_rate": learning_rate,
        }

    return settings


#: Every method, in the order of their seeds (new methods go at the end).
REGISTRY: tuple[Method, ...] = (
    Method("sgd", build_optax, table(SGD)),
    Method("adam", build_optax, table(ADAM)),
    Method("sam", build_sam, table(SAM)),
    Method("le-is", build_local_entropy, table(LE_IS), gradient_free=True),
    Method("le-sgld", build_local_entropy, table(LE_SGLD)),
    Method("le-nuts", build_local_entropy, table(LE_NUTS)),
    Method(
        "le-sa",
        build_local_entropy,
        table(LE_SA),
        gradient_free=True,
        not_default="SA's population of 16 points cannot move through a network's "
        "thousands of dimensions: it stays at chance (0.08 on digits, 0.11 on mnist5k); "
        "it is for small models",
    ),
    Method("hr-svi", build_heat, table(HR_SVI)),
    Method("hr-rm", build_heat, table(HR_RM)),
    Method("le-pcn", build_local_entropy, table(LE_PCN), gradient_free=True),
    Method("le-slice", build_local_entropy, table(LE_SLICE), gradient_free=True),
    Method(
        "le-pcn-adam",
        build_local_entropy,
        table(_outer_adam(LE_PCN, 3e-3)),
        gradient_free=True,
        not_default="Adam rescales every coordinate of the noisy pCN direction "
        "(x_k - m_k)/tau to the full learning rate, so the Monte Carlo noise of a 2-chain "
        "mean moves every weight as far as the signal (digits: 0.79 against 0.93 for "
        "le-pcn)",
    ),
    Method("le-sgld-adam", build_local_entropy, table(_outer_adam(LE_SGLD, 1e-2))),
    Method("hr-svi-adam", build_heat, table(_outer_adam(HR_SVI, 1e-2))),
    # Search scale and Adam's learning rate: the best of std in {0.01, 0.02, 0.05} and
    # learning rate in {0.01, 0.03, 0.05} on digits (100 updates; all ended 0.92-0.95).
    Method("es-openes", build_es, _es("open_es", 0.05, 3e-2), gradient_free=True),
    Method("es-snes", build_es, _es("snes", 0.05, 3e-2), gradient_free=True),
)
_BY_NAME = {m.name: m for m in REGISTRY}

#: The methods' names (``--methods``), in the order of :data:`REGISTRY`.
METHODS: tuple[str, ...] = tuple(_BY_NAME)
#: The methods ``reproduce`` runs by default (all but those with a ``not_default`` reason).
DEFAULT_METHODS: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.not_default is None)
#: The methods that evaluate no gradient (their cost is counted in forward evaluations).
GRADIENT_FREE: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.gradient_free)


def get_method(name: str) -> Method:
    """The record of method ``name``, else a ``ValueError`` listing the methods."""
    if name not in _BY_NAME:
        raise ValueError(f"method: unknown method {name!r}; expected one of {METHODS}.")
    return _BY_NAME[name]


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
        One of :data:`METHODS`.
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
    return get_method(method).settings(tau, smoke)


def tau_key(tau: float) -> str:
    """``τ`` as a key of ``Config.method_settings`` and in file names.

    Example
    -------
    >>> tau_key(5e-4)
    '0.0005'
    """
    return f"{tau:g}"


# -- the benchmark's methods and their search grids ------------------------------------
#
# ``vi-entropy benchmark`` (:mod:`vi_entropy.experiment.benchmark`) searches each method
# over the grid beside it, chosen by validation accuracy, then reruns the chosen setting
# with fresh seeds.  Every grid has the same size (:data:`GRID_SIZE`).  A grid point is a
# dict of knobs over the method's base settings: ``tau`` is τ, a knob ``name_per_tau`` is
# ``name = value × τ``, any other knob replaces the base setting of that name.
#
# Scales (full Fashion-MNIST, N = 55,000 training images, mini-batch 128): the loss is the
# summed potential, so a learning rate ``η`` on ``f`` is ``ηN`` on the mean cross-entropy
# (SGD's 1e-6 to 5e-5 is 0.055 to 2.75 there).  The inner steps of the LE/HR methods (SGLD
# step, SVI learning rate, Robbins-Monro's first gain × τ) are searched on that scale too:
# a step tied to τ (e.g. τ/2) is unstable on f once τ is large, and tiny when τ is small.
# The LE/HR methods cost about 20 gradient evaluations per update (Entropy-SGD's L = 20),
# the baselines 1 (SAM 2); each baseline is also run to 20 × the gradients (``-20x``).

#: Settings per method in every search.
GRID_SIZE = 6
#: The family (figure panel) of the first-order methods run to 20 × the gradients.
FIRST_ORDER_20X = "first-order, 20× gradients"
# The first runs of the Fashion-MNIST benchmark chose settings at the end of eight grids
# (SAM over SGD-momentum, SWA, le-sgld-adam, hr-svi-adam, sgd-20x and sam-adam-20x at
# the largest learning rate, sam-sgdm-20x at the smallest, Entropy-SGD at the largest
# τ); those grids were moved outward and the methods run again, so that their choices
# are bracketed where the grid allows (the results page names any that still are not).


class BenchmarkMethod(NamedTuple):
    """A method of the benchmark.

    - **name**, **build**, **gradient_free** - as :class:`Method`.
    - **base** - its settings, as a :func:`table` (``Count``/``TimesTau`` allowed).
    - **grid** - :data:`GRID_SIZE` dicts of knobs searched over (see above).
    - **family** - ``"first-order"``, ``"local entropy"``, ``"heat regularization"`` or
      ``"gradient-free"``: its panel in the figures.
    - **update_factor** - it runs this many times the benchmark's updates (``adam-20x``).
    - **about** - one line for the results page.
    """

    name: str
    build: Callable[[Callable, float, dict[str, Any], int], Any]
    base: Mapping[str, Any]
    grid: tuple[Mapping[str, Any], ...]
    family: str
    about: str
    gradient_free: bool = False
    update_factor: int = 1


def _grid(**axes: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """The product of ``axes`` (the first varies slowest), as knob dicts.

    Example
    -------
    >>> _grid(tau=[1, 2], step=[3, 4, 5])[:2]
    ({'tau': 1, 'step': 3}, {'tau': 1, 'step': 4})
    """
    points: list[dict[str, Any]] = [{}]
    for key, values in axes.items():
        points = [{**p, key: v} for p in points for v in values]
    return tuple(points)


_SGLD20 = {**LE_SGLD, "num_samples": Count(5, 20)}
_HR20 = {"num_inner_steps": Count(3, 10), "num_particles": 2}
_SGD = BenchmarkMethod(
    "sgd",
    build_optax,
    {"optimizer": "sgd"},
    _grid(learning_rate=[5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5]),
    "first-order",
    "SGD (the paper's baseline: learning rate τ)",
)

_SGD_NESTEROV = BenchmarkMethod(
    "sgd-nesterov",
    build_optax,
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
    _grid(learning_rate=[1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6]),
    "first-order",
    "SGD with Nesterov momentum 0.9",
)

_ADAM = BenchmarkMethod(
    "adam",
    build_optax,
    {"optimizer": "adam"},
    _grid(learning_rate=[3e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2]),
    "first-order",
    "Adam",
)

_SAM_SGDM = BenchmarkMethod(
    "sam-sgdm",
    build_sam,
    {"base_optimizer": "sgd", "momentum": 0.9, "nesterov": True},
    _grid(learning_rate=[1e-6, 2e-6, 4e-6], rho=[0.02, 0.05]),
    "first-order",
    "SAM (optax.contrib.sam) over SGD with Nesterov momentum; 2 gradients per update",
)

_SAM_ADAM = BenchmarkMethod(
    "sam-adam",
    build_sam,
    {"base_optimizer": "adam"},
    _grid(learning_rate=[1e-3, 3e-3, 1e-2], rho=[0.05, 0.2]),
    "first-order",
    "SAM over Adam; 2 gradients per update",
)

_SWA = BenchmarkMethod(
    "swa",
    build_swa,
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "swa_start": 0},
    _grid(learning_rate=[1e-6, 2e-6, 4e-6], swa_start_fraction=[0.5, 0.75]),
    "first-order",
    "stochastic weight averaging over SGD with Nesterov momentum",
)


def _given_20x_gradients(
    record: BenchmarkMethod, grid: tuple[Mapping[str, Any], ...]
) -> BenchmarkMethod:
    """A first-order ``record`` run to 20 × the gradients (its own ``grid``, a longer run
    asks other settings): 20 × the updates, 10 × for SAM's updates of 2 gradients."""
    factor = 10 if record.build is build_sam else 20
    return record._replace(
        name=f"{record.name}-20x",
        grid=grid,
        family=FIRST_ORDER_20X,
        about=f"{record.about}, for {factor} × the updates (20 × the gradients)",
        update_factor=factor,
    )


# The LE methods' search: τ (constant, or decaying geometrically to a tenth by the last
# update).  An outer SGD with Nesterov momentum on the LE direction lost 3 to 4 points on
# mnist5k (benchmarks/gradient_free_levers.py), and is not searched.
_GF_TAUS = (
    *({"tau": tau} for tau in (3e-5, 1e-4, 3e-4, 1e-3)),
    {"tau": 3e-4, "tau_final": 3e-5},
    {"tau": 1e-3, "tau_final": 1e-4},
)
# The evolution strategies' population: le-pcn's forward evaluations per update, chains ×
# (transitions + 1) = 2 × 81, so that every gradient-free method has the same budget.
_GF_POPULATION = Count(2 * (4 + 1), 2 * (80 + 1))


def _es_method(
    name: str,
    strategy: str,
    about: str,
    base: Mapping[str, Any],
    grid: tuple[Mapping[str, Any], ...],
) -> BenchmarkMethod:
    """An evosax strategy of the benchmark, at le-pcn's forward evaluations per update."""
    settings = {"strategy": strategy, "population_size": _GF_POPULATION, "std": 0.01, **base}
    return BenchmarkMethod(
        name, build_es, settings, grid, "gradient-free", about, gradient_free=True
    )


# A method's position seeds its runs (with the run's seed): new methods go at the end.
BENCHMARK: tuple[BenchmarkMethod, ...] = (
    _SGD,
    _SGD_NESTEROV,
    _ADAM,
    _SAM_SGDM,
    _SAM_ADAM,
    _SWA,
    _given_20x_gradients(_ADAM, _grid(learning_rate=[1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 1e-2])),
    BenchmarkMethod(
        "entropy-sgd",
        build_entropy_sgd,
        {
            **_SGLD20,
            "averaging": "exponential",
            "ema_decay": 0.75,
            "noise_scale": 0.01,
            "step_size": 3e-6,
            "outer_optimizer": "nesterov",
            "tau_scoping": 1e-3,
        },
        _grid(tau=[1e-3, 1e-2, 1e-1], outer_learning_rate_per_tau=[0.01, 0.03]),
        "local entropy",
        "Entropy-SGD as its authors run it: 20 SGLD steps, exponential average (α = 0.75), "
        "thermal noise 0.01, τ scoping 1e-3, outer SGD with Nesterov momentum",
    ),
    BenchmarkMethod(
        "le-sgld",
        build_local_entropy,
        _SGLD20,
        _grid(tau=[1e-4, 1e-3], step_size=[1e-6, 3e-6, 1e-5]),
        "local entropy",
        "local entropy, SGLD: 20 steps, arithmetic average, x_{k+1} = mean (the paper)",
    ),
    BenchmarkMethod(
        "le-sgld-adam",
        build_local_entropy,
        {**_SGLD20, "step_size": 3e-6, "outer_optimizer": "adam"},
        _grid(tau=[1e-4, 1e-3], outer_learning_rate=[3e-3, 1e-2, 3e-2]),
        "local entropy",
        "le-sgld with Adam on the direction (x_k − m_k)/τ",
    ),
    BenchmarkMethod(
        "le-nuts",
        build_local_entropy,
        {
            "sampler": "nuts",
            "num_chains": 2,
            "num_samples": Count(2, 4),
            "num_warmup": Count(5, 20),
            "max_tree_depth": Count(3, 4),
        },
        _grid(tau=[1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4]),
        "local entropy",
        "local entropy, NUTS: 2 chains × 4 draws, tree depth ≤ 4, one mini-batch per update",
    ),
    BenchmarkMethod(
        "hr-svi",
        build_heat,
        {"method": "svi", "optimizer": "sgd", **_HR20},
        _grid(tau=[1e-5, 1e-4, 1e-3], learning_rate=[2e-6, 5e-6]),
        "heat regularization",
        "heat regularization, SVI (SGD) on the Gaussian guide: 10 steps × 2 particles",
    ),
    BenchmarkMethod(
        "hr-svi-adam",
        build_heat,
        {
            "method": "svi",
            "optimizer": "sgd",
            "learning_rate": 5e-6,
            "outer_optimizer": "adam",
            **_HR20,
        },
        _grid(tau=[1e-5, 1e-4], outer_learning_rate=[3e-3, 1e-2, 3e-2]),
        "heat regularization",
        "hr-svi with Adam on the direction (x_k − m_k)/τ",
    ),
    BenchmarkMethod(
        "hr-rm",
        build_heat,
        {
            "method": "robbins_monro",
            "gain_t0": 10.0,
            "gain_kappa": 0.6,
            "estimator": "gradient",
            **_HR20,
        },
        # gain·τ is the first inner step: about SGD's learning rates at every τ.
        tuple(
            {"tau": tau, "gain": gain}
            for tau, gains in ((1e-5, (0.2, 0.5)), (1e-4, (0.02, 0.05)), (1e-3, (0.002, 0.005)))
            for gain in gains
        ),
        "heat regularization",
        "heat regularization, Robbins–Monro: 10 steps × 2 particles, gains gain·τ(1 + j/10)^−0.6",
    ),
    _given_20x_gradients(_SGD, _grid(learning_rate=[5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5])),
    _given_20x_gradients(_SGD_NESTEROV, _grid(learning_rate=[5e-8, 1e-7, 2e-7, 5e-7, 1e-6, 2e-6])),
    _given_20x_gradients(_SAM_SGDM, _grid(learning_rate=[2.5e-7, 5e-7, 1e-6], rho=[0.02, 0.05])),
    _given_20x_gradients(_SAM_ADAM, _grid(learning_rate=[1e-3, 3e-3, 1e-2], rho=[0.02, 0.05])),
    _given_20x_gradients(
        _SWA, _grid(learning_rate=[5e-7, 1e-6, 2e-6], swa_start_fraction=[0.5, 0.75])
    ),
    BenchmarkMethod(
        "le-pcn",
        build_local_entropy,
        LE_PCN,
        _GF_TAUS,
        "gradient-free",
        "local entropy, pCN: 2 chains × 80 transitions (162 forward evaluations an update)",
        gradient_free=True,
    ),
    BenchmarkMethod(
        "le-slice",
        build_local_entropy,
        LE_SLICE,
        _GF_TAUS,
        "gradient-free",
        "local entropy, elliptical slice: 20 transitions a chain (about 4.5 forward "
        "evaluations each)",
        gradient_free=True,
    ),
    _es_method(
        "es-openes",
        "open_es",
        "OpenES (evosax): antithetic Gaussian search, Adam on the mean",
        {"optimizer": "adam"},
        _grid(std=[0.005, 0.02], learning_rate=[3e-3, 1e-2, 3e-2]),
    ),
    _es_method(
        "es-snes",
        "snes",
        "SNES (evosax): separable natural evolution strategy",
        {"optimizer": "sgd", "learning_rate": 1.0},
        # evosax's own mean update (SGD at 1: the natural-gradient step) and Adam.
        tuple(
            {"std": std, "optimizer": name, "learning_rate": lr}
            for std in (0.01, 0.03, 0.1)
            for name, lr in (("sgd", 1.0), ("adam", 3e-2))
        ),
    ),
    _es_method(
        "es-pgpe",
        "pgpe",
        "PGPE (evosax): antithetic, adapted per-weight scale, ClipUp on the mean",
        {"optimizer": "clipup"},
        # ClipUp's speed limit is 2 × the learning rate: a step of norm at most 0.06 to
        # 0.6 on the 50,890 weights (3e-3 and 1e-2 ended at 0.39 and 0.75 on mnist5k).
        _grid(std=[0.01, 0.03], learning_rate=[3e-2, 1e-1, 3e-1]),
    ),
    _es_method(
        "es-sep-cma",
        "sep_cma_es",
        "Sep-CMA-ES (evosax): diagonal covariance and step-size adaptation",
        {"optimizer": None},
        _grid(std=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3]),
    ),
    BenchmarkMethod(
        "le-pcn-antithetic",
        build_local_entropy,
        {**LE_PCN, "num_chains": 1, "antithetic": True},
        _GF_TAUS,
        "gradient-free",
        "local entropy, pCN with antithetic pairs: one pair of mirrored chains × 80 "
        "transitions, 2 forward evaluations each (162 an update)",
        gradient_free=True,
    ),
)
assert all(len(m.grid) == GRID_SIZE for m in BENCHMARK)
_BENCHMARK_BY_NAME = {m.name: m for m in BENCHMARK}
#: The benchmark's methods' names, in the order they run.
BENCHMARK_METHODS: tuple[str, ...] = tuple(_BENCHMARK_BY_NAME)
#: τ handed to the builders of methods whose grid has none (the first-order baselines,
#: whose builders do not read it); it is recorded with each run.
DEFAULT_TAU = 1e-5


def get_benchmark_method(name: str) -> BenchmarkMethod:
    """The record of benchmark method ``name``, else a ``ValueError`` listing them."""
    if name not in _BENCHMARK_BY_NAME:
        raise ValueError(
            f"methods: unknown benchmark method {name!r}; expected one of {BENCHMARK_METHODS}."
        )
    return _BENCHMARK_BY_NAME[name]


def resolve_point(
    method: str, point: Mapping[str, Any], updates: int, smoke: bool
) -> tuple[float, dict[str, Any]]:
    """``(τ, settings)`` of one grid point of a benchmark method, for ``updates`` updates.

    Example
    -------
    >>> tau, s = resolve_point("le-sgld", {"tau": 1e-4, "step_size": 3e-6}, 500, False)
    >>> tau, s["step_size"], s["num_samples"]
    (0.0001, 3e-06, 20)
    >>> resolve_point("hr-svi", {"tau": 1e-5, "learning_rate_per_tau": 0.5}, 500, False)[1][
    ...     "learning_rate"]
    5e-06
    >>> resolve_point("swa", {"learning_rate": 1e-6, "swa_start_fraction": 0.5}, 500, False)[1][
    ...     "swa_start"]
    250
    """
    record = get_benchmark_method(method)
    knobs = dict(point)
    tau = float(knobs.pop("tau", DEFAULT_TAU))
    base = {k: v for k, v in record.base.items() if not k.endswith("_per_tau")}
    per_tau = {k: v for k, v in record.base.items() if k.endswith("_per_tau")}
    per_tau.update({k: v for k, v in knobs.items() if k.endswith("_per_tau")})
    knobs = {k: v for k, v in knobs.items() if not k.endswith("_per_tau")}
    settings = table({**base, **knobs})(tau, smoke)
    for key, factor in per_tau.items():
        settings[key.removesuffix("_per_tau")] = factor * tau
    if "swa_start_fraction" in settings:
        settings["swa_start"] = int(settings.pop("swa_start_fraction") * updates)
    if "tau_final" in settings:  # τ decays geometrically to tau_final at the last update
        settings["tau_decay"] = (settings.pop("tau_final") / tau) ** (1.0 / updates)
    return tau, settings
