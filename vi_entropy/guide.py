"""The fitted Gaussian ``N(x, τI)`` as a NumPyro guide, on NumPyro's autoguide machinery.

Both schemes fit ``N(m, τI)`` in the model's unconstrained space; heat regularization's
SVI trains its mean, and after a run ``N(x_k, τ_k I)`` describes the centre.
:class:`GaussianGuide` is that Gaussian as an :class:`numpyro.infer.autoguide.AutoNormal`
whose scale is fixed at ``√τ``: like ``AutoNormal`` it mirrors the model's plates and
event dimensions (so ``Trace_ELBO`` and ``Predictive`` accept latents inside plates and
vector latents with batch dimensions) and pushes each site through its bijection.

Its parameters are named ``"_vi_<site>_loc"`` (the unconstrained mean of each latent
site) and ``"_vi_tau"`` (the variance): the ``_vi_`` prefix keeps them apart from the
model's own site names.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.distributions import constraints
from numpyro.infer.autoguide import AutoNormal

from vi_entropy._compile import normal
from vi_entropy.tilted import BATCH_KEY, CENTRE, TAU, TiltedPosterior

__all__ = ["GaussianGuide"]

#: Prefix of the guide's parameter names (NumPyro's autoguides use ``"auto"``).
PREFIX = "_vi"


def _is_real(support: Any) -> bool:
    """Whether a site lives on the real line already (no bijection needed), as AutoNormal."""
    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


class GaussianGuide(AutoNormal):
    """The fitted Gaussian ``N(loc, τI)`` as a NumPyro guide (an ``AutoNormal``, scale ``√τ``).

    For each latent site ``u_site ~ Normal(loc_site, √τ)`` in the unconstrained space,
    inside the site's plates and with its event dimensions (as NumPyro's ``AutoNormal``),
    pushed through the site's bijection.  Its parameters are ``"_vi_<site>_loc"``
    (unconstrained) and ``"_vi_tau"``; ``scheme.get_guide_params(state)`` gives them for a
    state.  Inside the tilted model (heat regularization's SVI) the guide reads ``τ``
    from the tilted model's ``_vi_tau`` keyword and initializes its means at the
    ``_vi_centre`` keyword; only the means are trained.

    ``Predictive(model, guide=scheme.guide, params=scheme.get_guide_params(state),
    num_samples=n)`` returns, as for any NumPyro guide, the sites the guide does not
    sample: observations and deterministic sites.  Pass ``return_sites`` naming the
    latent sites too (e.g. ``[*scheme.get_params(state), "obs"]``) to have them as well.

    Parameters
    ----------
    tilted : TiltedPosterior
        The model's tilted posterior; the guide reads the model's structure (sites,
        plates, supports) from its prototype trace once it is set up (by the scheme's
        ``init`` or ``run``).

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import Predictive
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    ...     with numpyro.plate("groups", 3):
    ...         theta = numpyro.sample("theta", dist.Normal(0.0, s))
    ...         numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.01, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> state = le.init(jax.random.PRNGKey(0), jnp.zeros(3))
    >>> sorted(le.get_guide_params(state))
    ['_vi_s_loc', '_vi_tau', '_vi_theta_loc']
    >>> draws = Predictive(model, guide=le.guide, params=le.get_guide_params(state),
    ...                    num_samples=500, return_sites=["s", "theta", "y"])(
    ...     jax.random.PRNGKey(1))
    >>> draws["theta"].shape, draws["y"].shape
    ((500, 3), (500, 3))
    >>> bool((draws["s"] > 0).all())  # N(x, τ) on log s, pushed through exp
    True
    """

    def __init__(self, tilted: TiltedPosterior) -> None:
        super().__init__(tilted.model, prefix=PREFIX)
        self.tilted = tilted

    # -- names ------------------------------------------------------------------------
    def loc_name(self, site: str) -> str:
        """Name of the parameter holding the unconstrained mean of latent site ``site``."""
        return f"{self.prefix}_{site}_loc"

    @property
    def tau_name(self) -> str:
        """Name of the parameter holding the variance ``τ``."""
        return f"{self.prefix}_tau"

    def params(self, centre: jax.Array, tau: Any) -> dict[str, jax.Array]:
        """Guide parameters for a flat unconstrained centre and a variance ``τ``."""
        out = {self.loc_name(k): v for k, v in self.tilted.unravel(centre).items()}
        out[self.tau_name] = jnp.asarray(tau)
        return out

    # -- the model's structure ------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        """Read plates and event dimensions from the tilted posterior's prototype trace.

        As ``AutoGuide._setup_prototype`` and ``AutoNormal._setup_prototype`` do from
        their own trace, without running ``initialize_model`` again: the model was
        traced once, with concrete arguments, when the scheme was set up.
        """
        tr = self.tilted.prototype_trace
        if tr is None:
            raise RuntimeError(
                "GaussianGuide: the model's sites are not known yet; call "
                "scheme.init(rng_key, *args) or scheme.run(...) first."
            )
        frames: dict[str, Any] = {}
        full_sizes: dict[str, int] = {}
        event_dims: dict[str, int] = {}
        for name, site in tr.items():
            if site["type"] == "plate":
                full_sizes[name] = site["args"][0]
        for name, info in self.tilted.sites.items():
            site = tr[name]
            for frame in site["cond_indep_stack"]:
                frames.setdefault(frame.name, frame)
            event_dims[name] = (
                site["fn"].event_dim + len(info.unconstrained_shape) - len(info.shape)
            )
        self._prototype_frames = frames
        self._prototype_frame_full_sizes = full_sizes
        self._event_dims = event_dims
        self.prototype_trace = tr

    def _ensure_setup(self) -> None:
        if self.prototype_trace is None or self.prototype_trace is not self.tilted.prototype_trace:
            self._setup_prototype()

    # -- the guide --------------------------------------------------------------------------
    def _tau(self, tau: Any) -> Any:
        if tau is None:
            tau = numpyro.param(self.tau_name, None)
            if tau is None:
                raise ValueError(
                    f"guide: no '{self.tau_name}' parameter; pass "
                    "params=scheme.get_guide_params(state)."
                )
        return tau

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, jax.Array]:
        centre = kwargs.pop(CENTRE, None)
        tau = kwargs.pop(TAU, None)
        kwargs.pop(BATCH_KEY, None)
        self._ensure_setup()
        scale = jnp.sqrt(self._tau(tau))
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, info in self.tilted.sites.items():
            site = self.prototype_trace[name]
            event_dim = self._event_dims[name]
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                init = None if centre is None else centre[name]
                loc = numpyro.param(self.loc_name(name), init, event_dim=event_dim)
                if loc is None:
                    raise ValueError(
                        f"guide: no '{self.loc_name(name)}' parameter; pass "
                        "params=scheme.get_guide_params(state)."
                    )
                fn = dist.Normal(loc, scale).to_event(event_dim)
                if not _is_real(site["fn"].support):
                    fn = dist.TransformedDistribution(fn, info.transform)
                result[name] = numpyro.sample(name, fn)
        return result

    # -- AutoGuide's other methods, with scale √τ -------------------------------------------
    def _locs(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        self._ensure_setup()
        return {k: params[self.loc_name(k)] for k in self.tilted.sites}

    def _constrain(self, latent: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {k: self.tilted.sites[k].transform(v) for k, v in latent.items()}

    def sample_posterior(
        self,
        rng_key: Any,
        params: Mapping[str, Any],
        *args: Any,
        sample_shape: tuple = (),
        **kwargs: Any,
    ) -> dict[str, jax.Array]:
        """Draws of the latent sites (constrained) from ``N(loc, τI)``.

        Deterministic sites and predictions: ``Predictive`` with this guide, or
        ``scheme.get_sites`` for a centre.
        """
        locs = self._locs(params)
        scale = jnp.sqrt(params[self.tau_name])
        keys = random.split(rng_key, len(locs))
        latent = {
            k: loc + scale * normal(key, tuple(sample_shape) + jnp.shape(loc), loc.dtype)
            for key, (k, loc) in zip(keys, locs.items(), strict=True)
        }
        return self._constrain(latent)

    def median(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        """The latent sites (constrained) at the guide's means."""
        return self._constrain(self._locs(params))

    def quantiles(self, params: Mapping[str, Any], quantiles: Any) -> dict[str, jax.Array]:
        """Quantiles of each latent site (constrained), leading axis over ``quantiles``."""
        q = jnp.asarray(quantiles)
        scale = jnp.sqrt(params[self.tau_name])
        latent = {
            k: dist.Normal(loc, scale).icdf(q.reshape((-1,) + (1,) * jnp.ndim(loc)))
            for k, loc in self._locs(params).items()
        }
        return self._constrain(latent)
