"""Stochastic-gradient Langevin dynamics (SGLD) as a NumPyro ``MCMCKernel``.

One transition, with a fresh mini-batch ``B_t`` for every ``numpyro.plate`` that sets
``subsample_size`` (Welling & Teh 2011; the inner loop of Entropy-SGD, the paper's
Algorithm 4 when run on the tilted posterior):

.. math::

    z_{t+1} = z_t - \\eta_t \\nabla U_{B_t}(z_t) + s \\sqrt{2 \\eta_t}\\, \\xi_t,
    \\qquad \\xi_t \\sim N(0, I),

with step size ``η_t`` (a float, or a schedule ``t -> η_t``) and noise scale ``s``
(``s = 1`` is Langevin dynamics for ``exp(-U)``; Entropy-SGD's "thermal noise" uses
``s < 1``, which samples a colder density).  There is no Metropolis correction: the
draws are biased by ``O(η)``, so keep ``η`` small against the curvature of ``U``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax, random
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.hmc_util import IntegratorState, warmup_adapter
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import potential_energy
from numpyro.util import is_prng_key

from vi_entropy import _validation as check
from vi_entropy.inner.base import ModelKernel
from vi_entropy.types import ChainBudget

SGLDState = namedtuple(
    "SGLDState",
    [
        "i",
        "z",
        "potential_energy",
        "grad_norm",
        "rng_key",
        "adapt_state",
        "z_grad",
        "step_size",
        "refused",
        "direction",
    ],
    defaults=(None, None, None, None, None),
)
"""State of :class:`SGLD`.

- **i** - iteration count.
- **z** - current draw (a pytree of unconstrained values when the kernel has a model).
- **potential_energy** - mini-batch potential at ``z`` (on the batch its gradient used).
- **grad_norm** - Euclidean norm of that gradient (a diagnostic).
- **rng_key** - random key for the next transition.
- **adapt_state** - NumPyro's ``HMCAdaptState`` (step size, diagonal inverse mass
  matrix, dual-averaging and Welford states) when the step size is adapted
  (``step_size=None``), else ``None``.
- **z_grad** - the flat gradient at ``z``, from which the next proposal is made.
- **step_size** - with ``step_size="curvature"``, the chain's ``η`` (fixed at ``init``).
- **refused** - whether the last transition refused its proposal (a non-finite potential
  or gradient there): the chain stayed at ``z``.
- **direction** - with ``step_size="curvature"``, the power iteration's unit vector (the
  stiffest direction found so far), from which :meth:`SGLD.refresh` goes on.

Example: ``SGLD(model).init(jax.random.PRNGKey(0), 0, {"x": jnp.zeros(())})`` is
``SGLDState(i=0, z={"x": 0.0}, ...)``.
"""


# Relative size of the probe that estimates the curvature at the first draw, which sets
# the first step size of the warm-up.
_PROBE = 1e-3
#: Power iterations (Hessian-vector products) behind ``step_size="curvature"`` at init,
#: and at each refresh (warm-started, by differences of gradients).
POWER_ITERATIONS = 20
REFRESH_ITERATIONS = 2
#: The step sizes SGLD accepts by name.
STEP_SIZE_RULES = ("curvature",)


def top_curvature(
    fn: Callable,
    flat: jax.Array,
    key: Any,
    iterations: int = POWER_ITERATIONS,
    start: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Largest absolute eigenvalue of the Hessian of ``fn`` at ``flat``, by power
    iteration, and its unit eigenvector.

    ``iterations`` Hessian-vector products (forward-over-reverse, about two gradients
    each) from ``start`` (a unit vector, e.g. an earlier estimate), else from a random
    direction drawn with ``key``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> fn = lambda x: 0.5 * jnp.sum(jnp.array([1.0, 4.0, 9.0]) * x**2)
    >>> value, vector = top_curvature(fn, jnp.zeros(3), jax.random.PRNGKey(0))
    >>> round(float(value), 3), [round(abs(float(v)), 3) for v in vector]
    (9.0, [0.0, 0.0, 1.0])
    """
    grad = jax.grad(fn)

    def hvp(v: jax.Array) -> jax.Array:
        return jax.jvp(grad, (flat,), (v,))[1]

    if start is None:
        v = random.normal(key, flat.shape, flat.dtype)
        v = v / jnp.linalg.norm(v)
    else:
        v = start

    def body(_: Any, carry: tuple) -> tuple:
        v, _ = carry
        w = hvp(v)
        norm = jnp.linalg.norm(w)
        ok = jnp.isfinite(norm) & (norm > 0)
        return jnp.where(ok, w / jnp.where(ok, norm, 1), v), norm

    # |H v| for the unit v of the last iteration: λ once v has converged.
    v, value = lax.fori_loop(0, iterations, body, (v, jnp.zeros((), flat.dtype)))
    return value, v


class SGLD(ModelKernel):
    """Stochastic-gradient Langevin dynamics, with a fresh mini-batch at every step.

    ``z ← z − η ∇U_B(z) + s √(2η) ξ``.  Works inside :class:`numpyro.infer.MCMC`
    (vectorized chains included) and as the inner sampler of
    :class:`~vi_entropy.LocalEntropy`, where it is the paper's Algorithm 4
    (Entropy-SGD's inner loop) applied to the tilted posterior.

    Parameters
    ----------
    model : callable, optional
        NumPyro model.  Exactly one of ``model`` and ``potential_fn`` must be given.
        Plates with ``subsample_size`` draw a new mini-batch at every step (the
        potential then scales the likelihood by ``N / B``, an unbiased estimate).
    potential_fn : callable, optional
        Potential energy ``z -> U(z)`` when no model is given.
    step_size : float, callable, "curvature" or None, default None
        ``η``; a callable ``t -> η_t`` gives a schedule (e.g. ``a (b + t)^{-γ}`` for the
        decreasing steps of Welling & Teh, or any Optax schedule).  ``"curvature"``:
        ``η = step_scale / λ`` with ``λ`` the largest eigenvalue of the Hessian of ``U``
        at the chain's first point (power iteration, :data:`POWER_ITERATIONS`
        Hessian-vector products at ``init``), the gradient-descent scale of the stiffest
        direction, whatever the dimension (:class:`~vi_entropy.LocalEntropy`'s default).
        ``None`` adapts it during the warm-up, as NUTS does, and preconditions (see Notes).
    noise_scale : float, default 1.0
        ``s``; 1 samples ``exp(-U)``, smaller values sample a colder density.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.
    target_accept_prob : float, default 0.95
        With ``step_size=None``: the Metropolis acceptance probability the warm-up aims
        the Langevin proposal at, a measure of its discretization error (there is no
        Metropolis correction, so it is higher than MALA's optimal 0.57).
    step_scale : float, default 0.5
        With ``step_size="curvature"``: ``η λ``.  Gradient descent diverges along the
        stiffest direction above 2; the curvature of a network's loss grows early in
        training, so the default keeps a margin.

    Notes
    -----
    A transition proposes from the gradient at the current draw, evaluates the
    potential and its gradient at the proposal (on the mini-batch of that step), and
    refuses the proposal when either is not finite: the chain stays where it is and
    ``refused`` is set (``info["num_refused"]`` in :class:`~vi_entropy.LocalEntropy`),
    so one step over a NaN cliff does not poison the chain.  One gradient per
    transition, and one at ``init`` (and, in local entropy, one per chain at each outer
    step, when the tilt moves).

    With ``step_size=None`` each chain adapts, during its ``num_warmup``
    transitions, a step size ``η`` and a diagonal inverse mass matrix ``M⁻¹``, then
    keeps both fixed: ``z ← z − η M⁻¹ ∇U_B(z) + s √(2η M⁻¹) ξ``.  The adaptation is
    NumPyro's, as for NUTS (``numpyro.infer.hmc_util.warmup_adapter``: dual averaging of
    ``log η`` on an acceptance probability, and ``M⁻¹`` the variance of the draws in
    Stan's windows); the acceptance probability is that which a Metropolis test of
    each warm-up transition would give (MALA's), so that ``η`` is as large as the
    discretization error allows (a refused proposal counts as a rejection).  The first
    ``η`` is ``0.1 / κ``, with ``κ`` the curvature along the gradient at the first draw.
    After the warm-up the dynamics is plain Langevin with a constant mass matrix; its
    bias is ``O(η)`` (for a Gaussian target in ``d`` dimensions the adapted ``η M⁻¹`` is
    about ``0.35 σ²`` for ``d = 1``, ``0.1 σ²`` for ``d = 100``: the variance comes out
    about 20% and 5% too large; the mean is exact).  MALA's acceptance falls with the
    dimension, so on a network this adapts a step far below what training needs: use
    ``"curvature"`` there.  A given ``step_size`` is used as it is, without a mass matrix.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(1.0, 0.5))
    >>> mcmc = MCMC(SGLD(model, step_size=0.01), num_warmup=200, num_samples=2000,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))
    >>> round(float(mcmc.get_samples()["x"].mean()), 1)
    1.0
    >>> mcmc = MCMC(SGLD(model), num_warmup=200, num_samples=2000, progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))  # the step size adapted during the warm-up
    >>> round(float(mcmc.get_samples()["x"].mean()), 1)
    1.0
    """

    _name = "SGLD"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        step_size: float | str | Callable[[Any], Any] | None = None,
        noise_scale: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        target_accept_prob: float = 0.95,
        step_scale: float = 0.5,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("SGLD: give exactly one of `model` and `potential_fn`.")
        target_accept_prob = check.open_unit_interval("target_accept_prob", target_accept_prob)
        step_size = check_step_size("step_size", step_size)
        noise_scale = check.positive_float("noise_scale", noise_scale, allow_zero=True)
        if step_size is None and noise_scale == 0:
            raise ValueError(
                "step_size: with noise_scale=0 there is no Langevin target to adapt the "
                "step size to; give step_size."
            )
        self._model = model
        self._potential_fn = potential_fn
        self.step_size = step_size
        self.noise_scale = noise_scale
        self.target_accept_prob = target_accept_prob
        self.step_scale = check.positive_float("step_scale", step_scale)
        self._init_strategy = init_strategy
        self._postprocess_fn: Callable | None = None
        self._num_warmup = 0

    @property
    def adapts(self) -> bool:
        """Whether the step size and preconditioner are adapted (``step_size=None``)."""
        return self.step_size is None

    @property
    def from_curvature(self) -> bool:
        """Whether ``η`` comes from the curvature at the first point (``"curvature"``)."""
        return isinstance(self.step_size, str)

    def _potential(self, z: Any, key: Any, model_args: tuple, model_kwargs: dict) -> Any:
        if self._model is None:
            return self._potential_fn(z)
        # Seeding the model draws a fresh subsample for every subsampled plate.
        seeded = handlers.seed(self._model, rng_seed=key)
        return potential_energy(seeded, model_args, model_kwargs, z)

    def _evaluate(
        self, flat: jax.Array, unravel: Callable, key: Any, model_args: tuple, model_kwargs: dict
    ) -> tuple[jax.Array, jax.Array]:
        """Potential and flat gradient at ``flat`` on the mini-batch of ``key``."""
        pe, grad = jax.value_and_grad(self._potential)(unravel(flat), key, model_args, model_kwargs)
        return pe, ravel_pytree(grad)[0]

    def init(
        self,
        rng_key: Any,
        num_warmup: int,
        init_params: Any = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> SGLDState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        init_params = self._initial_params(
            rng_key, init_params, model_args, model_kwargs, validate_grad=True
        )

        if self.adapts and num_warmup < 1:
            raise ValueError(
                "SGLD: the step size is adapted during the warm-up, but num_warmup=0; "
                "give num_warmup > 0, or a step_size (sampler_kwargs={'step_size': ...} "
                "in LocalEntropy)."
            )
        self._num_warmup = int(num_warmup)
        if self.adapts:
            self._adapter = warmup_adapter(
                self._num_warmup, target_accept_prob=self.target_accept_prob
            )

        def one(z: Any, key: Any) -> SGLDState:
            flat, unravel = ravel_pytree(z)
            key, key_adapt, key_batch = random.split(key, 3)
            pe, g = self._evaluate(flat, unravel, key_batch, model_args, model_kwargs)
            state = SGLDState(
                jnp.array(0), z, pe, jnp.linalg.norm(g), key, None, g, None, jnp.array(False)
            )
            if self.from_curvature:
                eta, v = self._curvature_step(flat, unravel, key_adapt, model_args, model_kwargs)
                return state._replace(step_size=eta, direction=v)
            if not self.adapts:
                return state
            eta = self._first_step_size(flat, unravel, key_batch, model_args, model_kwargs)
            info = IntegratorState(z=flat)
            adapt = self._adapter[0](info, key_adapt, eta, mass_matrix_size=flat.shape[0])
            return state._replace(adapt_state=adapt)

        if vectorized:
            return jax.vmap(one)(init_params, rng_key)
        return one(init_params, rng_key)

    def _step_size(self, state: SGLDState) -> Any:
        if self.from_curvature:
            return state.step_size
        return self.step_size(state.i) if callable(self.step_size) else self.step_size

    def _curvature_step(
        self, flat: jax.Array, unravel: Callable, key: Any, model_args: tuple, model_kwargs: dict
    ) -> tuple[jax.Array, jax.Array]:
        """``step_scale / λ``, ``λ`` the top Hessian eigenvalue of ``U`` at ``flat``, and
        its eigenvector."""
        key_v, key_batch = random.split(key)

        def fn(x: jax.Array) -> jax.Array:
            return self._potential(unravel(x), key_batch, model_args, model_kwargs)

        value, v = top_curvature(fn, flat, key_v)
        return self._from_curvature(value, flat.dtype), v

    def _from_curvature(self, value: jax.Array, dtype: Any) -> jax.Array:
        eta = self.step_scale / value
        return jnp.where(jnp.isfinite(eta) & (eta > 0), eta, 1e-3 * self.step_scale).astype(dtype)

    def _transition(
        self, state: SGLDState, step: Any, model_args: tuple, model_kwargs: dict
    ) -> tuple[SGLDState, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Propose ``z − step ∇U(z) + s √(2 step) ξ`` and keep it when its potential
        and gradient are finite; also the flat start, proposal and their gradients."""
        key, key_batch, key_noise = random.split(state.rng_key, 3)
        flat, unravel = ravel_pytree(state.z)
        noise = random.normal(key_noise, flat.shape, flat.dtype)
        new = flat - step * state.z_grad + self.noise_scale * jnp.sqrt(2 * step) * noise
        pe_new, g_new = self._evaluate(new, unravel, key_batch, model_args, model_kwargs)
        ok = jnp.isfinite(pe_new) & jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(new))
        nxt = state._replace(
            i=state.i + 1,
            z=unravel(jnp.where(ok, new, flat)),
            potential_energy=jnp.where(ok, pe_new, state.potential_energy),
            grad_norm=jnp.where(ok, jnp.linalg.norm(g_new), state.grad_norm),
            rng_key=key,
            z_grad=jnp.where(ok, g_new, state.z_grad),
            refused=~ok,
        )
        return nxt, flat, new, pe_new, g_new

    def _sample_one(self, state: SGLDState, model_args: tuple, model_kwargs: dict) -> SGLDState:
        return self._transition(state, self._step_size(state), model_args, model_kwargs)[0]

    def _first_step_size(
        self, flat: jax.Array, unravel: Callable, key: Any, model_args: tuple, model_kwargs: dict
    ) -> jax.Array:
        """``0.1 / κ``, with ``κ`` the curvature of ``U`` along its gradient at ``flat``."""
        grad = jax.grad(self._potential)
        g = ravel_pytree(grad(unravel(flat), key, model_args, model_kwargs))[0]
        norm = jnp.linalg.norm(g)
        h = _PROBE * (1 + jnp.linalg.norm(flat)) / jnp.sqrt(flat.shape[0])
        direction = g / jnp.where(norm > 0, norm, 1)
        g2 = ravel_pytree(grad(unravel(flat + h * direction), key, model_args, model_kwargs))[0]
        curvature = jnp.abs(jnp.dot(g2 - g, direction)) / h
        eta = 0.1 / curvature
        return jnp.where(jnp.isfinite(eta) & (eta > 0), eta, 1e-3).astype(flat.dtype)

    def _adapted_one(
        self, state: SGLDState, model_args: tuple, model_kwargs: dict, warmup: bool
    ) -> SGLDState:
        """One transition with a mass matrix; in the warm-up, also adapt it and ``η``."""
        a = state.adapt_state
        step = a.step_size * a.inverse_mass_matrix
        nxt, flat, new, pe_new, g_new = self._transition(state, step, model_args, model_kwargs)
        if not warmup:
            return nxt
        # The Metropolis test of this Langevin proposal for exp(-U / s²), not applied: its
        # acceptance probability measures the discretization error of the step size.
        var = 4 * step * self.noise_scale**2
        forward = jnp.sum((new - flat + step * state.z_grad) ** 2 / var)
        backward = jnp.sum((flat - new + step * g_new) ** 2 / var)
        log_accept = (state.potential_energy - pe_new) / self.noise_scale**2 + forward - backward
        accept = jnp.where(jnp.isnan(log_accept), 0.0, jnp.exp(jnp.minimum(log_accept, 0.0)))
        accept = jnp.where(nxt.refused, 0.0, accept)
        z_next = ravel_pytree(nxt.z)[0]
        info = IntegratorState(z_next, None, nxt.potential_energy, nxt.z_grad)
        adapt = self._adapter[1](state.i, accept.astype(flat.dtype), info, a)
        return nxt._replace(adapt_state=adapt)

    def sample(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if not self.adapts:
            return self._sample_chains(state, model_args, model_kwargs)
        vectorized = not is_prng_key(state.rng_key)

        def run(warmup: bool) -> Callable[[SGLDState], SGLDState]:
            fn = partial(self._adapted_one, model_args=model_args, model_kwargs=model_kwargs)
            fn = partial(fn, warmup=warmup)
            return jax.vmap(fn) if vectorized else fn

        # Chains run in lockstep: decided once for all (the same function either way;
        # only the warm-up updates the adaptation).
        in_warmup = jnp.any(state.i < self._num_warmup)
        return lax.cond(in_warmup, run(True), run(False), state)

    def evaluation_counts(
        self, state: SGLDState, stats: Mapping[str, Any], budget: ChainBudget
    ) -> dict[str, jax.Array]:
        """One gradient per transition and one per chain at the refresh (with
        ``step_size="curvature"``, :data:`REFRESH_ITERATIONS` more); with ``readapt``,
        ``init``'s gradient and curvature estimate (two per Hessian-vector product)
        instead (see :class:`~vi_entropy.types.ChainBudget`)."""
        per_chain = budget.transitions + budget.warmup + budget.refreshes
        if self.from_curvature:
            per_chain += (
                2 * POWER_ITERATIONS if budget.readapt else REFRESH_ITERATIONS * budget.refreshes
            )
        evals = budget.chains * per_chain + budget.init
        return {"num_grad_evals": jnp.asarray(evals), "num_potential_evals": jnp.asarray(evals)}

    def refresh(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        """The potential and gradient at ``z`` for the new target (a new tilt), on a
        fresh mini-batch; with ``step_size="curvature"`` also ``η`` for it, from
        :data:`REFRESH_ITERATIONS` more steps of the power iteration (differences of
        gradients on that batch, one gradient each), so that ``η`` follows the
        curvature as the chain moves."""
        model_kwargs = {} if model_kwargs is None else model_kwargs
        key, key_batch = random.split(state.rng_key)
        flat, unravel = ravel_pytree(state.z)
        pe, g = self._evaluate(flat, unravel, key_batch, model_args, model_kwargs)
        state = state._replace(
            potential_energy=pe, grad_norm=jnp.linalg.norm(g), z_grad=g, rng_key=key
        )
        if not self.from_curvature:
            return state
        h = _PROBE * (1 + jnp.linalg.norm(flat)) / jnp.sqrt(flat.shape[0])
        grad = jax.grad(self._potential)

        def body(carry: tuple, _: Any) -> tuple[tuple, None]:
            v, value = carry
            g2 = ravel_pytree(grad(unravel(flat + h * v), key_batch, model_args, model_kwargs))[0]
            w = (g2 - g) / h
            norm = jnp.linalg.norm(w)
            ok = jnp.isfinite(norm) & (norm > 0)
            v = jnp.where(ok, w / jnp.where(ok, norm, 1), v)
            return (v, jnp.maximum(value, jnp.where(ok, norm, 0))), None

        zero = jnp.zeros((), flat.dtype)
        (v, value), _ = lax.scan(body, (state.direction, zero), None, length=REFRESH_ITERATIONS)
        eta = jnp.where(value > 0, self._from_curvature(value, flat.dtype), state.step_size)
        return state._replace(step_size=eta, direction=v)

    def get_diagnostics_str(self, state: SGLDState) -> str:
        if state.adapt_state is not None:
            return f"step size {float(jnp.mean(state.adapt_state.step_size)):.2e} (adapted)"
        return f"step size {float(jnp.mean(jnp.asarray(self._step_size(state)))):.2e}"


def check_step_size(name: str, value: Any) -> Any:
    """SGLD's ``step_size``: a positive float, a schedule, ``"curvature"`` or ``None``."""
    if value is None:
        return value
    if isinstance(value, str):
        if value.lower() not in STEP_SIZE_RULES:
            raise ValueError(
                f"{name}: expected a positive float, a schedule t -> step, 'curvature' or "
                f"None (adapted in the warm-up), got {value!r}."
            )
        return value.lower()
    return check.schedule(name, value)
