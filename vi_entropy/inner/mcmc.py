"""NumPyro MCMC kernels run on the tilted model: vectorized chains, warm starts.

The kernel is built once on :func:`~vi_entropy.tilted.tilt_model` and initialized once
(``num_chains`` chains, vectorized exactly as ``MCMC(chain_method="vectorized")`` does).
Each outer step then

1. refreshes what the kernel state caches about the old target (``MCMCKernel.refresh``:
   potential energy and gradient for HMC/NUTS, the population's energies for SA),
2. runs ``num_samples × thinning`` transitions with the centre and ``τ`` passed as model
   keyword arguments (traced data: one compilation for the whole run),
3. returns the draws as flat unconstrained vectors, shape ``(chains, draws, d)``.

The warm-up runs inside the first outer step, in the same loop as its draws (the
kernel's transition is compiled once, as in NumPyro's ``MCMC.run``); the step sizes and
mass matrices it adapts are kept for the later steps. With ``readapt=True`` the kernel
is re-initialized and re-adapted every outer step instead.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.infer import HMC, NUTS
from numpyro.infer import SA as NumPyroSA
from numpyro.infer.mcmc import MCMCKernel

from vi_entropy import _validation as check
from vi_entropy._compile import normal
from vi_entropy.faults import Fault, flag
from vi_entropy.inner.averaging import moment_match, running_average
from vi_entropy.inner.base import Sampler
from vi_entropy.inner.elliptical_slice import EllipticalSlice
from vi_entropy.inner.pcn import PCN
from vi_entropy.inner.sa import SA
from vi_entropy.inner.sgld import SGLD, check_step_size
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import ChainBudget, Context, Draws

# Per-transition statistics read from kernel states when present, with the names ArviZ
# uses in its ``sample_stats`` group.
_STAT_FIELDS = {
    "accept_prob": "acceptance_rate",
    "diverging": "diverging",
    "num_steps": "n_steps",
    "potential_energy": "potential_energy",
    "energy": "energy",
    "grad_norm": "grad_norm",
    "rho": "rho",
    "num_evals": "n_evals",
    "capped": "slice_capped",
    "refused": "refused",
}


def default_sa_state_size(dim: int) -> int:
    """SA population size used by ``sampler="sa"``: ``min(2d, 64)``, at least 4.

    NumPyro's default, ``2d`` points each of dimension ``d``, is ``O(d²)`` memory and
    unusable for networks; a diagonal proposal needs far fewer points to estimate.
    """
    return int(max(4, min(2 * dim, 64)))


Rule = Callable[[str, object], object]


class KernelEntry(NamedTuple):
    """A sampler given by name: the kernel :func:`make_kernel` builds and its options.

    ``make_kernel`` builds ``kernel(tilted_model, **{**defaults(dim), **sampler_kwargs})``;
    :func:`check_sampler_kwargs` accepts the keyword arguments of ``kernel`` (but the
    model and the tilt's reference) and checks them by ``rules`` and, for the names
    ``rules`` does not have, by the options shared among the kernels.
    """

    kernel: type[MCMCKernel]
    #: ``dim -> options`` used unless given (``dim``: unconstrained coordinates).
    defaults: Callable[[int], dict[str, Any]] | None = None
    #: Checks of this kernel's options (those of ``_OPTION_RULES`` apply to the rest).
    rules: Mapping[str, Rule] | None = None


def _sa_defaults(dim: int) -> dict[str, Any]:
    # NumPyro's dense mass and 2d-point population are O(d²) memory.
    return {"dense_mass": False, "adapt_state_size": default_sa_state_size(dim)}


def _sgld_defaults(dim: int) -> dict[str, Any]:
    return {"step_size": "curvature"}


#: The kernel registry: local entropy's MCMC samplers by name.  A new sampler is its module
#: and its entry here; ``SAMPLERS``, :func:`make_kernel`, :func:`check_sampler_kwargs`, the
#: error messages and ``LocalEntropy(sampler=name)`` all read this table.
KERNELS: dict[str, KernelEntry] = {
    "nuts": KernelEntry(NUTS),
    "hmc": KernelEntry(HMC),
    "sa": KernelEntry(SA, _sa_defaults, {"dense_mass": check.flag}),
    # Local entropy's default step: from the curvature at the first point.
    "sgld": KernelEntry(SGLD, _sgld_defaults, {"step_size": check_step_size}),
    "pcn": KernelEntry(PCN, None, {"antithetic": check.flag, "adapt_reference": check.fraction}),
    "elliptical_slice": KernelEntry(EllipticalSlice),
}
#: Local entropy's samplers by name: the registry's kernels and importance sampling.
SAMPLERS = (*KERNELS, "importance")
# Options a sampler given by name does not take from the user: within local entropy the
# reference of pCN and elliptical slice is the tilt N(x_k, τI).
_FIXED_OPTIONS = ("reference_loc", "reference_scale")


def _options_of(cls: type) -> tuple[str, ...]:
    """Keyword arguments of a kernel class other than the model (which the scheme sets)."""
    params = inspect.signature(cls.__init__).parameters
    fixed = ("self", "model", "potential_fn", *_FIXED_OPTIONS)
    return tuple(p for p in params if p not in fixed)


def _tree_depth(name: str, value: object) -> object:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}.")
        return tuple(check.count(f"{name}[{i}]", v) for i, v in enumerate(value))
    return check.count(name, value)


def _optional(rule: Callable) -> Callable:
    return lambda name, value: None if value is None else rule(name, value)


def _bool_or_groups(name: str, value: object) -> object:
    """NumPyro's ``dense_mass``: a bool, or a list of tuples of site names."""
    return value if isinstance(value, list) else check.flag(name, value)


# Checks of the options several kernels share (a kernel's own: its entry's ``rules``).
_OPTION_RULES: dict[str, Rule] = {
    "step_size": check.positive_float,
    "target_accept_prob": check.open_unit_interval,
    "trajectory_length": _optional(check.positive_float),
    "num_steps": _optional(check.count),
    "max_tree_depth": _tree_depth,
    "adapt_step_size": check.flag,
    "adapt_mass_matrix": check.flag,
    "dense_mass": _bool_or_groups,
    "find_heuristic_step_size": check.flag,
    "forward_mode_differentiation": check.flag,
    "regularize_mass_matrix": check.flag,
    "init_strategy": lambda n, v: check.function(n, v, "a NumPyro init strategy"),
    "kinetic_fn": _optional(lambda n, v: check.function(n, v, "a kinetic energy function")),
    "adapt_state_size": _optional(lambda n, v: check.count(n, v, minimum=2)),
    "noise_scale": lambda n, v: check.positive_float(n, v, allow_zero=True),
    "batch_size": _optional(check.count),
    "rho": check.unit_interval,
    "adapt_rho": check.flag,
    "rho_gain": lambda n, v: check.positive_float(n, v, allow_zero=True),
    "max_shrinks": lambda n, v: check.count(n, v, minimum=0),
    "step_scale": check.positive_float,
}


def check_sampler_kwargs(sampler: str, sampler_kwargs: object) -> dict[str, Any]:
    """Validate ``sampler_kwargs`` for a sampler given by name; return them as a dict.

    Unknown option names and values of the wrong type or range raise an error that
    names the option, the value and what was expected.
    """
    if sampler_kwargs is None:
        return {}
    if not isinstance(sampler_kwargs, Mapping):
        raise TypeError(
            f"sampler_kwargs: expected a dict of options, got {type(sampler_kwargs).__name__}."
        )
    kw = dict(sampler_kwargs)
    entry = None if sampler == "importance" else KERNELS[sampler]
    allowed = ("batch_size",) if entry is None else _options_of(entry.kernel)
    unknown = sorted(set(kw) - set(allowed), key=str)
    if unknown:
        raise ValueError(
            f"sampler_kwargs: sampler={sampler!r} takes only {sorted(allowed)}, got {unknown}."
        )
    own = entry.rules if entry is not None and entry.rules is not None else {}
    rules = {**_OPTION_RULES, **own}
    for name, value in kw.items():
        rule = rules.get(name)
        if rule is not None:
            rule(f"sampler_kwargs[{name!r}]", value)
    return kw


def make_kernel(
    sampler: str | MCMCKernel | Callable[[Callable], MCMCKernel],
    model: Callable,
    tilted_model: Callable,
    dim: int,
    sampler_kwargs: Mapping[str, Any],
    tau0: float | None,
) -> MCMCKernel:
    """Build the kernel that samples ``tilted_model``.

    ``sampler`` is a name of the registry :data:`KERNELS` (``"nuts"``, ``"hmc"``,
    ``"sa"``, ``"sgld"``, ``"pcn"``, ``"elliptical_slice"``, ...), a kernel built
    on ``model`` (rebound with ``MCMCKernel.wrap_model``), or a factory
    ``model -> MCMCKernel`` such as ``functools.partial(NUTS, max_tree_depth=6)``.

    Parameters
    ----------
    sampler : str, MCMCKernel or callable
        As ``LocalEntropy``'s ``sampler``.
    model : callable
        The user's model (a kernel given as an instance must be built on it).
    tilted_model : callable
        Its tilted model (:func:`~vi_entropy.tilt_model`).
    dim : int
        Number of unconstrained coordinates (sets SA's default population size).
    sampler_kwargs : dict
        Options of a sampler given by name (over its entry's ``defaults``).
    tau0 : float or None
        Constant ``τ``, ``None`` for a schedule (kept for callers; SGLD's default step
        comes from the curvature of the tilted potential, which holds ``1/τ``).

    Returns
    -------
    MCMCKernel
        A kernel whose model is ``tilted_model``.

    Example
    -------
    >>> import numpyro, numpyro.distributions as dist
    >>> from vi_entropy import tilt_model
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> kernel = make_kernel("sgld", model, tilt_model(model), 1, {}, 0.01)
    >>> type(kernel).__name__, kernel.step_size  # from the curvature at the first point
    ('SGLD', 'curvature')
    >>> make_kernel("sgld", model, tilt_model(model), 1, {"step_size": 1e-3}, 0.01).step_size
    0.001
    """
    kw = dict(sampler_kwargs)
    if isinstance(sampler, str):
        entry = KERNELS.get(sampler.lower())
        if entry is None:
            raise ValueError(
                f"sampler: unknown name {sampler!r}; expected one of "
                f"{', '.join(map(repr, SAMPLERS))}, an MCMCKernel or a factory "
                "model -> MCMCKernel."
            )
        defaults = entry.defaults(dim) if entry.defaults is not None else {}
        return entry.kernel(tilted_model, **{**defaults, **kw})
    if kw:
        raise ValueError("sampler_kwargs: only used with a sampler given by name.")
    if isinstance(sampler, NumPyroSA) and not isinstance(sampler, SA):
        sampler = SA.from_numpyro(sampler)
    if isinstance(sampler, MCMCKernel):
        if sampler.model is not model:
            raise ValueError(
                "sampler: the kernel must be built on the same model as the scheme "
                f"(got a kernel of model {sampler.model!r}); or pass a factory such as "
                "functools.partial(NUTS, max_tree_depth=6)."
            )
        try:
            return sampler.wrap_model(lambda _: tilted_model)
        except NotImplementedError as err:
            raise TypeError(
                f"sampler: {type(sampler).__name__} cannot be rebound to the tilted model "
                "(no `wrap_model`); pass a factory model -> kernel instead, e.g. "
                f"functools.partial({type(sampler).__name__}, ...)."
            ) from err
    if callable(sampler):
        kernel = sampler(tilted_model)
        if isinstance(kernel, NumPyroSA) and not isinstance(kernel, SA):
            kernel = SA.from_numpyro(kernel)
        if not isinstance(kernel, MCMCKernel):
            raise TypeError(
                f"sampler: the factory returned {type(kernel).__name__}, expected an MCMCKernel."
            )
        return kernel
    raise TypeError(
        "sampler: expected a name, an MCMCKernel or a factory model -> MCMCKernel, "
        f"got {type(sampler).__name__}."
    )


class MCMCSampler(Sampler):
    """Vectorized chains of a NumPyro kernel on the tilted posterior, warm-started.

    Parameters
    ----------
    kernel : MCMCKernel
        A kernel whose model is ``tilted.tilted_model`` (see :func:`make_kernel`).
    tilted : TiltedPosterior
        The flat view of the model (set up).
    num_chains, num_samples, num_warmup, thinning : int
        Chains; draws kept per chain and outer step; warm-up transitions (run once at
        :meth:`init`, or every outer step with ``readapt``); keep every ``thinning``-th.
    readapt : bool
        Re-initialize and re-adapt the kernel at every outer step.
    sharding : BatchSharding, optional
        Splits the chains over devices (see :mod:`vi_entropy.sharding`); default: one
        device.
    averaging : {"arithmetic", "exponential"}, default "arithmetic"
        How the draws estimate the mean (:func:`~vi_entropy.inner.averaging.moment_match`).
    ema_decay : float, default 0.75
        ``ρ`` of the exponential average.

    Notes
    -----
    Local entropy's inner step (:class:`~vi_entropy.types.InnerStep`) for every MCMC
    kernel: ``init`` starts the chains from ``N(x_0, τI)`` (the kernel initialized, not
    yet warmed up); ``step`` runs what is left of the warm-up (all of it at the first
    step), refreshes the kernel state for the new centre, draws, and returns
    ``(mean, state, info, draws)``, with the exact gradient and potential evaluations of
    the step (its warm-up included) in ``info``; ``sample`` returns its
    ``(state, Draws, counts)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import TiltedPosterior
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> tp = TiltedPosterior(model)
    >>> tp.setup(jax.random.PRNGKey(0), (), {})
    >>> kernel = make_kernel("sgld", model, tp.tilted_model, tp.dim, {}, 0.5)
    >>> sampler = MCMCSampler(kernel, tp, num_chains=2, num_samples=10, num_warmup=5)
    >>> centre, key = jnp.ones(1), jax.random.PRNGKey(1)
    >>> ctx = Context((), {})
    >>> state = sampler.init(key, centre, 0.5, ctx)
    >>> mean, state, info, draws = sampler.step(state, key, centre, 0.5, ctx)
    >>> draws.values.shape, mean.shape, int(info["num_grad_evals"])  # 2 × (5 + 10 + 2 × 3)
    ((2, 10, 1), (1,), 42)
    """

    #: Per-step diagnostics computed on the host from the draws (see
    #: :func:`~vi_entropy.observers.chain_diagnostics`).
    draw_diagnostics = ("max_rhat", "min_ess")

    def __init__(
        self,
        kernel: MCMCKernel,
        tilted: TiltedPosterior,
        num_chains: int,
        num_samples: int,
        num_warmup: int,
        thinning: int = 1,
        readapt: bool = False,
        sharding: BatchSharding | None = None,
        averaging: str = "arithmetic",
        ema_decay: float = 0.75,
    ) -> None:
        # NumPyro kernels set closures (and wrap their sampler in `vmap`) when initialized,
        # so every `init` works on a fresh shallow copy of this never-initialized kernel.
        self.base_kernel = kernel
        self.kernel = kernel
        self.tilted = tilted
        self.num_chains = num_chains
        self.num_samples = num_samples
        self.num_warmup = num_warmup
        self.thinning = thinning
        self.readapt = readapt
        self.sharding = sharding or BatchSharding(None)
        self.averaging = averaging
        self.ema_decay = ema_decay
        # A subsampled plate needs a fixed batch within a deterministic-potential kernel;
        # SGLD draws its own fresh batch every step.
        self.fresh_batches = isinstance(kernel, SGLD)

    # -- helpers --------------------------------------------------------------------------
    def _kwargs(
        self, model_kwargs: Mapping[str, Any], centre: Any, tau: Any, batch_key: Any
    ) -> dict:
        key = batch_key if self._batch_fixed else None
        return self.tilted.model_kwargs(model_kwargs, centre, tau, key)

    @property
    def _batch_fixed(self) -> bool:
        """Whether the chains see one mini-batch per outer step (a subsampled plate and
        a deterministic-potential kernel)."""
        return bool(self.tilted.subsamples) and not self.fresh_batches

    def _refreshes(self, warmup: Any) -> Any:
        """Refreshes per chain in a step: one, two with a warm-up (see
        :meth:`_transitions`)."""
        if self.readapt or _none(warmup):
            return 1
        return 1 + (jnp.asarray(warmup) > 0).astype(jnp.int32)

    def _split(self, tree: Any) -> Any:
        """Chains (leading axis of every per-chain array) split over the devices."""
        return self.sharding.constrain(tree, self.num_chains)

    def _refresh(self, state: Any, model_args: tuple, kw: dict) -> Any:
        # Recompute what the state caches about the previous target, chain by chain.
        state = jax.vmap(lambda s: self.kernel.refresh(s, model_args, kw))(self._split(state))
        return self._split(state)

    def _advance(self, state: Any, n: int, model_args: tuple, kw: dict) -> Any:
        """Run ``n`` transitions, keeping nothing (the warm-up of a kernel whose state does
        not count its transitions, in :meth:`init`)."""
        if n == 0:  # skip tracing the kernel for an empty loop
            return state
        return lax.fori_loop(0, n, lambda _, s: self.kernel.sample(s, model_args, kw), state)

    def _warmup_left(self, state: Any) -> Any:
        """Warm-up transitions still to run: those of ``num_warmup`` the state's own
        transition counter ``i`` (NumPyro's convention: a kernel adapts while
        ``i < num_warmup``) has not reached; all of them after a re-initialization; none
        for a kernel whose state has no counter (its warm-up ran in :meth:`init`)."""
        if self.readapt:
            return self.num_warmup
        i = getattr(state, "i", None)
        if i is None or self.num_warmup == 0:
            return 0
        return jnp.maximum(self.num_warmup - jnp.min(i), 0).astype(jnp.int32)

    def _transitions(
        self,
        state: Any,
        n: int,
        model_args: tuple,
        kw: dict,
        warmup: Any,
        refresh: bool,
        average: Any = None,
        acc: Any = None,
    ) -> tuple[Any, Any, jax.Array, jax.Array]:
        """Run ``warmup`` transitions, refresh the state for this step's target (if
        ``refresh``), then ``n`` kept transitions (each ``thinning`` kernel steps).

        A step with a warm-up refreshes twice: before it (kept only with a fixed
        mini-batch per step, a subsampled plate, whose energies were of another batch)
        and after it.

        One loop holds the kernel's transition once, whatever the warm-up (a traced
        count) and thinning: a first outer step compiles the kernel once, with its
        warm-up inside, as NumPyro's ``MCMC.run`` does.

        Returns the state, then the draws ``(chains, n, d)`` and their statistics; or,
        given a running ``average`` (see :func:`~vi_entropy.inner.averaging.running_average`)
        and its accumulator ``acc``, the accumulator with each draw folded into it instead
        of kept, so memory stays ``O(chains × d)`` whatever ``n``; then the evaluation
        counts of the transitions not kept (warm-up, thinning; see
        :func:`_transition_evals`), and the chains' positions before the first kept
        transition (to tell a stuck chain).
        """
        ravel = jax.vmap(self.tilted.ravel)
        renew = partial(self._refresh, model_args=model_args, kw=kw)
        # No warm-up this step, known when tracing (none configured, or a kernel that
        # warmed up in init): plain kernel steps after the refresh.
        plain = _none(warmup)
        if refresh:
            # The refresh for this step's target; with a warm-up to run (a traced count),
            # it is kept only for a fixed mini-batch (the state's energies are of another
            # batch), and the loop refreshes again when the warm-up ends.
            refreshed = renew(state)
            if plain:
                state = refreshed
            else:
                keep = (warmup == 0) | self._batch_fixed
                state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), refreshed, state)

        def warmed_up(s: Any, start: Any) -> tuple[Any, Any]:
            # The end of a warm-up: the refresh, and where the kept transitions start.
            return (renew(s) if refresh else s), ravel(s.z)

        def transition(carry: tuple, _: Any, length: Any, at: Any) -> tuple:
            # The j-th kernel step of a kept draw's ``length``; ``at``: the warm-up's end.
            j, s, skipped, start = carry
            s, start = lax.cond(j == at, warmed_up, lambda s, start: (s, start), s, start)
            s = self.kernel.sample(s, model_args, kw)
            ev = _transition_evals(self.kernel, s).astype(skipped.dtype)
            return j + 1, s, skipped + jnp.where(j < length - 1, ev, 0), start

        def kept(carry: tuple, k: Any) -> tuple:
            s, a, start = carry
            if plain and self.thinning == 1:
                s = self.kernel.sample(s, model_args, kw)
                skipped = jnp.zeros(2, jnp.int32)
            else:
                first = k == 0
                length = self.thinning + jnp.where(first, warmup, 0)
                at = jnp.where(first & (warmup > 0), warmup, -1)
                step = partial(transition, _=None, length=length, at=at)
                init = (jnp.int32(0), s, jnp.zeros(2, jnp.int32), start)
                _, s, skipped, start = lax.while_loop(lambda c: c[0] < length, step, init)
            y = ravel(s.z)
            if average is None:
                return (s, a, start), (y, _stats(s), skipped)
            return (s, average.update(a, y), start), (_stats(s), skipped)

        start = ravel(state.z)
        carry = (*self._split((state, acc)), start)
        (state, acc, start), out = lax.scan(kept, carry, jnp.arange(n))
        state, acc = self._split((state, acc))
        # scan stacks draws first: (draws, chains, ...) -> (chains, draws, ...)
        swap = partial(jax.tree.map, lambda v: jnp.swapaxes(v, 0, 1))
        if average is None:
            values, stats, skipped = out
            return state, (swap(values), swap(stats)), jnp.sum(skipped, axis=0), start
        stats, skipped = out
        return state, (acc, swap(stats)), jnp.sum(skipped, axis=0), start

    # -- the inner step ------------------------------------------------------------------
    def init(self, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context) -> Any:
        """Start ``num_chains`` chains from ``N(centre, τI)``: the kernel's initial state.

        The warm-up runs inside the first :meth:`step` (its first ``num_warmup``
        transitions, then the draws), so that the kernel's transition is compiled once.
        Before that step, the state's adapted fields (step size, mass matrix, pCN's ``ρ``)
        hold the kernel's initial values; ``z`` and the cached energies are meaningful.
        A kernel whose state does not count its transitions (no field ``i``) warms up
        here instead.
        """
        key_init, key_kernel = random.split(rng_key)
        start = centre + jnp.sqrt(tau) * normal(
            key_init, (self.num_chains, centre.shape[0]), centre.dtype
        )
        kw = self._kwargs(ctx.kwargs, centre, tau, ctx.batch_key)
        init_params = jax.vmap(self.tilted.unravel)(self._split(start))
        state = self._initialize(key_kernel, init_params, ctx.args, kw)
        if getattr(state, "i", None) is None:
            state = self._split(self._advance(state, self.num_warmup, ctx.args, kw))
        return state

    def _initialize(self, rng_key: Any, init_params: Any, model_args: tuple, kw: dict) -> Any:
        """Initialize a fresh copy of the kernel at ``init_params`` (not yet warmed up)."""
        self.kernel = copy.copy(self.base_kernel)
        keys = self._split(random.split(rng_key, self.num_chains))
        state = self.kernel.init(keys, self.num_warmup, self._split(init_params), model_args, kw)
        return self._split(state)

    def step(
        self, state: Any, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context
    ) -> tuple[jax.Array, Any, dict[str, jax.Array], Draws | None]:
        """One outer step: warm up (the first step, or every step with ``readapt``),
        refresh the cached energies for the new target, draw ``num_samples`` per chain,
        average.

        Without ``ctx.with_draws`` each draw is folded into a running average as it is
        made (:func:`~vi_entropy.inner.averaging.running_average`), so memory is
        ``O(chains × d)``; the mean agrees with that of the kept draws up to rounding.
        """
        kw = self._kwargs(ctx.kwargs, centre, tau, ctx.batch_key)
        if self.readapt:  # a fresh kernel at the chains' positions, warmed up below
            state = self._initialize(rng_key, state.z, ctx.args, kw)
        warmup = self._warmup_left(state)
        run = partial(
            self._transitions,
            state,
            self.num_samples,
            ctx.args,
            kw,
            warmup,
            refresh=not self.readapt,
        )
        if ctx.with_draws:
            state, (values, stats), unkept, start = run()
            draws = Draws(values, None, stats)
            mean = moment_match(draws, centre, self.averaging, self.ema_decay)
            fault = _faults(draws, start)
        else:
            average = running_average(self.averaging, self.ema_decay)
            acc = average.init(jnp.broadcast_to(centre, (self.num_chains, centre.shape[0])))
            state, (acc, stats), unkept, start = run(average=average, acc=acc)
            mean = average.result(acc, self.num_samples)
            draws = Draws(None, None, stats)
            end = jax.vmap(self.tilted.ravel)(state.z)
            # A non-finite draw makes the running average non-finite, and only one does.
            fault = _faults(draws, start, end) | flag(
                ~jnp.all(jnp.isfinite(mean)), Fault.NONFINITE_DRAWS
            )
        counts = self._counts(state, stats, warmup, unkept, self._refreshes(warmup))
        info = {**counts, **_summarize(stats), "fault": fault}
        return mean, state, info, draws if ctx.with_draws else None

    def warnings(self, info: Mapping[str, Any], step: int) -> dict[str, str]:
        """SGLD refused proposals with a non-finite potential or gradient (once per run)."""
        refused = int(info.get("num_refused", 0))
        if refused <= 0 or bool(info.get("rejected", False)):  # a rejection says it all
            return {}
        total = self.num_chains * self.num_samples * self.thinning
        return {
            "refused": (
                f"LocalEntropy: at outer step {step}, SGLD refused {refused} of {total} "
                "proposals whose potential or gradient was not finite; those chains stayed "
                "where they were. A few are harmless; if info['num_refused'] stays high, "
                "lower the step (sampler_kwargs={'step_scale': ...} or {'step_size': ...}) "
                "or tau. Shown once per run."
            )
        }

    def _counts(
        self,
        state: Any,
        stats: Mapping[str, jax.Array],
        warmup: Any = 0,
        unkept: Any = 0,
        refreshes: Any = 1,
    ) -> dict[str, jax.Array]:
        """Potential/gradient evaluations of this outer step, all chains.

        ``warmup`` is the number of warm-up transitions the step ran per chain (the
        first step's, or every step's with ``readapt``); ``unkept`` holds the counts of
        :func:`_transition_evals` for the transitions whose statistics were not kept
        (warm-up, thinning); ``refreshes`` those of the cached energies per chain.  Exact for HMC/NUTS (every
        leapfrog step, thinned and warm-up transitions included, plus one evaluation per
        chain at the refreshed start point) and for the kernels that count their own
        (``evaluation_counts``, see :class:`~vi_entropy.types.ChainBudget`): SA, SGLD,
        pCN and elliptical slice; ``-1`` for other kernels.  With ``readapt`` they are
        lower bounds: one value-and-gradient per chain
        for NumPyro's ``initialize_model`` is counted, but its trace of the model and the
        step-size search of HMC/NUTS warm-up (a few evaluations per chain) are not.
        These are the evaluations each chain needs; vectorized chains run in lockstep,
        so the device may evaluate more (every chain runs as many leapfrog steps as the
        longest).
        """
        c, s = self.num_chains, self.num_samples * self.thinning
        init = c if self.readapt else 0  # initialize_model's value-and-gradient
        unkept = jnp.broadcast_to(jnp.asarray(unkept, jnp.int32), (2,))
        if "n_steps" in stats:  # HMC/NUTS: every leapfrog step, + refresh / init
            grads = jnp.sum(stats["n_steps"]) + unkept[0] + c * refreshes + init
            return {"num_grad_evals": grads, "num_potential_evals": grads}
        counter = getattr(self.kernel, "evaluation_counts", None)
        if counter is not None:  # our kernels count their own (see ChainBudget)
            return counter(
                state, stats, ChainBudget(c, s, warmup, init, self.readapt, unkept, refreshes)
            )
        return {"num_grad_evals": jnp.asarray(-1), "num_potential_evals": jnp.asarray(-1)}


def _none(warmup: Any) -> bool:
    """Whether a step's warm-up is known, when tracing, to be empty."""
    return isinstance(warmup, int) and warmup == 0


def _transition_evals(kernel: Any, state: Any) -> jax.Array:
    """Variable evaluation counts of the last transition of vectorized chains.

    ``[logical, executed]``: NUTS/HMC's leapfrog steps summed over chains (twice); a
    kernel's own ``transition_evals`` (elliptical slice: its evaluations summed over
    chains, and ``chains × max`` over chains, what lockstep chains execute); zeros for
    kernels with fixed counts.
    """
    own = getattr(kernel, "transition_evals", None)
    if own is not None:
        return own(state)
    steps = getattr(state, "num_steps", None)
    if steps is None:
        return jnp.zeros(2, jnp.int32)
    total = jnp.sum(steps).astype(jnp.int32)
    return jnp.stack([total, total])


def _stats(state: Any) -> dict[str, jax.Array]:
    """Per-chain statistics of a (vectorized) kernel state, ArviZ names."""
    out = {}
    for field, name in _STAT_FIELDS.items():
        if hasattr(state, field) and getattr(state, field) is not None:
            out[name] = getattr(state, field)
    adapt = getattr(state, "adapt_state", None)
    if adapt is not None and hasattr(adapt, "step_size"):
        out["step_size"] = adapt.step_size
    elif isinstance(getattr(state, "step_size", None), jax.Array):  # SGLD's "curvature"
        out["step_size"] = state.step_size
    return out


def _faults(draws: Draws, start: jax.Array | None, end: jax.Array | None = None) -> jax.Array:
    """Fault bits of one step's draws (see :mod:`vi_entropy.faults`); ``start`` holds
    the chains' positions before the step and ``end`` after it (when the draws were
    averaged as they came, ``draws.values`` is ``None``)."""
    fault = jnp.zeros((), jnp.int32)
    if draws.values is not None:
        fault = flag(~jnp.all(jnp.isfinite(draws.values)), Fault.NONFINITE_DRAWS)
    if "diverging" in draws.stats and start is not None:
        # A chain whose every transition diverged and that never left its start has
        # only its old position to offer (NUTS can diverge and still move: not a fault).
        diverged = jnp.all(draws.stats["diverging"], axis=1)
        if draws.values is not None:
            stayed = jnp.all(draws.values == start[:, None, :], axis=(1, 2))
        else:
            stayed = jnp.all(end == start, axis=1)
        fault = fault | flag(jnp.any(diverged & stayed), Fault.DIVERGENT_CHAIN)
    if "refused" in draws.stats:
        # SGLD refuses a proposal with a non-finite potential or gradient; a chain that
        # refused every proposal of the step's last quarter is stuck (e.g. it blew up to
        # where every move overflows).
        refused = draws.stats["refused"]
        last = max(1, refused.shape[1] // 4)
        fault = fault | flag(jnp.any(jnp.all(refused[:, -last:], axis=1)), Fault.DIVERGENT_CHAIN)
    return fault


# Per-draw statistic -> (its per-outer-step summary in ``info``, how it is reduced).
_SUMMARIES = {
    "acceptance_rate": ("acceptance_rate", jnp.mean),
    "diverging": ("num_divergent", jnp.sum),
    "n_steps": ("mean_n_steps", jnp.mean),
    "step_size": ("step_size", jnp.mean),
    "rho": ("rho", jnp.mean),
    "slice_capped": ("num_slice_capped", jnp.sum),
    "refused": ("num_refused", jnp.sum),
    "potential_energy": ("mean_potential_energy", jnp.mean),
}


def _summarize(s: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-outer-step summaries of the inner draws' statistics ``s``."""
    return {name: reduce(s[stat]) for stat, (name, reduce) in _SUMMARIES.items() if stat in s}
