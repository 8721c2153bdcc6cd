"""What the Gaussian-reference kernels (pCN, elliptical slice) share.

Both sample a target ``π ∝ exp(−U)`` written as a Gaussian reference times a likelihood,

.. math::

    \\pi(u) \\propto N(u; m, s^2 I)\\, e^{-\\Phi(u)}, \\qquad
    \\Phi(u) = U(u) - \\tfrac{1}{2} |(u - m)/s|^2  \\;(+\\text{const}),

and use the reference's structure so that no gradient is needed.  The reference is, by
default, ``N(0, I)`` in the unconstrained space; on a tilted model (whose keyword
arguments carry the centre ``x_k`` and ``τ``, see :func:`~vi_entropy.tilt_model`) it is
the tilt's own factor ``N(x_k, τI)``, so that ``Φ = f``, the model's loss.

:class:`GaussianReferenceKernel` is the NumPyro shell: initialization with
``initialize_model`` (no gradient), vectorized chains, ``postprocess_fn``, ``refresh``
and ``wrap_model``.  A subclass supplies ``_init_extra`` and ``_move``, a pure function
of a flat vector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import potential_energy
from numpyro.util import is_prng_key

from vi_entropy.inner.base import ModelKernel
from vi_entropy.tilted import CENTRE, TAU
from vi_entropy.types import ChainBudget


def reference_energy(x: jax.Array, loc: Any, scale: Any) -> jax.Array:
    """``½ |(x − m)/s|²``: minus the log density of ``N(m, s²I)`` up to a constant."""
    return 0.5 * jnp.sum(jnp.square((x - loc) / scale))


def start_evals(budget: ChainBudget) -> int:
    """Potential evaluations at the chains' start points: one per chain and refresh;
    with ``readapt``, ``initialize_model`` also checks one point (no gradient)."""
    return budget.chains * budget.refreshes + (1 if budget.readapt else 0)


def _reference_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating) and not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{name}: expected a float or an array of floats, got {arr.dtype}.")
    if arr.ndim > 1:
        raise ValueError(
            f"{name}: expected a float or a flat vector over the unconstrained "
            f"coordinates, got shape {arr.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(arr))) or (
        name == "reference_scale" and bool(jnp.any(arr <= 0))
    ):
        bound = "finite and > 0" if name == "reference_scale" else "finite"
        raise ValueError(f"{name}: values must be {bound}, got {value!r}.")
    return arr


class GaussianReferenceKernel(ModelKernel):
    """Base of :class:`~vi_entropy.PCN` and :class:`~vi_entropy.EllipticalSlice`.

    Parameters
    ----------
    model : callable, optional
        NumPyro model.  Exactly one of ``model`` and ``potential_fn`` must be given.
    potential_fn : callable, optional
        Potential energy ``z -> U(z)`` when no model is given.
    reference_loc, reference_scale : float or 1-d array, optional
        Mean ``m`` and standard deviation ``s`` (per unconstrained coordinate, or one
        for all) of the reference ``N(m, s²I)``.  Default: ``N(x_k, τI)`` on a tilted
        model, else ``N(0, I)``.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.
    """

    _name = "GaussianReferenceKernel"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        reference_loc: Any = None,
        reference_scale: Any = None,
        init_strategy: Callable = init_to_uniform,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError(f"{self._name}: give exactly one of `model` and `potential_fn`.")
        if not callable(init_strategy):
            raise TypeError(
                f"init_strategy: expected a NumPyro init strategy, got {init_strategy!r}."
            )
        self._model = model
        self._potential_fn = potential_fn
        self.reference_loc = _reference_value("reference_loc", reference_loc)
        self.reference_scale = _reference_value("reference_scale", reference_scale)
        self._init_strategy = init_strategy
        self._postprocess_fn: Callable | None = None
        self._num_warmup = 0

    # -- the target and its reference ---------------------------------------------------
    def _potential(self, z: Any, model_args: tuple, model_kwargs: Mapping[str, Any]) -> Any:
        if self._model is None:
            return self._potential_fn(z)
        return potential_energy(self._model, model_args, dict(model_kwargs), z)

    def reference(self, z: Any, model_kwargs: Mapping[str, Any] | None) -> tuple[Any, Any]:
        """``(m, s)`` of the reference for a draw shaped like ``z`` (flat arrays or scalars)."""
        model_kwargs = {} if model_kwargs is None else model_kwargs
        flat = ravel_pytree(z)[0]
        tilted = CENTRE in model_kwargs and TAU in model_kwargs
        loc, scale = self.reference_loc, self.reference_scale
        if loc is None:
            # The centre holds the model's latent sites, as z does: same ravel order.
            loc = ravel_pytree(model_kwargs[CENTRE])[0] if tilted else jnp.zeros((), flat.dtype)
        if scale is None:
            scale = jnp.sqrt(model_kwargs[TAU]) if tilted else jnp.ones((), flat.dtype)
        return jnp.asarray(loc, flat.dtype), jnp.asarray(scale, flat.dtype)

    # -- initialization -------------------------------------------------------------------
    def init(
        self,
        rng_key: Any,
        num_warmup: int,
        init_params: Any = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> Any:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        self._num_warmup = int(num_warmup)
        vectorized = not is_prng_key(rng_key)
        # No gradient is taken (`validate_grad=False`): one potential evaluation per
        # initialization.
        init_params = self._initial_params(
            rng_key, init_params, model_args, model_kwargs, validate_grad=False
        )

        def one(z: Any, key: Any) -> Any:
            pe = self._potential(z, model_args, model_kwargs)
            return self._init_state(z, pe, key, model_kwargs, model_args)

        if vectorized:
            return jax.vmap(one)(init_params, rng_key)
        return one(init_params, rng_key)

    def refresh(self, state: Any, model_args: tuple, model_kwargs: dict | None) -> Any:
        """Recompute the cached potential energy for new model arguments (one evaluation):
        a new centre or mini-batch changes the target."""
        model_kwargs = {} if model_kwargs is None else model_kwargs
        return state._replace(potential_energy=self._potential(state.z, model_args, model_kwargs))

    # -- transitions ----------------------------------------------------------------------
    def _init_state(
        self, z: Any, pe: Any, key: Any, model_kwargs: Mapping[str, Any], model_args: tuple = ()
    ) -> Any:
        raise NotImplementedError

    def sample(self, state: Any, model_args: tuple, model_kwargs: dict | None) -> Any:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        return self._sample_chains(state, model_args, model_kwargs)

    def _flat_potential(
        self, z: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
    ) -> tuple[jax.Array, Callable[[jax.Array], jax.Array], Callable]:
        """The draw as a flat vector, ``U`` as a function of flat vectors, and ``unravel``."""
        flat, unravel = ravel_pytree(z)
        return flat, (lambda x: self._potential(unravel(x), model_args, model_kwargs)), unravel
