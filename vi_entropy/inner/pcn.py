"""Preconditioned Crank-Nicolson (pCN) Metropolis-Hastings, gradient-free.

For a target written as a Gaussian reference ``N(m, s²I)`` times ``e^{−Φ}`` (Cotter,
Roberts, Stuart & White, Statist. Sci. 28(3), 2013), one transition proposes

.. math::

    y' = m + \\sqrt{1 - \\rho^2}\\,(y - m) + \\rho\\, s\\, \\xi, \\qquad \\xi \\sim N(0, I),

and accepts it with probability ``min(1, exp(Φ(y) − Φ(y')))``.  The proposal is
reversible for the reference, so only ``Φ`` enters the acceptance and its rate does not
collapse as the dimension grows.  Inside local entropy the reference is the tilt
``N(x_k, τI)`` and ``Φ = f``: one forward evaluation per transition, no gradient.

The core is pure (:func:`pcn_proposal`, :func:`pcn_kernel`, :func:`rho_adaptation`, on
flat vectors); :class:`PCN` is the NumPyro ``MCMCKernel`` around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc_util import dual_averaging
from numpyro.infer.initialization import init_to_uniform

from vi_entropy import _validation as check
from vi_entropy.inner.gaussian_reference import (
    GaussianReferenceKernel,
    reference_energy,
    start_evals,
)
from vi_entropy.types import ChainBudget


class PCNState(NamedTuple):
    """State of :class:`PCN`.

    - **i** - iteration count.
    - **z** - current draw (a pytree of unconstrained values when the kernel has a model).
    - **potential_energy** - the target's potential ``U`` at ``z``.
    - **accept_prob** - acceptance probability of the last proposal.
    - **rho** - the proposal's ``ρ`` (adapted during warm-up, then fixed).
    - **adapt_state** - NumPyro's dual-averaging state of ``logit ρ``.
    - **rng_key** - random key for the next transition.
    - **pair**, **pair_potential** - with ``antithetic=True``: the two chains' flat points
      and their potentials (``z`` is then their midpoint, ``potential_energy`` the mean of
      the two); ``None`` otherwise.
    - **precond**, **moments** - with ``adapt_reference > 0``: the reference's variance per
      flat coordinate relative to ``s²`` (starts at 1), and the sum of ``((x − m)/s)²``
      over the transitions since the last refresh with their count; ``None`` otherwise.
    """

    i: Any
    z: Any
    potential_energy: Any
    accept_prob: Any
    rho: Any
    adapt_state: Any
    rng_key: Any
    pair: Any = None
    pair_potential: Any = None
    precond: Any = None
    moments: Any = None


#: The smallest reference variance an adapted reference keeps, relative to ``s²``.
MIN_PRECOND = 1e-2


def adapt_precond(precond: jax.Array, moments: tuple[Any, Any], weight: float) -> jax.Array:
    """The reference variances after an outer step: ``p ← (1 − a) p + a v``, ``v`` the
    mean of ``((x − m)/s)²`` over the step's draws, clipped to ``[MIN_PRECOND, 1]``; kept
    as they are when the step made no draw.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> p = adapt_precond(jnp.ones(2), (jnp.array([0.5, 40.0]), 10), 0.5)
    >>> [round(float(v), 3) for v in p]  # 0.5 · 1 + 0.5 · 0.05; 0.5 + 0.5 · 4, clipped
    [0.525, 1.0]
    """
    total, count = moments
    seen = total / jnp.maximum(count, 1)
    new = jnp.clip((1.0 - weight) * precond + weight * seen, MIN_PRECOND, 1.0)
    return jnp.where(count > 0, new, precond).astype(precond.dtype)


def pcn_proposal(rng_key: Any, x: jax.Array, loc: Any, scale: Any, rho: Any) -> jax.Array:
    """``m + √(1 − ρ²)(x − m) + ρ s ξ``: reversible for ``N(m, s²I)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> y = pcn_proposal(jax.random.PRNGKey(0), jnp.ones(3), 0.0, 1.0, 1.0)  # ρ = 1: a fresh draw
    >>> y.shape
    (3,)
    """
    xi = random.normal(rng_key, x.shape, x.dtype)
    return loc + jnp.sqrt(1.0 - rho**2) * (x - loc) + rho * scale * xi


def pcn_kernel(
    rng_key: Any,
    x: jax.Array,
    potential: jax.Array,
    potential_fn: Callable[[jax.Array], jax.Array],
    loc: Any,
    scale: Any,
    rho: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One pCN Metropolis-Hastings transition of ``π ∝ exp(−U)`` with reference ``N(m, s²I)``.

    ``Φ = U − ½|(·−m)/s|²``; accept ``y'`` with probability ``min(1, exp(Φ(x) − Φ(y')))``.
    A proposal whose potential is not finite is rejected.

    Parameters
    ----------
    rng_key : PRNGKey
    x : array, shape (d,)
        Current point.
    potential : scalar
        ``U(x)``.
    potential_fn : callable
        ``U`` of a flat vector (one evaluation per call).
    loc, scale : scalar or array
        Reference mean ``m`` and standard deviation ``s``.
    rho : scalar in (0, 1]
        Proposal parameter ``ρ``.

    Returns
    -------
    (x_new, potential_new, accept_prob)

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> U = lambda x: 0.5 * jnp.sum(x**2)  # the target is the reference: always accepted
    >>> x, pe, p = pcn_kernel(jax.random.PRNGKey(0), jnp.ones(2), 1.0, U, 0.0, 1.0, 0.5)
    >>> float(p)
    1.0
    """
    key_proposal, key_accept = random.split(rng_key)
    y = pcn_proposal(key_proposal, x, loc, scale, rho)
    pe_y = potential_fn(y)
    log_ratio = (potential - reference_energy(x, loc, scale)) - (
        pe_y - reference_energy(y, loc, scale)
    )
    ok = jnp.isfinite(pe_y) & ~jnp.isnan(log_ratio)
    accept_prob = jnp.where(ok, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0).astype(x.dtype)
    accept = random.uniform(key_accept, (), x.dtype) < accept_prob
    return jnp.where(accept, y, x), jnp.where(accept, pe_y, potential), accept_prob


def rho_adaptation(
    rho: float, target_accept_prob: float
) -> tuple[Callable[[], Any], Callable[[Any, Any], tuple[Any, Any]], Callable[[Any], Any]]:
    """Dual averaging (NumPyro's) of ``logit ρ`` towards a target acceptance probability.

    Returns ``(init, update, final)``: ``init() -> state``; ``update(accept_prob, state) ->
    (rho, state)``; ``final(state) -> rho`` (the averaged iterate, kept after warm-up).
    A larger ``ρ`` moves further and is accepted less often, as a larger step size is.

    Example
    -------
    >>> init, update, final = rho_adaptation(0.5, 0.25)
    >>> rho, state = update(0.0, init())  # nothing accepted: propose closer
    >>> bool(rho < 0.5)
    True
    """
    da_init, da_update = dual_averaging()
    prox = float(jnp.log(rho) - jnp.log1p(-rho)) if rho < 1 else 10.0

    def init() -> Any:
        return da_init(jnp.asarray(prox))

    def update(accept_prob: Any, state: Any) -> tuple[Any, Any]:
        state = da_update(target_accept_prob - accept_prob, state)
        return jax.nn.sigmoid(state[0]), state

    def final(state: Any) -> Any:
        return jax.nn.sigmoid(state[1])

    return init, update, final


class PCN(GaussianReferenceKernel):
    """Preconditioned Crank-Nicolson Metropolis-Hastings: gradient-free, dimension-robust.

    ``y' = m + √(1 − ρ²)(y − m) + ρ s ξ``, accepted with probability
    ``min(1, exp(Φ(y) − Φ(y')))``, ``Φ = U + log N(·; m, s²I)`` (Cotter et al. 2013).
    Works inside :class:`numpyro.infer.MCMC` (vectorized chains included) and as
    ``LocalEntropy(sampler="pcn")``, where the reference is ``N(x_k, τI)`` and ``Φ = f``.

    Parameters
    ----------
    model : callable, optional
        NumPyro model.  Exactly one of ``model`` and ``potential_fn`` must be given.
    potential_fn : callable, optional
        Potential energy ``z -> U(z)`` when no model is given.
    rho : float in (0, 1], default 0.2
        Initial ``ρ`` (``ρ = 1`` proposes independent draws of the reference).
    target_accept_prob : float in (0, 1), default 0.25
        Acceptance rate that warm-up adapts ``ρ`` towards (by dual averaging of
        ``logit ρ``, per chain); ``ρ`` is then kept.
    adapt_rho : bool, default True
        Adapt ``ρ`` during warm-up.
    rho_gain : float, default 0.0
        After warm-up, keep adapting: ``logit ρ ← logit ρ + rho_gain · (accept_prob −
        target_accept_prob)`` at every transition (Robbins-Monro with a constant gain).
        ``0`` keeps ``ρ`` fixed, which makes the chain a Markov chain; within local
        entropy the target moves every outer step, and a small gain (e.g. 0.05) lets
        ``ρ`` follow it at no cost in evaluations.
    reference_loc, reference_scale : float or 1-d array, optional
        ``m`` and ``s`` of the reference.  Default: ``N(x_k, τI)`` on a tilted model
        (:func:`~vi_entropy.tilt_model`), else ``N(0, I)`` in the unconstrained space.
        The closer the reference is to the target, the larger the ``ρ`` that is accepted.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.
    antithetic : bool, default False
        Run each chain as a pair: the second starts at the first's mirror image through
        the reference mean ``m`` and proposes with ``−ξ`` where the first proposes with
        ``ξ`` (and accepts with the same uniform).  Each of the two is a pCN chain of the
        target on its own; the draw reported is their midpoint, in which the reference's
        noise cancels and only the asymmetry of the two acceptances, driven by ``U``,
        moves it.  Its mean is the target's mean (each chain's is), with less variance
        when the target is close to the reference; it is not a draw of the target.
        Two potential evaluations per transition and per refresh.
    adapt_reference : float in [0, 1), default 0.0
        Precondition the proposal with the draws of earlier outer steps: at every refresh
        (a new centre or mini-batch), each chain's reference variance per unconstrained
        coordinate moves a fraction ``adapt_reference`` of the way to the mean of
        ``(x − m)²`` over its draws since the last refresh, within ``[0.01 s², s²]``.
        The reference is then ``N(m, s² diag(p))`` and ``Φ = U + log N(·; m, s² diag(p))``,
        so that each outer step's chain is an exact pCN chain of the same target; the
        directions the likelihood narrows get smaller moves, the others larger ones (``ρ``
        follows through ``rho_gain``).  ``0`` keeps the reference ``N(m, s²I)``.  Not with
        ``antithetic``.  For small models: on a network (50,890 weights, mnist5k) it lost
        27 points or more, since the spread of a few correlated draws underestimates the
        variances, which then fall to the floor (see ``docs/results.md``).

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(1.0, 0.5))
    >>> mcmc = MCMC(PCN(model), num_warmup=500, num_samples=4000, progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))
    >>> round(float(mcmc.get_samples()["x"].mean()), 1)
    1.0
    """

    _name = "PCN"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        rho: float = 0.2,
        target_accept_prob: float = 0.25,
        adapt_rho: bool = True,
        rho_gain: float = 0.0,
        reference_loc: Any = None,
        reference_scale: Any = None,
        init_strategy: Callable = init_to_uniform,
        antithetic: bool = False,
        adapt_reference: float = 0.0,
    ) -> None:
        super().__init__(model, potential_fn, reference_loc, reference_scale, init_strategy)
        self.antithetic = check.flag("antithetic", antithetic)
        self.adapt_reference = check.fraction("adapt_reference", adapt_reference)
        if self.adapt_reference > 0 and self.antithetic:
            raise ValueError("PCN: adapt_reference is not available with antithetic=True.")
        self.rho = check.unit_interval("rho", rho)
        self.target_accept_prob = check.open_unit_interval("target_accept_prob", target_accept_prob)
        self.adapt_rho = check.flag("adapt_rho", adapt_rho)
        self.rho_gain = check.positive_float("rho_gain", rho_gain, allow_zero=True)
        self._adaptation = rho_adaptation(self.rho, self.target_accept_prob)

    def _init_state(
        self, z: Any, pe: Any, key: Any, model_kwargs: Any, model_args: tuple = ()
    ) -> PCNState:
        dtype = jnp.result_type(pe)
        one = jnp.ones((), dtype)
        state = PCNState(
            jnp.array(0), z, pe, one, jnp.asarray(self.rho, dtype), self._adaptation[0](), key
        )
        if self.adapt_reference > 0:
            flat = ravel_pytree(z)[0]
            return state._replace(
                precond=jnp.ones_like(flat), moments=(jnp.zeros_like(flat), jnp.array(0))
            )
        if not self.antithetic:
            return state
        # The twin starts at the mirror image through the reference mean.
        x, potential_fn, unravel = self._flat_potential(z, model_args, model_kwargs)
        loc, _ = self.reference(z, model_kwargs)
        twin = 2.0 * loc - x
        pe_twin = potential_fn(twin)
        return state._replace(
            z=unravel(0.5 * (x + twin)),
            potential_energy=0.5 * (pe + pe_twin),
            pair=jnp.stack([x, twin]),
            pair_potential=jnp.stack([pe, pe_twin]),
        )

    def refresh(self, state: PCNState, model_args: tuple, model_kwargs: dict | None) -> PCNState:
        if self.adapt_reference > 0:
            state = state._replace(
                precond=adapt_precond(state.precond, state.moments, self.adapt_reference),
                moments=jax.tree.map(jnp.zeros_like, state.moments),
            )
        if not self.antithetic:
            return super().refresh(state, model_args, model_kwargs)
        model_kwargs = {} if model_kwargs is None else model_kwargs
        _, potential_fn, _ = self._flat_potential(state.z, model_args, model_kwargs)
        pair_potential = jax.vmap(potential_fn)(state.pair)  # both chains in one batch
        return state._replace(
            potential_energy=jnp.mean(pair_potential), pair_potential=pair_potential
        )

    def _move(
        self,
        key: Any,
        state: PCNState,
        x: jax.Array,
        potential_fn: Callable,
        loc: Any,
        scale: Any,
    ) -> tuple[Any, Any, Any, Any]:
        """One transition from ``x`` (``state.z`` flat): ``(x, potential, accept_prob, pair
        state)``."""
        if not self.antithetic:
            x, pe, accept_prob = pcn_kernel(
                key, x, state.potential_energy, potential_fn, loc, scale, state.rho
            )
            return x, pe, accept_prob, (None, None)
        key_proposal, key_accept = random.split(key)
        pair, pair_pe = state.pair, state.pair_potential
        xi = random.normal(key_proposal, pair.shape[1:], pair.dtype)
        c = jnp.sqrt(1.0 - state.rho**2)
        proposals = loc + c * (pair - loc) + state.rho * scale * jnp.stack([xi, -xi])
        pe_y = jax.vmap(potential_fn)(proposals)
        log_ratio = jax.vmap(
            lambda x, pe, y, pe_new: (
                (pe - reference_energy(x, loc, scale)) - (pe_new - reference_energy(y, loc, scale))
            )
        )(pair, pair_pe, proposals, pe_y)
        ok = jnp.isfinite(pe_y) & ~jnp.isnan(log_ratio)
        probs = jnp.where(ok, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0).astype(pair.dtype)
        accept = random.uniform(key_accept, (), pair.dtype) < probs  # one uniform for both
        pair = jnp.where(accept[:, None], proposals, pair)
        pair_pe = jnp.where(accept, pe_y, pair_pe)
        return 0.5 * (pair[0] + pair[1]), jnp.mean(pair_pe), jnp.mean(probs), (pair, pair_pe)

    def _sample_one(self, state: PCNState, model_args: tuple, model_kwargs: dict) -> PCNState:
        key, key_move = random.split(state.rng_key)
        x, potential_fn, unravel = self._flat_potential(state.z, model_args, model_kwargs)
        loc, s = self.reference(state.z, model_kwargs)
        adapted = self.adapt_reference > 0
        scale = s * jnp.sqrt(state.precond) if adapted else s
        x, pe, accept_prob, (pair, pair_pe) = self._move(
            key_move, state, x, potential_fn, loc, scale
        )
        moments = state.moments
        if adapted:  # the draw's spread relative to the tilt's own s
            total, count = moments
            moments = (total + jnp.square((x - loc) / s), count + 1)
        rho, adapt_state = state.rho, state.adapt_state
        if self.adapt_rho and self._num_warmup > 0:
            _, update, final = self._adaptation
            new_rho, new_adapt = update(accept_prob, adapt_state)
            # The last warm-up transition fixes ρ at the averaged iterate.
            new_rho = jnp.where(state.i == self._num_warmup - 1, final(new_adapt), new_rho)
            warm = state.i < self._num_warmup
            rho = jnp.where(warm, new_rho, rho).astype(state.rho.dtype)
            adapt_state = jax.tree.map(lambda a, b: jnp.where(warm, a, b), new_adapt, adapt_state)
        if self.rho_gain > 0:
            logit = jnp.log(rho) - jnp.log1p(-rho)
            followed = jax.nn.sigmoid(
                logit + self.rho_gain * (accept_prob - self.target_accept_prob)
            )
            after = state.i >= self._num_warmup if self.adapt_rho else True
            rho = jnp.where(after, followed, rho).astype(state.rho.dtype)
        return PCNState(
            state.i + 1,
            unravel(x),
            pe,
            accept_prob,
            rho,
            adapt_state,
            key,
            pair,
            pair_pe,
            state.precond,
            moments,
        )

    def evaluation_counts(
        self, state: PCNState, stats: Mapping[str, Any], budget: ChainBudget
    ) -> dict[str, jax.Array]:
        """One potential evaluation per transition and one per chain at the refresh (two
        each with ``antithetic``); no gradient (see :class:`~vi_entropy.types.ChainBudget`)."""
        per_chain = 2 if self.antithetic else 1
        transitions = budget.transitions + budget.warmup + budget.refreshes
        check = start_evals(budget) - budget.chains * budget.refreshes  # initialize_model's
        evals = per_chain * budget.chains * transitions + check
        return {"num_grad_evals": jnp.asarray(0), "num_potential_evals": jnp.asarray(evals)}

    def get_diagnostics_str(self, state: PCNState) -> str:
        return (
            f"acc. prob {float(jnp.mean(state.accept_prob)):.2f}, "
            f"rho {float(jnp.mean(state.rho)):.3g}"
        )
