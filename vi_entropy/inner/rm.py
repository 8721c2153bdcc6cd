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
from vi_entropy._compile import normal
from vi_entropy.inner.sgld import top_curvature
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Context


class RobbinsMonroState(NamedTuple):
    """What one fit leaves to the next.

    - **mean** - mean of the Gaussian being fitted (flat, unconstrained), the warm start.
    - **gain_scale** - the multiplier of the gains: divided by 4 for each retry of a fit
      that diverged, doubled back (up to 1) after each fit that did not.
    - **curvature** - with ``gain=None``, the estimate ``λ`` of the top eigenvalue of
      ``∇²f`` that scales the gains (0 otherwise).
    - **direction** - its eigenvector, from which the next estimate goes on.
    """

    mean: jax.Array
    gain_scale: jax.Array
    curvature: jax.Array
    direction: jax.Array


ESTIMATORS = ("gradient", "gradient_free")
#: Gain of the first inner step, relative to ``τ / (1 + τ λ)``, when ``gain=None``.
DEFAULT_GAIN = 0.5
#: Retries of a fit that diverged, each with a quarter of the gains; a fit whose last
#: step is this many times its first diverged.
MAX_RETRIES = 4
DIVERGED = 10.0
#: Power iterations for ``λ``: at the first fit, then at each fit (warm-started).
INIT_ITERATIONS = 20
STEP_ITERATIONS = 2


class RobbinsMonroFit:
    """Reverse-KL fit by Robbins-Monro on the mean (the paper's Algorithm 5).

    ``m ← m − a_j [ĝ_j + (m − x_k)/τ]`` for ``j = 0 … J−1``, started from the previous
    fit, with gains ``a_j = gain · τ · (1 + j/t0)^{−κ}`` (``Σ a_j = ∞``, ``Σ a_j² < ∞``
    for ``½ < κ ≤ 1``) and ``ĝ_j`` an unbiased estimate of ``∇f_τ(m)`` from
    ``num_particles`` draws ``ξ ~ N(0, I)`` and a fresh mini-batch ``B``.

    The iteration is stable while ``a_j (λ + 1/τ) < 2``, ``λ`` the top eigenvalue of
    ``∇²f``: a fixed ``gain`` diverges once ``τ λ`` is large (a scale parameter near
    zero, a network).  With ``gain=None`` and the gradient estimator the gains are
    ``0.5 · τ / (1 + τ λ̂)`` instead, ``λ̂`` from power iteration on Hessian-vector
    products (20 at the first fit, 2 more at each fit, warm-started, at the fit's
    start).  Whatever the gain, a fit that diverges (ends non-finite, or its last step
    is :data:`DIVERGED` times its first) is run again from its start with a quarter of
    the gains, up to :data:`MAX_RETRIES` times (``info["rm_gain_scale"]``), and the multiplier
    doubles back towards 1 at each fit that does not diverge.

    The estimates of ``∇f_τ``:

    * ``"gradient"``: ``ĝ = mean ∇f_B(m + √τ ξ)`` (one gradient per particle);
    * ``"gradient_free"``: ``ĝ = mean ξ (f_B(m + √τ ξ) − f_B(m − √τ ξ)) / (2√τ)``
      (Stein's identity with antithetic pairs; two forward evaluations per particle).
    """

    def __init__(
        self,
        tilted: TiltedPosterior,
        num_inner_steps: int,
        num_particles: int,
        gain: float | None = None,
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
        one = jnp.ones((), centre.dtype)
        if not self.scales_with_curvature:
            return RobbinsMonroState(centre, one, 0 * one, jnp.zeros_like(centre))
        value, v = self._curvature(centre, rng_key, ctx, None, INIT_ITERATIONS)
        return RobbinsMonroState(centre, one, value, v)

    def _curvature(
        self, m: jax.Array, key: Any, ctx: Context, start: jax.Array | None, iterations: int
    ) -> tuple[jax.Array, jax.Array]:
        """Top eigenvalue of ``∇²f`` at ``m`` (on one mini-batch) and its eigenvector."""
        key_v, key_batch = random.split(key)
        batch = key_batch if self.tilted.subsamples else None

        def f(u: jax.Array) -> jax.Array:
            return self.tilted.potential(u, ctx.args, ctx.kwargs, batch)

        value, v = top_curvature(f, m, key_v, iterations, start)
        return jnp.where(jnp.isfinite(value), value, 0.0).astype(m.dtype), v

    @property
    def scales_with_curvature(self) -> bool:
        """Whether the gains are ``0.5 τ/(1 + τλ)`` (``gain=None``, gradient estimator);
        the gradient-free estimator evaluates no gradient, so it keeps ``0.5 τ``."""
        return self.gain is None and self.estimator == "gradient"

    def _first_gain(self, state: RobbinsMonroState, tau: Any) -> jax.Array:
        """``a_0`` before the retries' multiplier."""
        if not self.scales_with_curvature:
            return (DEFAULT_GAIN if self.gain is None else self.gain) * tau
        return DEFAULT_GAIN * tau / (1 + tau * state.curvature)

    def _grad_estimate(
        self, m: jax.Array, key: Any, tau: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
    ) -> jax.Array:
        key_xi, key_batch = random.split(key)
        xi = normal(key_xi, (self.num_particles, m.shape[0]), m.dtype)
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
        key_fit, key_curv = random.split(rng_key)
        if self.scales_with_curvature:
            value, v = self._curvature(state.mean, key_curv, ctx, state.direction, STEP_ITERATIONS)
            state = state._replace(
                curvature=jnp.where(value > 0, value, state.curvature), direction=v
            )
        keys = random.split(key_fit, self.num_inner_steps)
        steps = jnp.arange(self.num_inner_steps, dtype=centre.dtype)
        first = self._first_gain(state, tau)

        def fit(scale: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            def body(m: jax.Array, jk: tuple[jax.Array, Any]) -> tuple[jax.Array, jax.Array]:
                j, k = jk
                a = scale * first * (1.0 + j / self.gain_t0) ** (-self.gain_kappa)
                g = self._grad_estimate(m, k, tau, model_args, model_kwargs)
                step = g + (m - centre) / tau
                return m - a * step, jnp.linalg.norm(step)

            mean, norms = lax.scan(body, state.mean, (steps, keys))
            # Diverged: not finite, or its steps grew (the objective is 1/τ-strongly
            # convex near its optimum: a stable fit's steps shrink to their noise).
            bad = ~jnp.all(jnp.isfinite(mean)) | ~(norms[-1] <= DIVERGED * norms[0])
            return mean, norms[-1], bad

        def retry(carry: tuple) -> tuple:
            _, _, _, scale, tries = carry
            scale = scale / 4
            return (*fit(scale), scale, tries + 1)

        mean, norm, bad = fit(state.gain_scale)
        mean, norm, _, scale, tries = lax.while_loop(
            lambda c: c[2] & (c[4] < MAX_RETRIES),
            retry,
            (mean, norm, bad, state.gain_scale, jnp.zeros((), jnp.int32)),
        )
        n = self.num_inner_steps * self.num_particles * (1 + tries)
        grads, pes = (n, n) if self.estimator == "gradient" else (0, 2 * n)
        if self.scales_with_curvature:  # Hessian-vector products, about 2 gradients each
            pes = pes + 2 * STEP_ITERATIONS
            grads = grads + 2 * STEP_ITERATIONS
        info = {
            "rm_grad_norm": norm,
            "rm_gain_scale": scale,
            "rm_first_gain": scale * first,
            "num_grad_evals": jnp.asarray(grads),
            "num_potential_evals": jnp.asarray(pes),
        }
        grown = jnp.minimum(1.0, 2 * scale).astype(scale.dtype)
        new = RobbinsMonroState(
            mean, jnp.where(tries > 0, scale, grown), state.curvature, state.direction
        )
        return mean, new, info, None
