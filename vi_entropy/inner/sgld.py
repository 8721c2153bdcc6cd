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
    ["i", "z", "potential_energy", "grad_norm", "rng_key", "adapt_state"],
    defaults=(None,),
)
"""State of :class:`SGLD`.

- **i** - iteration count.
- **z** - current draw (a pytree of unconstrained values when the kernel has a model).
- **potential_energy** - mini-batch potential at the point where the last gradient was
  taken (the previous draw; a diagnostic, not used by the dynamics).
- **grad_norm** - Euclidean norm of that gradient (a diagnostic).
- **rng_key** - random key for the next transition.
- **adapt_state** - NumPyro's ``HMCAdaptState`` (step size, diagonal inverse mass
  matrix, dual-averaging and Welford states) when the step size is adapted
  (``step_size=None``), else ``None``.

Example: ``SGLD(model).init(jax.random.PRNGKey(0), 0, {"x": jnp.zeros(())})`` is
``SGLDState(i=0, z={"x": 0.0}, ...)``.
"""


# Relative size of the probe that estimates the curvature at the first draw, which sets
# the first step size of the warm-up.
_PROBE = 1e-3


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
    step_size : float, callable or None, default None
        ``η``; a callable ``t -> η_t`` gives a schedule (e.g. ``a (b + t)^{-γ}`` for the
        decreasing steps of Welling & Teh, or any Optax schedule).  ``None`` adapts it
        during the warm-up, as NUTS does, and preconditions (see Notes).
    noise_scale : float, default 1.0
        ``s``; 1 samples ``exp(-U)``, smaller values sample a colder density.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.
    target_accept_prob : float, default 0.95
        With ``step_size=None``: the Metropolis acceptance probability the warm-up aims
        the Langevin proposal at, a measure of its discretization error (there is no
        Metropolis correction, so it is higher than MALA's optimal 0.57).

    Notes
    -----
    With ``step_size=None`` (the default) each chain adapts, during its ``num_warmup``
    transitions, a step size ``η`` and a diagonal inverse mass matrix ``M⁻¹``, then
    keeps both fixed: ``z ← z − η M⁻¹ ∇U_B(z) + s √(2η M⁻¹) ξ``.  The adaptation is
    NumPyro's, as for NUTS (``numpyro.infer.hmc_util.warmup_adapter``: dual averaging of
    ``log η`` on an acceptance probability, and ``M⁻¹`` the variance of the draws in
    Stan's windows); the acceptance probability is that which a Metropolis test of
    each warm-up transition would give (MALA's), so that ``η`` is as large as the
    discretization error allows.  The first ``η`` is ``0.1 / κ``, with ``κ`` the
    curvature along the gradient at the first draw.  A warm-up transition costs two
    gradients, a later one one.  After the warm-up the dynamics is plain Langevin with
    a constant mass matrix; its bias is ``O(η)`` (for a Gaussian target in ``d``
    dimensions the adapted ``η M⁻¹`` is about ``0.35 σ²`` for ``d = 1``, ``0.1 σ²`` for
    ``d = 100``: the variance comes out about 20% and 5% too large; the mean is exact).
    A given ``step_size`` is used as it is, without a mass matrix.

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
        step_size: float | Callable[[Any], Any] | None = None,
        noise_scale: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        target_accept_prob: float = 0.95,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("SGLD: give exactly one of `model` and `potential_fn`.")
        target_accept_prob = check.open_unit_interval("target_accept_prob", target_accept_prob)
        if step_size is not None and not callable(step_size):
            step_size = check.positive_float("step_size", step_size)
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
        self._init_strategy = init_strategy
        self._postprocess_fn: Callable | None = None
        self._num_warmup = 0

    @property
    def adapts(self) -> bool:
        """Whether the step size and preconditioner are adapted (``step_size=None``)."""
        return self.step_size is None

    def _potential(self, z: Any, key: Any, model_args: tuple, model_kwargs: dict) -> Any:
        if self._model is None:
            return self._potential_fn(z)
        # Seeding the model draws a fresh subsample for every subsampled plate.
        seeded = handlers.seed(self._model, rng_seed=key)
        return potential_energy(seeded, model_args, model_kwargs, z)

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
            zero = jnp.zeros((), flat.dtype)
            if not self.adapts:
                return SGLDState(jnp.array(0), z, zero, zero, key)
            key, key_adapt, key_batch = random.split(key, 3)
            eta = self._first_step_size(flat, unravel, key_batch, model_args, model_kwargs)
            info = IntegratorState(z=flat)
            adapt = self._adapter[0](info, key_adapt, eta, mass_matrix_size=flat.shape[0])
            return SGLDState(jnp.array(0), z, zero, zero, key, adapt)

        if vectorized:
            return jax.vmap(one)(init_params, rng_key)
        return one(init_params, rng_key)

    def _step_size(self, i: Any) -> Any:
        return self.step_size(i) if callable(self.step_size) else self.step_size

    def _sample_one(self, state: SGLDState, model_args: tuple, model_kwargs: dict) -> SGLDState:
        key, key_batch, key_noise = random.split(state.rng_key, 3)
        pe, grad = jax.value_and_grad(self._potential)(state.z, key_batch, model_args, model_kwargs)
        eta = self._step_size(state.i)
        flat, unravel = ravel_pytree(state.z)
        g_flat = ravel_pytree(grad)[0]
        noise = random.normal(key_noise, flat.shape, flat.dtype)
        new = flat - eta * g_flat + self.noise_scale * jnp.sqrt(2.0 * eta) * noise
        return SGLDState(state.i + 1, unravel(new), pe, jnp.linalg.norm(g_flat), key)

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
        key, key_batch, key_noise = random.split(state.rng_key, 3)
        potential = jax.value_and_grad(self._potential)
        pe, grad = potential(state.z, key_batch, model_args, model_kwargs)
        flat, unravel = ravel_pytree(state.z)
        g = ravel_pytree(grad)[0]
        a = state.adapt_state
        step = a.step_size * a.inverse_mass_matrix
        noise = random.normal(key_noise, flat.shape, flat.dtype)
        new = flat - step * g + self.noise_scale * jnp.sqrt(2 * step) * noise
        if not warmup:
            return SGLDState(state.i + 1, unravel(new), pe, jnp.linalg.norm(g), key, a)
        # The Metropolis test of this Langevin proposal for exp(-U / s²), not applied: its
        # acceptance probability measures the discretization error of the step size.
        pe_new, grad_new = potential(unravel(new), key_batch, model_args, model_kwargs)
        g_new = ravel_pytree(grad_new)[0]
        var = 4 * step * self.noise_scale**2
        forward = jnp.sum((new - flat + step * g) ** 2 / var)
        backward = jnp.sum((flat - new + step * g_new) ** 2 / var)
        log_accept = (pe - pe_new) / self.noise_scale**2 + forward - backward
        accept = jnp.where(jnp.isnan(log_accept), 0.0, jnp.exp(jnp.minimum(log_accept, 0.0)))
        info = IntegratorState(new, None, pe_new, g_new)
        adapt = self._adapter[1](state.i, accept.astype(flat.dtype), info, a)
        return SGLDState(state.i + 1, unravel(new), pe, jnp.linalg.norm(g), key, adapt)

    def sample(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if not self.adapts:
            return self._sample_chains(state, model_args, model_kwargs)
        vectorized = not is_prng_key(state.rng_key)

        def run(warmup: bool) -> Callable[[SGLDState], SGLDState]:
            fn = partial(self._adapted_one, model_args=model_args, model_kwargs=model_kwargs)
            fn = partial(fn, warmup=warmup)
            return jax.vmap(fn) if vectorized else fn

        # Chains run in lockstep: decided once for all (a real branch, so that the
        # transitions after the warm-up cost one gradient, not two).
        in_warmup = jnp.any(state.i < self._num_warmup)
        return lax.cond(in_warmup, run(True), run(False), state)

    def evaluation_counts(
        self, state: SGLDState, stats: Mapping[str, Any], budget: ChainBudget
    ) -> dict[str, jax.Array]:
        """One gradient per transition; an adapting warm-up transition takes a second
        (its Metropolis test) (see :class:`~vi_entropy.types.ChainBudget`)."""
        per_warm = 1 if state.adapt_state is None else 2
        evals = budget.chains * (budget.transitions + per_warm * budget.warmup) + budget.init
        return {"num_grad_evals": jnp.asarray(evals), "num_potential_evals": jnp.asarray(evals)}

    def refresh(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        """Nothing cached depends on the model arguments: every step recomputes its gradient."""
        return state

    def get_diagnostics_str(self, state: SGLDState) -> str:
        if state.adapt_state is not None:
            return f"step size {float(jnp.mean(state.adapt_state.step_size)):.2e} (adapted)"
        return f"step size {float(jnp.mean(jnp.asarray(self._step_size(state.i)))):.2e}"
