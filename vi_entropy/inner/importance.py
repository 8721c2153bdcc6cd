"""Importance sampling of the tilted posterior with the Gaussian factor as proposal.

With proposal ``q = N(x_k, τI)`` and target ``φ_k ∝ e^{-f} N(x_k, τI)`` the Gaussian
cancels, so the weights are ``w_j ∝ exp(-f(y_j))`` (the paper's gradient-free LE step):
only forward evaluations of ``f``, all ``J`` of them independent and vectorized.  Weights
are kept in log space; their effective sample size ``(Σw)² / Σw²`` says when they have
degenerated (``f`` varying by much more than 1 over the τ-ball).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from vi_entropy._compile import normal
from vi_entropy.diagnostics import kish_ess
from vi_entropy.faults import Fault, flag
from vi_entropy.inner.averaging import moment_match
from vi_entropy.inner.base import Sampler
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Context, Draws


class ImportanceState(NamedTuple):
    """Importance sampling keeps no state between outer steps beyond its key.

    - **rng_key** - the key it was initialized with (unused: each step gets its own).

    Example
    -------
    >>> import jax
    >>> ImportanceState(jax.random.PRNGKey(0))._fields
    ('rng_key',)
    """

    rng_key: jax.Array


# The public name of Kish's ESS before it moved to the diagnostics, kept for old imports.
effective_sample_size = kish_ess


class ImportanceSampler(Sampler):
    """``num_samples`` proposals ``x_k + √τ ξ`` weighted by ``exp(-f)``.

    Parameters
    ----------
    tilted : TiltedPosterior
        The flat view of the model (set up).
    num_samples : int
        Proposals per outer step ``J``.
    batch_size : int or None, default None
        Evaluate the potential on this many proposals at a time (``lax.map``) to bound
        memory; ``None`` evaluates all at once.
    sharding : BatchSharding, optional
        Splits the proposals over devices (see :mod:`vi_entropy.sharding`).
    ess_threshold : float or None, default None
        :meth:`warnings` reports a step whose Kish ESS is below
        ``max(ess_threshold · num_samples, min(2, num_samples / 2))``.

    Notes
    -----
    The inner step of ``LocalEntropy(..., sampler="importance")``
    (:class:`~vi_entropy.types.InnerStep`): ``step`` returns the self-normalized mean,
    weighted draws of shape ``(1, num_samples, d)`` and ``num_samples`` forward
    evaluations (no gradients); ``sample`` returns ``(state, Draws, counts)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import TiltedPosterior
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> tp = TiltedPosterior(model)
    >>> tp.setup(jax.random.PRNGKey(0), (), {})
    >>> sampler = ImportanceSampler(tp, num_samples=4000)
    >>> centre, tau, key = jnp.ones(1), 1.0, jax.random.PRNGKey(1)
    >>> ctx = Context((), {})
    >>> state = sampler.init(key, centre, tau, ctx)
    >>> mean, state, info, draws = sampler.step(state, key, centre, tau, ctx)
    >>> draws.values.shape, int(info["num_potential_evals"])
    ((1, 4000, 1), 4000)
    >>> bool(abs(mean[0] - 0.5) < 0.1)  # tilted mean of N(0, 1) around 1 with tau = 1
    True
    """

    num_chains = 1
    #: No host-side chain diagnostics: the weights' ESS is ``info['importance_ess']``.
    draw_diagnostics = ()

    def __init__(
        self,
        tilted: TiltedPosterior,
        num_samples: int,
        batch_size: int | None = None,
        sharding: BatchSharding | None = None,
        ess_threshold: float | None = None,
    ):
        self.tilted = tilted
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.sharding = sharding or BatchSharding(None)
        self.ess_threshold = ess_threshold

    def init(self, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context) -> ImportanceState:
        return ImportanceState(rng_key)

    def step(
        self, state: ImportanceState, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context
    ) -> tuple[jax.Array, ImportanceState, dict[str, jax.Array], Draws | None]:
        """Weighted proposals and their self-normalized mean (moment matching)."""
        noise = normal(rng_key, (self.num_samples, centre.shape[0]), centre.dtype)
        ys = self.sharding.constrain(centre + jnp.sqrt(tau) * noise, self.num_samples)
        # All proposals share one mini-batch: the weights must compare like with like.
        key = ctx.batch_key if self.tilted.subsamples else None

        def f(y: jax.Array) -> jax.Array:
            return self.tilted.potential(y, ctx.args, ctx.kwargs, key)

        pes = lax.map(f, ys, batch_size=self.batch_size) if self.batch_size else jax.vmap(f)(ys)
        log_w = jnp.where(jnp.isnan(pes), -jnp.inf, -pes)
        stats = {"potential_energy": pes[None], "log_weight": log_w[None]}
        draws = Draws(ys[None], log_w[None], stats)
        mean = moment_match(draws, centre)
        zero_weights = jnp.all(jnp.isneginf(log_w)) | jnp.any(jnp.isposinf(log_w))
        fault = flag(~jnp.all(jnp.isfinite(ys)), Fault.NONFINITE_DRAWS) | flag(
            zero_weights, Fault.ZERO_WEIGHTS
        )
        info = {
            "num_potential_evals": jnp.asarray(self.num_samples),
            "num_grad_evals": jnp.asarray(0),
            "mean_potential_energy": jnp.mean(pes),
            "importance_ess": kish_ess(log_w),
            "num_zero_weights": jnp.sum(jnp.isneginf(log_w)),
            "fault": fault,
        }
        return mean, state, info, draws if ctx.with_draws else None

    def warnings(self, info: Mapping[str, Any], step: int) -> dict[str, str]:
        """Degenerate weights: this step's ESS is below the threshold (once per run)."""
        if self.ess_threshold is None:
            return {}
        ess = float(info["importance_ess"])
        # With very few proposals an ESS of 2 is all there can be: ask for half of them.
        threshold = max(self.ess_threshold * self.num_samples, min(2.0, self.num_samples / 2))
        if not ess < threshold:  # NaN (a rejected step) is reported as a fault instead
            return {}
        return {
            "ess": (
                f"LocalEntropy: the importance weights degenerated at outer step {step}: "
                f"effective sample size {ess:.1f} of num_samples={self.num_samples} proposals "
                f"(threshold {threshold:g}). The loss "
                "varies by much more than 1 over the proposal N(x_k, tau I), so the step "
                "rests on a few proposals. Lower tau (or beta), raise num_samples, start "
                "closer to a minimum, or use another sampler ('nuts', 'sgld'). Shown once "
                "per run; the ESS of every step is in info['importance_ess']."
            )
        }
