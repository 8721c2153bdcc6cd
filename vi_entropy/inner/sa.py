"""NumPyro's sample-adaptive (SA) kernel, made usable as a warm-started inner sampler.

:class:`numpyro.infer.SA` is gradient-free (one potential evaluation per transition), but
as shipped it (a) replaces given ``init_params`` by a fresh initialization when it has a
model, which also breaks vectorized chains, and (b) has no ``refresh``/``wrap_model``, so
its population's cached energies go stale when the target moves, and (c) draws its
initial population from ``N(init, I)``, which is far too wide for a tilted posterior of
scale ``√τ``.  :class:`SA` keeps NumPyro's transition untouched and fixes those points;
what it needs of NumPyro's internals is in :mod:`vi_entropy._numpyro_compat`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer import sa as _numpyro_sa
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.sa import SAState

from vi_entropy import _validation as check
from vi_entropy._numpyro_compat import SAInternals
from vi_entropy.tilted import TAU
from vi_entropy.types import ChainBudget


class SA(SAInternals):
    """:class:`numpyro.infer.SA` that honours ``init_params`` and supports ``refresh``.

    NumPyro's parameters ``SA(model=None, potential_fn=None, adapt_state_size=None,
    dense_mass=True, init_strategy=init_to_uniform)`` and ``init_scale``.  Within
    :class:`~vi_entropy.LocalEntropy` (``sampler="sa"``) the defaults are
    ``dense_mass=False`` and ``adapt_state_size=min(2d, 64)``: NumPyro's dense default
    needs ``O(d²)`` memory and time per step and is unusable for networks.

    Each transition costs one evaluation of the potential and no gradient (gradient-free
    MCMC; Zhu 2019): a new point is proposed from a Gaussian fitted to a population of
    ``adapt_state_size`` points, which it may replace.

    Parameters
    ----------
    model : callable, optional
        NumPyro model (or give ``potential_fn``).
    potential_fn : callable, optional
        Potential energy of a pytree of unconstrained values.
    adapt_state_size : int, optional
        Population size (NumPyro's default ``2d``).
    dense_mass : bool, default True
        Full (``True``) or diagonal proposal covariance.
    init_strategy : callable, default ``init_to_uniform``
        Used when ``init_params`` is not given.
    init_scale : float, optional
        Standard deviation, per coordinate, of the initial population around the initial
        point.  Default: ``√τ`` when the model is a tilted model (it then receives ``τ``;
        the population starts as draws of the Gaussian factor ``N(x_k, τI)``), else
        NumPyro's ``1``.  With NumPyro's ``1`` and ``τ`` small, the population's spread,
        and so every proposal, is far wider than the tilted posterior.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> mcmc = MCMC(SA(model, dense_mass=False), num_warmup=500, num_samples=500,
    ...             num_chains=2, chain_method="vectorized", progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0), init_params={"x": jnp.ones((2, 2))})
    >>> mcmc.get_samples()["x"].shape
    (1000, 2)
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        adapt_state_size: int | None = None,
        dense_mass: bool = True,
        init_strategy: Callable = init_to_uniform,
        init_scale: float | None = None,
    ) -> None:
        super().__init__(model, potential_fn, adapt_state_size, dense_mass, init_strategy)
        if init_scale is not None:
            init_scale = check.positive_float("init_scale", init_scale)
        self._init_scale = init_scale

    @classmethod
    def from_numpyro(cls, kernel: _numpyro_sa.SA, model: Callable | None = None) -> SA:
        """Copy the settings of a NumPyro ``SA`` kernel (optionally onto another model)."""
        settings = cls.settings_of(kernel)
        if model is not None:
            settings.update(model=model, potential_fn=None)
        return cls(**settings, init_scale=getattr(kernel, "init_scale", None))

    @property
    def init_scale(self) -> float | None:
        """The initial population's standard deviation per coordinate (``None``: default)."""
        return self._init_scale

    def wrap_init_fn(self, init_fn: Callable) -> Callable:
        """NumPyro's ``init_kernel`` with the initial population's scale set (see above)."""
        init_scale = self._init_scale

        def init_kernel(
            init_params: Any,
            num_warmup: int,
            inverse_mass_matrix: Any = None,
            dense_mass: bool = False,
            model_kwargs: dict | None = None,
            **kwargs: Any,
        ) -> SAState:
            if inverse_mass_matrix is None:
                variance = None
                if init_scale is not None:
                    variance = init_scale**2
                elif model_kwargs is not None and TAU in model_kwargs:
                    variance = model_kwargs[TAU]
                if variance is not None:
                    flat = ravel_pytree(init_params)[0]
                    diagonal = jnp.full(flat.shape, variance, flat.dtype)
                    inverse_mass_matrix = jnp.diag(diagonal) if dense_mass else diagonal
            return init_fn(
                init_params,
                num_warmup,
                inverse_mass_matrix=inverse_mass_matrix,
                dense_mass=dense_mass,
                model_kwargs=model_kwargs,
                **kwargs,
            )

        return init_kernel

    def evaluation_counts(
        self, state: SAState, stats: Mapping[str, Any], budget: ChainBudget
    ) -> dict[str, jax.Array]:
        """One potential evaluation per transition and per initial population point, and
        one at the refresh, per chain (see :class:`~vi_entropy.types.ChainBudget`)."""
        pop = state.adapt_state.zs.shape[1]  # population size (chains, points, d)
        per_refresh = pop + 1  # the population and the current point
        transitions = budget.transitions + budget.warmup
        evals = budget.chains * (transitions + per_refresh * budget.refreshes) + budget.init
        return {
            "num_grad_evals": jnp.asarray(budget.init),
            "num_potential_evals": jnp.asarray(evals),
        }

    def refresh(self, state: SAState, model_args: tuple, model_kwargs: dict | None) -> SAState:
        """Recompute the energies of the current point and of the whole population."""
        pe_fn = self.potential_fn_at(model_args, model_kwargs)
        unravel = ravel_pytree(state.z)[1]
        pes = jax.vmap(lambda z: pe_fn(unravel(z)))(state.adapt_state.zs)
        return state._replace(
            potential_energy=pe_fn(state.z), adapt_state=state.adapt_state._replace(pes=pes)
        )

    def wrap_model(self, wrapper: Callable) -> SA:
        """A copy of this kernel bound to ``wrapper(self.model)``."""
        if self.model is None:
            raise ValueError("`wrap_model` needs a kernel built from a model.")
        return SA.from_numpyro(self, wrapper(self.model))
