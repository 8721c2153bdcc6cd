"""Heat regularization's reverse-KL fit by NumPyro ``SVI`` (an inner step).

``argmin_m KL(N(m, τI) ‖ φ_k) = argmin_m f_τ(m) + |m − x_k|²/(2τ)``: the ELBO of the
tilted model under :class:`~vi_entropy.guide.GaussianGuide` (scale fixed at ``√τ``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.infer import SVI, Trace_ELBO

from vi_entropy._compile import normal
from vi_entropy.faults import Fault, flag
from vi_entropy.guide import GaussianGuide
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Context

# Draws (times num_particles) behind SVIFit's convergence check, and their key stream
# (``fold_in`` of the step's key: the fit's own randomness is untouched).
GAP_PARTICLES = 2
_GAP_STREAM = 0x6A9
# A median info["inner_gap"] above this, in a run that ended still moving, is named in the
# warning (see SVIFit._gap: converged fits give about 0.3 or less).
INNER_GAP_THRESHOLD = 1.0


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
    few or the learning rate too small for the step the centre had to make.  A fit that
    stops short is no harm while the run converges (on a network it often does, and
    trains well); a run that ends still moving names it among the causes (see
    :class:`~vi_entropy.observers.ConvergenceCheck`).
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

    def init(self, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context) -> Any:
        kw = self.tilted.model_kwargs(ctx.kwargs, centre, tau)
        return self.svi.init(rng_key, *ctx.args, **kw)

    def step(
        self, state: Any, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context
    ) -> tuple[jax.Array, Any, dict[str, jax.Array], None]:
        model_args, model_kwargs = ctx.args, ctx.kwargs
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
        return mean, state, info, None

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
        xi = normal(key_xi, (n, mean.shape[0]), mean.dtype)
        batch = key_batch if self.tilted.subsamples else None

        def f(u: jax.Array) -> jax.Array:
            return self.tilted.potential(u, model_args, model_kwargs, batch)

        xi = self.sharding.constrain(xi, n)
        grad = jnp.mean(jax.vmap(jax.grad(f))(mean + jnp.sqrt(tau) * xi), axis=0)
        distance = jnp.linalg.norm(tau * grad + mean - centre)
        scale = jnp.linalg.norm(mean - centre) + jnp.sqrt(tau * mean.shape[0])
        return distance / scale
