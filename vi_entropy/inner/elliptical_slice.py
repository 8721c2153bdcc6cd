"""Elliptical slice sampling with a capped shrinking bracket, gradient-free, tuning-free.

For a target written as a Gaussian reference ``N(m, s²I)`` times a likelihood ``e^{−Φ}``
(Murray, Adams & MacKay, AISTATS 2010), one transition draws ``ν ~ N(0, s²I)`` and a
level ``log u − Φ(y)``, then searches the ellipse

.. math::

    y(\\theta) = m + (y - m)\\cos\\theta + \\nu \\sin\\theta

by shrinking a bracket on ``θ`` (around ``θ = 0``, the current point) until ``−Φ``
clears the level.  Inside local entropy the reference is ``N(x_k, τI)`` and ``Φ = f``.

The shrinking loop is capped at ``max_shrinks``: when the cap is reached the chain stays
at ``y`` (counted in ``capped``).  This keeps the transition reversible: the chance of
reaching ``θ'`` from ``θ`` in ``k`` shrinks equals that of the way back, since both visit
the same brackets (Neal 2003, §4.2), so stopping after ``k ≤ K`` shrinks and staying
otherwise is a mixture of reversible moves.  Why not BlackJAX's ``elliptical_slice``:
its loop has no cap (under ``vmap`` every chain waits for the slowest, and dozens of
shrinks occur), and it accepts a proposal whose log density is NaN (the loop's test
``NaN <= level`` is false); see ``docs/benchmarks.md``.

The core is pure (:func:`elliptical_slice_kernel`, on flat vectors);
:class:`EllipticalSlice` is the NumPyro ``MCMCKernel`` around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.infer.initialization import init_to_uniform

from vi_entropy import _validation as check
from vi_entropy.inner.gaussian_reference import (
    GaussianReferenceKernel,
    reference_energy,
    start_evals,
)
from vi_entropy.types import ChainBudget


class EllipticalSliceState(NamedTuple):
    """State of :class:`EllipticalSlice`.

    - **i** - iteration count.
    - **z** - current draw (a pytree of unconstrained values when the kernel has a model).
    - **potential_energy** - the target's potential ``U`` at ``z``.
    - **num_evals** - potential evaluations of the last transition (1 + shrinks).
    - **capped** - whether the last transition hit ``max_shrinks`` (and stayed).
    - **rng_key** - random key for the next transition.
    """

    i: Any
    z: Any
    potential_energy: Any
    num_evals: Any
    capped: Any
    rng_key: Any


def elliptical_slice_kernel(
    rng_key: Any,
    x: jax.Array,
    potential: jax.Array,
    potential_fn: Callable[[jax.Array], jax.Array],
    loc: Any,
    scale: Any,
    max_shrinks: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One elliptical slice transition of ``π ∝ exp(−U)`` with reference ``N(m, s²I)``.

    The likelihood is ``e^{−Φ}``, ``Φ = U − ½|(·−m)/s|²``.  A point whose potential is not
    finite is never on the slice.

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
    max_shrinks : int
        Most shrinks of the bracket (at most ``1 + max_shrinks`` evaluations).

    Returns
    -------
    (x_new, potential_new, num_evals, capped)

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> U = lambda x: 0.5 * jnp.sum(x**2)  # the target is the reference: flat likelihood
    >>> x, pe, n, capped = elliptical_slice_kernel(
    ...     jax.random.PRNGKey(0), jnp.ones(2), 1.0, U, 0.0, 1.0, 10)
    >>> int(n), bool(capped)  # the first point on the ellipse is on the slice
    (1, False)
    """
    key_nu, key_level, key_theta, key_shrink = random.split(rng_key, 4)
    nu = scale * random.normal(key_nu, x.shape, x.dtype)
    level = -(potential - reference_energy(x, loc, scale)) + jnp.log(
        random.uniform(key_level, (), x.dtype)
    )

    def point(theta: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        y = loc + (x - loc) * jnp.cos(theta) + nu * jnp.sin(theta)
        pe = potential_fn(y)
        loglik = -(pe - reference_energy(y, loc, scale))
        return y, pe, jnp.isfinite(pe) & (loglik > level)

    theta = 2.0 * jnp.pi * random.uniform(key_theta, (), x.dtype)
    y, pe, on_slice = point(theta)
    carry = (jnp.array(1, jnp.int32), theta, theta - 2.0 * jnp.pi, theta, y, pe, on_slice)

    def shrink(carry: tuple) -> tuple:
        n, theta, lo, hi, *_ = carry
        # The bracket always contains θ = 0 (the current point, on the slice).
        lo = jnp.where(theta < 0, theta, lo)
        hi = jnp.where(theta < 0, hi, theta)
        theta = random.uniform(random.fold_in(key_shrink, n), (), x.dtype, lo, hi)
        return (n + 1, theta, lo, hi, *point(theta))

    def searching(carry: tuple) -> jax.Array:
        return ~carry[-1] & (carry[0] <= max_shrinks)

    n, _, _, _, y, pe, on_slice = lax.while_loop(searching, shrink, carry)
    return jnp.where(on_slice, y, x), jnp.where(on_slice, pe, potential), n, ~on_slice


class EllipticalSlice(GaussianReferenceKernel):
    """Elliptical slice sampling, with a capped bracket: gradient-free and tuning-free.

    Searches the ellipse ``m + (y − m) cos θ + ν sin θ``, ``ν ~ N(0, s²I)``, for a point
    above a random level of the likelihood ``e^{−Φ}``, ``Φ = U + log N(·; m, s²I)``
    (Murray, Adams & MacKay 2010).  Every transition moves unless ``max_shrinks`` is hit.
    Works inside :class:`numpyro.infer.MCMC` and as
    ``LocalEntropy(sampler="elliptical_slice")`` (reference ``N(x_k, τI)``, ``Φ = f``).

    Parameters
    ----------
    model : callable, optional
        NumPyro model.  Exactly one of ``model`` and ``potential_fn`` must be given.
    potential_fn : callable, optional
        Potential energy ``z -> U(z)`` when no model is given.
    max_shrinks : int, default 16
        Most shrinks of the bracket per transition (each costs one evaluation); a
        transition that reaches it stays where it is (``capped``).
    reference_loc, reference_scale : float or 1-d array, optional
        ``m`` and ``s`` of the reference.  Default: ``N(x_k, τI)`` on a tilted model
        (:func:`~vi_entropy.tilt_model`), else ``N(0, I)`` in the unconstrained space.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.

    Notes
    -----
    The number of evaluations varies per transition (``num_evals``).  Vectorized chains
    run the loop in lockstep: each transition costs ``chains × max over chains`` of
    them (``LocalEntropy`` reports both, ``num_potential_evals`` and
    ``num_potential_evals_executed``).

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(1.0, 0.5))
    >>> mcmc = MCMC(EllipticalSlice(model), num_warmup=200, num_samples=2000,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))
    >>> round(float(mcmc.get_samples()["x"].mean()), 1)
    1.0
    """

    _name = "EllipticalSlice"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        max_shrinks: int = 16,
        reference_loc: Any = None,
        reference_scale: Any = None,
        init_strategy: Callable = init_to_uniform,
    ) -> None:
        super().__init__(model, potential_fn, reference_loc, reference_scale, init_strategy)
        self.max_shrinks = check.count("max_shrinks", max_shrinks, minimum=0)

    def _init_state(
        self, z: Any, pe: Any, key: Any, model_kwargs: Any, model_args: tuple = ()
    ) -> EllipticalSliceState:
        return EllipticalSliceState(
            jnp.array(0), z, pe, jnp.array(1, jnp.int32), jnp.array(False), key
        )

    def _sample_one(
        self, state: EllipticalSliceState, model_args: tuple, model_kwargs: dict
    ) -> EllipticalSliceState:
        key, key_move = random.split(state.rng_key)
        x, potential_fn, unravel = self._flat_potential(state.z, model_args, model_kwargs)
        loc, scale = self.reference(state.z, model_kwargs)
        x, pe, n, capped = elliptical_slice_kernel(
            key_move, x, state.potential_energy, potential_fn, loc, scale, self.max_shrinks
        )
        return EllipticalSliceState(state.i + 1, unravel(x), pe, n, capped, key)

    def evaluation_counts(
        self, state: EllipticalSliceState, stats: Mapping[str, Any], budget: ChainBudget
    ) -> dict[str, jax.Array]:
        """``1 +`` shrinks per transition and the refresh; ``num_potential_evals_executed``
        counts what vectorized chains evaluate in lockstep: every chain as many times as
        the slowest (see :class:`~vi_entropy.types.ChainBudget`)."""
        n = stats["n_evals"]  # (chains, draws)
        start = start_evals(budget)
        return {
            "num_grad_evals": jnp.asarray(0),
            "num_potential_evals": jnp.sum(n) + budget.unkept[0] + start,
            "num_potential_evals_executed": (
                budget.chains * jnp.sum(jnp.max(n, axis=0)) + budget.unkept[1] + start
            ),
        }

    def transition_evals(self, state: EllipticalSliceState) -> jax.Array:
        """``[sum over chains, chains × max over chains]`` of the last transition's
        evaluations (vectorized chains)."""
        n = state.num_evals.astype(jnp.int32)
        return jnp.stack([jnp.sum(n), n.shape[0] * jnp.max(n)])

    def get_diagnostics_str(self, state: EllipticalSliceState) -> str:
        return (
            f"evals {float(jnp.mean(state.num_evals)):.1f}, "
            f"capped {float(jnp.mean(state.capped)):.2f}"
        )
