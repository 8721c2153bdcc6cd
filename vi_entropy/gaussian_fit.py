"""Step 2 of both schemes: fit ``N(m, τI)`` to the tilted posterior ``φ_k``.

* Local entropy minimizes the forward KL ``KL(φ_k ‖ N(m, τI))``; the minimizer is the mean
  of ``φ_k`` (moment matching), estimated from draws: :func:`moment_match`.
* Heat regularization minimizes the reverse KL ``KL(N(m, τI) ‖ φ_k)``, i.e. the proximal
  step ``argmin_m f_τ(m) + |m - x_k|²/(2τ)``: by NumPyro ``SVI`` on the tilted model with
  :class:`~vi_entropy.guide.GaussianGuide` (:class:`SVIFit`), or by Robbins-Monro on ``m``
  (:class:`RobbinsMonroFit`, the paper's Algorithm 5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.infer import SVI, Trace_ELBO

from vi_entropy.faults import Fault, flag
from vi_entropy.guide import GaussianGuide
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Draws

AVERAGING = ("arithmetic", "exponential")


def moment_match(
    draws: Draws,
    start: jax.Array,
    averaging: str = "arithmetic",
    ema_decay: float = 0.75,
) -> jax.Array:
    """Estimate the mean of the tilted posterior from its draws.

    ``E_φ[y] ≈ Σ_j w_j y_j`` with self-normalized importance weights when
    ``draws.log_weights`` is given; otherwise the average over chains of each chain's

    * ``"arithmetic"`` mean ``(1/S) Σ_t y_t`` (default), or
    * ``"exponential"`` moving average ``μ ← ρ μ + (1 - ρ) y_t`` started at ``μ = start``
      (the centre), with ``ρ = ema_decay``, as in Entropy-SGD's inner loop.

    This is local entropy's step 2: ``argmin_m KL(φ_k ‖ N(m, τI)) = E_{φ_k}[y]``.

    Parameters
    ----------
    draws : Draws
        Values of shape ``(chains, draws, d)``, optional log-weights.
    start : jax.Array
        The centre ``x_k`` (flat), where the exponential average starts.
    averaging : {"arithmetic", "exponential"}, default "arithmetic"
        How unweighted draws are averaged.
    ema_decay : float, default 0.75
        ``ρ`` of the exponential average.

    Returns
    -------
    jax.Array
        The estimated mean, shape ``(d,)``; ``NaN`` when every importance weight is zero
        (the caller rejects the step).

    Example
    -------
    >>> import jax.numpy as jnp
    >>> from vi_entropy.samplers import Draws
    >>> values = jnp.array([[[0.0], [2.0]], [[4.0], [6.0]]])  # 2 chains, 2 draws, d = 1
    >>> moment_match(Draws(values, None, {}), jnp.zeros(1)).tolist()
    [3.0]
    >>> weighted = Draws(values, jnp.log(jnp.array([[1.0, 0.0], [0.0, 1.0]])), {})
    >>> moment_match(weighted, jnp.zeros(1)).tolist()  # self-normalized weights
    [3.0]
    """
    values = draws.values
    d = values.shape[-1]
    if draws.log_weights is not None:
        log_w = jnp.ravel(draws.log_weights)
        w = jax.nn.softmax(log_w)
        mean = w @ values.reshape(-1, d)
        return jnp.where(jnp.all(jnp.isneginf(log_w)), jnp.nan, mean)
    if averaging == "arithmetic":
        return jnp.mean(values, axis=(0, 1))
    if averaging == "exponential":
        s = values.shape[1]
        rho = jnp.asarray(ema_decay, values.dtype)
        # μ_S = ρ^S start + (1 - ρ) Σ_t ρ^(S-1-t) y_t, in closed form instead of a scan.
        weights = (1 - rho) * rho ** jnp.arange(s - 1, -1, -1, dtype=values.dtype)
        per_chain = rho**s * start + jnp.einsum("t,ctd->cd", weights, values)
        return jnp.mean(per_chain, axis=0)
    raise ValueError(f"averaging: expected one of {AVERAGING}, got {averaging!r}.")


class RunningAverage(NamedTuple):
    """The per-chain average of :func:`moment_match`, accumulated draw by draw.

    ``acc = init(start)`` with ``start`` the centre broadcast to ``(chains, d)``;
    ``acc = update(acc, y)`` for each draw ``y`` of shape ``(chains, d)``;
    ``result(acc, num_draws)`` is the mean over chains, equal to :func:`moment_match`
    of the stacked draws up to floating-point rounding.  Samplers use it when the draws
    themselves are not wanted, so memory is ``O(chains × d)`` instead of
    ``O(chains × draws × d)``.
    """

    init: Callable[[jax.Array], jax.Array]
    update: Callable[[jax.Array, jax.Array], jax.Array]
    result: Callable[[jax.Array, int], jax.Array]


def running_average(averaging: str = "arithmetic", ema_decay: float = 0.75) -> RunningAverage:
    """The streaming form of :func:`moment_match` for unweighted draws."""
    if averaging == "arithmetic":
        return RunningAverage(
            jnp.zeros_like, lambda acc, y: acc + y, lambda acc, n: jnp.mean(acc, axis=0) / n
        )
    if averaging == "exponential":
        rho = ema_decay
        return RunningAverage(
            lambda start: start,
            lambda acc, y: rho * acc + (1 - rho) * y,
            lambda acc, n: jnp.mean(acc, axis=0),
        )
    raise ValueError(f"averaging: expected one of {AVERAGING}, got {averaging!r}.")


class SVIFit:
    """Reverse-KL fit by NumPyro ``SVI`` (``Trace_ELBO``) of :class:`GaussianGuide`.

    The ELBO of the tilted model under ``N(m, τI)`` is
    ``-(f_τ(m) + |m - x_k|²/(2τ)) + const``, so SVI on ``m`` is the heat-regularization
    step.  The SVI state (guide means and optimizer state) is warm-started from one outer
    step to the next; ``SVI.stable_update`` skips inner steps with a non-finite loss or
    gradient (``info["num_skipped_inner"]`` counts them), and a non-finite loss at the
    last inner step is a fault (:attr:`~vi_entropy.faults.Fault.NONFINITE_LOSS`): the
    driver rejects the outer step.

    ``info["inner_gap"]`` says how far the fit stopped from its optimum (see
    :meth:`_gap`): near 0 when converged, about 1 or more when the inner steps were too
    few or the learning rate too small for the step the centre had to make.
    """

    def __init__(
        self,
        tilted: TiltedPosterior,
        optim: Any,
        num_inner_steps: int,
        num_particles: int,
        sharding: BatchSharding | None = None,
    ) -> None:
        self.tilted = tilted
        self.guide = GaussianGuide(tilted)
        self.num_inner_steps = num_inner_steps
        self.num_particles = num_particles
        self.sharding = sharding or BatchSharding(None)
        # Over several devices the particles (their keys, hence all their work) are split.
        vectorize = self.sharding.vmap(num_particles) if self.sharding.active else True
        loss = Trace_ELBO(num_particles=num_particles, vectorize_particles=vectorize)
        self.svi = SVI(tilted.tilted_model, self.guide, optim, loss)

    def init(
        self,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
    ) -> Any:
        kw = self.tilted.model_kwargs(model_kwargs, centre, tau)
        return self.svi.init(rng_key, *model_args, **kw)

    def fit(
        self,
        state: Any,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
    ) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        kw = self.tilted.model_kwargs(model_kwargs, centre, tau)
        state = state._replace(rng_key=rng_key)  # the scheme's key drives all randomness

        def body(s: Any, _: Any) -> tuple[Any, jax.Array]:
            return self.svi.stable_update(s, *model_args, **kw)

        state, losses = lax.scan(body, state, None, length=self.num_inner_steps)
        params = self.svi.get_params(state)
        mean = self.tilted.ravel({k: params[self.guide.loc_name(k)] for k in self.tilted.sites})
        gap = self._gap(
            mean, random.fold_in(rng_key, _GAP_STREAM), centre, tau, model_args, model_kwargs
        )
        evals = self.num_inner_steps * self.num_particles + GAP_PARTICLES * self.num_particles
        info = {
            "inner_gap": gap,
            "elbo_loss": losses[-1],
            # stable_update returns a NaN loss for each inner step it skipped
            "num_skipped_inner": jnp.sum(~jnp.isfinite(losses)),
            "fault": flag(~jnp.isfinite(losses[-1]), Fault.NONFINITE_LOSS),
            "num_grad_evals": jnp.asarray(evals),
            "num_potential_evals": jnp.asarray(evals),
        }
        return mean, state, info

    def _gap(
        self,
        mean: jax.Array,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
    ) -> jax.Array:
        """How far the fit stopped from its optimum, relative to the step it made.

        ``τ |∇(f_τ(m) + |m − x_k|²/(2τ))|`` at the fitted mean ``m`` (the gradient of the
        proximal objective, from ``GAP_PARTICLES × num_particles`` draws) bounds the
        distance to the optimum when ``f`` is convex (the objective is ``1/τ``-strongly
        convex then); it is divided by ``|m − x_k| + √(τ d)``, the step plus the radius
        of ``N(m, τI)``, so that a converged fit gives a small number and one stopped
        half-way about 1 or more.
        """
        n = GAP_PARTICLES * self.num_particles
        key_xi, key_batch = random.split(rng_key)
        xi = random.normal(key_xi, (n, mean.shape[0]), mean.dtype)
        batch = key_batch if self.tilted.subsamples else None

        def f(u: jax.Array) -> jax.Array:
            return self.tilted.potential(u, model_args, model_kwargs, batch)

        xi = self.sharding.constrain(xi, n)
        grad = jnp.mean(jax.vmap(jax.grad(f))(mean + jnp.sqrt(tau) * xi), axis=0)
        distance = jnp.linalg.norm(tau * grad + mean - centre)
        scale = jnp.linalg.norm(mean - centre) + jnp.sqrt(tau * mean.shape[0])
        return distance / scale


# Draws (times num_particles) behind SVIFit's convergence check, and their key stream
# (``fold_in`` of the step's key: the fit's own randomness is untouched).
GAP_PARTICLES = 8
_GAP_STREAM = 0x6A9


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
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}.")
        self.tilted = tilted
        self.num_inner_steps = num_inner_steps
        self.num_particles = num_particles
        self.gain = gain
        self.gain_t0 = gain_t0
        self.gain_kappa = gain_kappa
        self.estimator = estimator
        self.sharding = sharding or BatchSharding(None)

    def init(
        self,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
    ) -> RobbinsMonroState:
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

    def fit(
        self,
        state: RobbinsMonroState,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
    ) -> tuple[jax.Array, RobbinsMonroState, dict]:
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
        return mean, RobbinsMonroState(mean), info
