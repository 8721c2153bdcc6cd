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
from jax import lax, random
from jax.scipy.special import logsumexp

from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import Draws


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


def effective_sample_size(log_weights: jax.Array) -> jax.Array:
    """Kish's effective sample size ``(Σw)² / Σw²`` of (unnormalized) log-weights.

    Parameters
    ----------
    log_weights : jax.Array
        Log-weights of any shape (flattened); ``-inf`` for zero weight.

    Returns
    -------
    jax.Array
        A scalar between 1 and the number of weights.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> round(float(effective_sample_size(jnp.zeros(100))), 3)  # equal weights
    100.0
    >>> round(float(effective_sample_size(jnp.array([0.0, -jnp.inf, -jnp.inf]))), 6)
    1.0
    """
    log_weights = jnp.ravel(log_weights)
    return jnp.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))


class ImportanceSampler:
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

    Notes
    -----
    The inner sampler of ``LocalEntropy(..., sampler="importance")``; ``sample`` returns
    ``(state, Draws, counts)`` with weighted draws of shape ``(1, num_samples, d)`` and
    ``num_samples`` forward evaluations (no gradients).

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
    >>> state = sampler.init(key, centre, tau, (), {}, None)
    >>> state, draws, counts = sampler.sample(state, key, centre, tau, (), {}, None)
    >>> draws.values.shape, int(counts["num_potential_evals"])
    ((1, 4000, 1), 4000)
    >>> w = jax.nn.softmax(draws.log_weights.ravel())  # tilted mean of N(0,1): 0.5
    >>> bool(abs(w @ draws.values[0, :, 0] - 0.5) < 0.1)
    True
    """

    num_chains = 1

    def __init__(
        self,
        tilted: TiltedPosterior,
        num_samples: int,
        batch_size: int | None = None,
        sharding: BatchSharding | None = None,
    ):
        self.tilted = tilted
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.sharding = sharding or BatchSharding(None)

    def init(
        self,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        batch_key: Any,
    ) -> ImportanceState:
        return ImportanceState(rng_key)

    def sample(
        self,
        state: ImportanceState,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        batch_key: Any,
    ) -> tuple[ImportanceState, Draws, dict[str, jax.Array]]:
        noise = random.normal(rng_key, (self.num_samples, centre.shape[0]), centre.dtype)
        ys = self.sharding.constrain(centre + jnp.sqrt(tau) * noise, self.num_samples)
        # All proposals share one mini-batch: the weights must compare like with like.
        key = batch_key if self.tilted.subsamples else None

        def f(y: jax.Array) -> jax.Array:
            return self.tilted.potential(y, model_args, model_kwargs, key)

        pes = lax.map(f, ys, batch_size=self.batch_size) if self.batch_size else jax.vmap(f)(ys)
        log_w = jnp.where(jnp.isnan(pes), -jnp.inf, -pes)
        stats = {"potential_energy": pes[None], "log_weight": log_w[None]}
        counts = {
            "num_potential_evals": jnp.asarray(self.num_samples),
            "num_grad_evals": jnp.asarray(0),
        }
        return state, Draws(ys[None], log_w[None], stats), counts
