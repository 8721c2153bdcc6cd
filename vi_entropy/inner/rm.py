"""Heat regularization's reverse-KL fit by Robbins-Monro on the mean (an inner step).

The paper's Algorithm 5: stochastic-approximation steps on ``m`` towards
``argmin_m f_τ(m) + |m − x_k|²/(2τ)``, with gradients or Stein's identity (forward
evaluations only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random

from vi_entropy import _validation as check
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Context


class RobbinsMonroState(NamedTuple):
    """Mean of the Gaussian being fitted (flat, unconstrained), warm start of the next fit."""

    mean: jax.Array


ESTIMATORS = ("gradient", "gradient_free")


class RobbinsMonroFit:
    """Reverse-KL fit by Robbins-Monro on the mean (the paper's Algorithm 5).

    ``m ← m − a_j [ĝ_j + (m − x_k)/τ]`` for ``j = 0 … J−1``, started from the previous
    fit, with gains ``a_j = gain · τ · (1 + j/t0)^{−κ}`` (``Σ a_j = ∞``, ``Σ a_j² < ∞``
    for ``½ < κ ≤ 1``) and ``ĝ_j`` an unbiased estimate of ``∇f_τ(m)`` from
    ``num_particles`` draws ``ξ ~ N(0, I)`` and a fresh mini-batch ``B``:

    * ``"gradient"``: ``ĝ = mean ∇f_B(m + √τ ξ)`` (one gradient per particle);
    * ``"gradient_free"``: ``ĝ = mean ξ (f_B(m + √τ ξ) − f_B(m − √τ ξ)) / (2√τ)``
      (Stein's identity with antithetic pairs; two forward evaluations per particle).
    """

    def __init__(
        self,
        tilted: TiltedPosterior,
        num_inner_steps: int,
        num_particles: int,
        gain: float = 0.5,
        gain_t0: float = 10.0,
        gain_kappa: float = 0.6,
        estimator: str = "gradient",
        sharding: BatchSharding | None = None,
    ) -> None:
        check.choice("estimator", estimator, ESTIMATORS)
        self.tilted = tilted
        self.num_inner_steps = num_inner_steps
        self.num_particles = num_particles
        self.gain = gain
        self.gain_t0 = gain_t0
        self.gain_kappa = gain_kappa
        self.estimator = estimator
        self.sharding = sharding or BatchSharding(None)

    def init(self, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context) -> RobbinsMonroState:
        return RobbinsMonroState(centre)

    def _grad_estimate(
        self, m: jax.Array, key: Any, tau: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
    ) -> jax.Array:
        key_xi, key_batch = random.split(key)
        xi = random.normal(key_xi, (self.num_particles, m.shape[0]), m.dtype)
        batch = key_batch if self.tilted.subsamples else None

        def f(u: jax.Array) -> jax.Array:
            return self.tilted.potential(u, model_args, model_kwargs, batch)

        sd = jnp.sqrt(tau)
        xi = self.sharding.constrain(xi, self.num_particles)  # particles split over devices
        if self.estimator == "gradient":
            return jnp.mean(jax.vmap(jax.grad(f))(m + sd * xi), axis=0)
        diff = jax.vmap(f)(m + sd * xi) - jax.vmap(f)(m - sd * xi)
        return jnp.mean(xi * diff[:, None], axis=0) / (2 * sd)

    def step(
        self, state: RobbinsMonroState, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context
    ) -> tuple[jax.Array, RobbinsMonroState, dict, None]:
        model_args, model_kwargs = ctx.args, ctx.kwargs
        keys = random.split(rng_key, self.num_inner_steps)

        def body(m: jax.Array, jk: tuple[jax.Array, Any]) -> tuple[jax.Array, jax.Array]:
            j, k = jk
            a = self.gain * tau * (1.0 + j / self.gain_t0) ** (-self.gain_kappa)
            g = self._grad_estimate(m, k, tau, model_args, model_kwargs)
            step = g + (m - centre) / tau
            return m - a * step, jnp.linalg.norm(step)

        steps = jnp.arange(self.num_inner_steps, dtype=centre.dtype)
        mean, norms = lax.scan(body, state.mean, (steps, keys))
        n = self.num_inner_steps * self.num_particles
        grads, pes = (n, n) if self.estimator == "gradient" else (0, 2 * n)
        info = {
            "rm_grad_norm": norms[-1],
            "num_grad_evals": jnp.asarray(grads),
            "num_potential_evals": jnp.asarray(pes),
        }
        return mean, RobbinsMonroState(mean), info, None
