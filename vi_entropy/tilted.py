"""The tilted posterior: a NumPyro model pulled towards a centre by a Gaussian factor.

At outer step ``k`` both schemes need the density (paper, "shifted density")

.. math::

    \\varphi_k(u) \\propto \\exp\\big(-f(u) - |u - x_k|^2 / (2\\tau)\\big),

where ``f = beta * U`` and ``U`` is the model's potential energy (negative log joint in
the unconstrained space of its latent sites, Jacobians included), exactly the space in
which NumPyro's MCMC kernels and autoguides work.  This module turns a model into

* :func:`tilt_model`, an ordinary NumPyro model whose posterior is ``φ_k``; the centre
  and ``τ`` are keyword arguments, so every NumPyro kernel (``NUTS``, ``HMC``, ``SA``,
  :class:`~vi_entropy.inner.SGLD`) and ``SVI`` runs on it with the centre as traced
  data, compiled once;
* :class:`TiltedPosterior`, the flat-vector view used by the pure-JAX parts (importance
  sampling, Robbins-Monro, the loss estimators): ``f`` as a function of a flat vector,
  and the maps between flat unconstrained vectors and named, constrained parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.extend.core import Var
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy, transform_fn

from vi_entropy._numpyro_compat import unconstrained_values_on_stack
from vi_entropy.model_args import merge_args, partition_args

# Keyword arguments the tilted model takes on top of the model's own.  They start with
# ``_vi_`` so they cannot collide with a user's keyword names.
CENTRE = "_vi_centre"
TAU = "_vi_tau"
BATCH_KEY = "_vi_batch_key"
TILT_SITE = "_vi_tilt"


def _is_latent(site: Mapping[str, Any]) -> bool:
    return site["type"] == "sample" and not site["is_observed"]


def tilt_model(model: Callable, beta: float = 1.0) -> Callable:
    """Return the tilted model: ``model`` scaled by ``beta`` times ``N(centre, τI)``.

    The returned callable is a NumPyro model with the same arguments as ``model`` plus
    three keyword arguments: ``_vi_centre`` (dict of unconstrained site values),
    ``_vi_tau`` (the variance ``τ``) and, optionally, ``_vi_batch_key`` (a PRNG key that
    fixes the mini-batch of ``numpyro.plate(..., subsample_size=B)`` sites, so that the
    potential is a deterministic function, as NUTS/HMC require).  Its potential energy is
    ``beta * U(u) + |u - centre|² / (2τ)``.

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.
    beta : float, default 1.0
        Inverse temperature: the model's log density is scaled by ``beta``.

    Returns
    -------
    callable
        The tilted NumPyro model (``__wrapped__`` is ``model``).

    Example
    -------
    >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer.util import potential_energy
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> tilted = tilt_model(model)
    >>> u = {"x": jnp.array(1.0)}
    >>> kw = {"_vi_centre": {"x": jnp.array(3.0)}, "_vi_tau": 2.0}
    >>> round(float(potential_energy(tilted, (), kw, u) - potential_energy(model, (), {}, u)), 4)
    1.0
    """
    scaled = model if beta == 1.0 else handlers.scale(model, scale=beta)

    def tilted_model(*args: Any, **kwargs: Any) -> Any:
        centre = kwargs.pop(CENTRE)
        tau = kwargs.pop(TAU)
        batch_key = kwargs.pop(BATCH_KEY, None)
        fn = scaled if batch_key is None else handlers.seed(scaled, rng_seed=batch_key)
        with handlers.trace() as tr:
            out = fn(*args, **kwargs)
        unconstrained = unconstrained_values_on_stack()
        sq_dist = 0.0
        log_jac_fix = 0.0
        for name, site in tr.items():
            if not _is_latent(site) or name not in centre:
                continue
            if unconstrained is not None and name in unconstrained:
                u = unconstrained[name]
            else:
                # Values arrive constrained (SVI, Predictive): map them back.  The guide
                # carries the Jacobian unscaled, so the model adds (beta - 1) log|J| to
                # keep the target equal to beta * U.
                t = biject_to(site["fn"].support)
                u = t.inv(site["value"])
                if beta != 1.0:
                    ladj = t.log_abs_det_jacobian(u, site["value"])
                    log_jac_fix = log_jac_fix + (beta - 1.0) * jnp.sum(ladj)
            sq_dist = sq_dist + jnp.sum((u - centre[name]) ** 2)
        numpyro.factor(TILT_SITE, log_jac_fix - 0.5 * sq_dist / tau)
        return out

    tilted_model.__name__ = f"tilted_{getattr(model, '__name__', 'model')}"
    tilted_model.__wrapped__ = model  # type: ignore[attr-defined]
    return tilted_model


class SiteInfo(NamedTuple):
    """Shape, dtype and bijection of one latent site (constrained ↔ unconstrained)."""

    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    dtype: Any
    transform: Any


def _no_bijection(name: str, support: Any) -> ValueError:
    return ValueError(
        f"model: latent site '{name}' has support {support}, which has no bijection to "
        "the real line, so it cannot be unconstrained."
    )


def _init_or_explain(site: Mapping[str, Any]) -> Any:
    """``init_to_uniform``, with our error for supports that cannot be unconstrained."""
    try:
        return init_to_uniform(site)
    except NotImplementedError as err:
        raise _no_bijection(site["name"], site["fn"].support) from err


def _base_distribution(fn: Any) -> Any:
    """The distribution under plate expansion, ``.to_event`` and masks (for messages)."""
    while hasattr(fn, "base_dist") and type(fn).__name__ in (
        "ExpandedDistribution",
        "Independent",
        "MaskedDistribution",
    ):
        fn = fn.base_dist
    return fn


def trace_model(
    model: Callable, model_args: tuple, model_kwargs: Mapping[str, Any], rng_key: Any
) -> dict[str, Any]:
    """One trace of ``model``, its latent sites at NumPyro MCMC's initial values.

    This is the prototype trace (as NumPyro's autoguides keep one): the model's sites,
    plates and supports, from which :func:`inspect_model` and the fitted guide read the
    model's structure.
    """
    # Values as NumPyro's MCMC initializes them, so improper priors trace too.
    seeded = handlers.substitute(
        handlers.seed(model, rng_seed=rng_key), substitute_fn=_init_or_explain
    )
    return handlers.trace(seeded).get_trace(*model_args, **model_kwargs)


def abstract_prototype(
    model: Callable, model_args: tuple, model_kwargs: Mapping[str, Any], rng_key: Any
) -> tuple[dict[str, Any], tuple[dict[str, SiteInfo], bool]] | None:
    """The prototype trace and :func:`inspect_model`'s result, traced abstractly.

    Run eagerly, the trace of a model compiles each of its JAX operations (a first run
    pays about ten small compilations for it); under ``jax.eval_shape`` nothing is
    compiled or run.  The sites' values in the returned trace are
    ``jax.ShapeDtypeStruct``, and the distributions hold abstract values where the eager
    trace holds arrays: read the model's structure from it (supports, event dimensions,
    plates), not numbers.  ``None`` when that cannot be had abstractly: the model needs
    concrete array arguments (NumPy on its data, Python control flow on values), fails
    under tracing in any other way (the eager trace then raises the model's own error),
    or a latent site's transform holds a traced value (a support set by the data).
    """
    dynamic, static = partition_args(model_args, model_kwargs)
    found: list = []

    def trace_abstractly(dynamic: list) -> int:
        args, kwargs = merge_args(dynamic, static)
        tr = trace_model(model, args, kwargs, rng_key)
        found.append((tr, inspect_model(model, args, kwargs, rng_key, tr)))
        return 0

    try:
        jax.eval_shape(trace_abstractly, dynamic)
    except Exception:  # noqa: BLE001 - every failure is left to the eager trace
        return None
    tr, (sites, subsamples) = found[0]
    if any(_holds_tracer(info.transform) for info in sites.values()):
        return None
    for site in tr.values():
        # A tree for param and mutable sites (a network's weights).
        site["value"] = jax.tree.map(_shape_of_tracer, site.get("value"))
    return tr, (sites, subsamples)


def _shape_of_tracer(value: Any) -> Any:
    if isinstance(value, jax.core.Tracer):
        return jax.ShapeDtypeStruct(value.shape, value.dtype)
    return value


def _holds_tracer(transform: Any) -> bool:
    """Whether a transform (NumPyro's are pytrees) holds a traced value; a user's transform
    that is no pytree cannot tell, and counts as holding one."""
    try:
        leaves = jax.tree.leaves(transform)
    except NotImplementedError:
        return True
    return any(isinstance(x, jax.core.Tracer) for x in leaves)


def subsampled_plates(tr: Mapping[str, Any]) -> set[str]:
    """Names of the plates in the trace ``tr`` that draw a mini-batch (``subsample_size < size``).

    A plate with ``subsample_size`` equal to its size sees all of its data in every trace,
    so it does not count.
    """
    return {
        name
        for name, site in tr.items()
        if site["type"] == "plate"
        and site["args"][1] is not None
        and site["args"][1] < site["args"][0]
    }


#: Site types NumPyro's MCMC holds at their values in one trace of the model (not latent).
HELD_TYPES = ("param", "mutable")


def held_sites(tr: Mapping[str, Any]) -> list[str]:
    """Names of the ``numpyro.param`` and ``numpyro.mutable`` sites in the trace ``tr``.

    ``numpyro.contrib.module``'s ``random_flax_module``, ``random_nnx_module`` and
    ``random_eqx_module`` always make one (``"<name>$params"``, and ``"<name>$state"``
    for Flax's mutable state such as batch statistics).
    """
    return [name for name, site in tr.items() if site["type"] in HELD_TYPES]


def hold(model: Callable, values: Mapping[str, Any]) -> Callable:
    """``model`` with its param and mutable sites held at ``values`` (as NumPyro's MCMC).

    NumPyro's ``initialize_model`` substitutes the values of one trace into these sites;
    so does this, and it also hides them from the handlers around the model, so that an
    ``SVI`` fit (heat regularization's step 2) does not train them and a kernel's own
    trace finds none to replace.  ``substitute`` hands each call a copy of a mutable
    site's dict, so a network's updates of its state never reach ``values``.

    Example
    -------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model():
    ...     loc = numpyro.param("loc", 0.0)
    ...     numpyro.sample("x", dist.Normal(loc, 1.0))
    >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(hold(model, {"loc": 3.0}), 0))
    >>> sorted(tr.get_trace()), tr.get_trace()["x"]["fn"].loc
    (['x'], 3.0)
    """
    if not values:
        return model
    names = frozenset(values)
    return handlers.block(
        handlers.substitute(model, data=dict(values)),
        hide_fn=lambda msg: msg["type"] in HELD_TYPES and msg["name"] in names,
    )


def held_values(
    model: Callable, model_args: tuple, model_kwargs: Mapping[str, Any], names: list[str]
) -> dict[str, Any]:
    """The values of the sites ``names`` in one trace of ``model`` seeded with key 0.

    Key 0, not the run's: a scheme sets up once per signature of its arguments (and with
    key 0 when it resumes), so the held values cannot follow the run's key.  The trace is
    compiled (run eagerly, a network's initialization compiles op by op, seconds), and
    eager when the model needs concrete arguments or holds values that are no arrays.
    """
    key = jax.random.PRNGKey(0)
    dynamic, static = partition_args(model_args, model_kwargs)

    def values(dynamic: list) -> dict[str, Any]:
        args, kwargs = merge_args(dynamic, static)
        tr = trace_model(model, args, kwargs, key)
        return {name: tr[name]["value"] for name in names}

    try:
        return jax.jit(values)(dynamic)
    except Exception:  # noqa: BLE001 - the eager trace raises the model's own error
        tr = trace_model(model, model_args, model_kwargs, key)
        return {name: tr[name]["value"] for name in names}


def reaching(fn: Callable[[dict[str, Any]], jax.Array], values: Mapping[str, Any]) -> list[str]:
    """The names in ``values`` whose value ``fn(values)`` depends on, read off its jaxpr.

    A dependency is a path from an input to the output through the jaxpr's equations
    (nested jaxprs count as a whole).  A network's initial weights that only give shapes
    to sampled ones do not reach it.  If ``fn`` cannot be traced with ``values`` as
    inputs (Python control flow on them, values that are no arrays), every name counts.
    """
    try:
        jaxpr = jax.make_jaxpr(fn)(dict(values)).jaxpr
    except Exception:  # noqa: BLE001 - cannot tell, so say all of them
        return sorted(values)
    live = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or not live.isdisjoint(eqn.outvars):
            live.update(v for v in eqn.invars if isinstance(v, Var))
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(dict(values))[0]]
    return sorted({path[0].key for path, v in zip(paths, jaxpr.invars, strict=True) if v in live})


def inspect_model(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    rng_key: Any,
    tr: Mapping[str, Any] | None = None,
) -> tuple[dict[str, SiteInfo], bool]:
    """Trace ``model`` once (or read the trace ``tr``) and describe its latent sites.

    Returns ``(sites, subsamples)``: the latent sites' :class:`SiteInfo` and whether the
    model subsamples a plate.  ``numpyro.param`` and ``numpyro.mutable`` sites are not
    latent: they are held at their initial values (:func:`held_sites`).  Raises
    ``ValueError`` for models this package cannot tilt: discrete latent sites (enumerated
    or not), no latent sites, latent sites local to a subsampled plate, or supports
    without a bijection.
    """
    if tr is None:
        tr = trace_model(model, model_args, model_kwargs, rng_key)
    sites: dict[str, SiteInfo] = {}
    subsampled = subsampled_plates(tr)
    for name, site in tr.items():
        if site["type"] == "plate":
            continue
        if not _is_latent(site):  # param and mutable sites are held (see held_sites)
            continue
        fn = site["fn"]
        if fn.support.is_discrete:
            if (site.get("infer") or {}).get("enumerate"):
                raise ValueError(
                    f"model: latent site '{name}' is a discrete site marked for enumeration "
                    f"(infer={{'enumerate': {site['infer']['enumerate']!r}}}); enumeration "
                    "is not supported: the tilted posterior needs continuous latent sites. "
                    "Sum the site out in the model by hand (e.g. with logsumexp in a "
                    "numpyro.factor), or observe it."
                )
            raise ValueError(
                f"model: latent site '{name}' has a discrete distribution "
                f"({type(_base_distribution(fn)).__name__}); the tilted posterior needs "
                "continuous latent sites (marginalize it out, or observe it)."
            )
        if any(frame.name in subsampled for frame in site["cond_indep_stack"]):
            raise ValueError(
                f"model: latent site '{name}' lives inside a subsampled plate; only "
                "global latent sites can be tilted (subsample the likelihood only)."
            )
        try:
            transform = biject_to(fn.support)
        except NotImplementedError as err:
            raise _no_bijection(name, fn.support) from err
        value = site["value"]
        u = transform.inv(value)
        sites[name] = SiteInfo(tuple(jnp.shape(value)), tuple(jnp.shape(u)), value.dtype, transform)
    if not sites:
        raise ValueError("model: it has no latent sample sites, so there is nothing to train.")
    return sites, bool(subsampled)


class TiltedPosterior:
    """Flat-vector view of a model's tilted posterior (set up from one trace of the model).

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.
    beta : float, default 1.0
        Inverse temperature: the loss is ``f = beta * U``.

    Notes
    -----
    After :meth:`setup` the instance knows the latent sites and offers ``potential``
    (``f`` of a flat unconstrained vector), ``tilted_potential``
    (``f(u) + |u − x_k|²/(2τ)``, the potential of ``φ_k``), ``constrain`` and
    ``unconstrain``, and ``constrain_all`` (latent and deterministic sites); it keeps
    the trace of ``setup`` as ``prototype_trace`` (the model's plates and supports, read
    by :class:`~vi_entropy.GaussianGuide`; its values are ``jax.ShapeDtypeStruct`` when
    the model could be traced abstractly, see :func:`abstract_prototype`).
    ``model_kwargs`` builds the keyword arguments of :attr:`tilted_model` for a centre and
    ``τ``.

    ``numpyro.param`` and ``numpyro.mutable`` sites (the ``"<name>$params"`` site of
    ``numpyro.contrib.module.random_flax_module`` and its kin) are held at their values in
    one trace of the model seeded with key 0, as NumPyro's MCMC holds them:
    ``held_values`` keeps them, ``held_model`` is the model that holds them (see
    :func:`hold`; every density here is that model's), and ``held_in_density`` names
    those the potential depends on (a network's initial weights, replaced by sampled
    ones, do not).

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("s", dist.Exponential(1.0))
    >>> tp = TiltedPosterior(model)
    >>> tp.setup(jax.random.PRNGKey(0), (), {})
    >>> u = tp.unconstrain({"s": jnp.array(1.0)})  # log s
    >>> u.tolist(), tp.dim
    ([0.0], 1)
    >>> round(float(tp.potential(u, (), {})), 4)  # s - log s at s = 1 (Jacobian included)
    1.0
    >>> round(float(tp.tilted_potential(u, jnp.ones(1), 0.5, (), {})), 4)  # + 1²/(2·0.5)
    2.0
    """

    def __init__(self, model: Callable, beta: float = 1.0) -> None:
        self.model = model
        self.beta = float(beta)
        self._bind(model)
        self.held_values: dict[str, Any] = {}
        self.held_in_density: list[str] = []
        self.sites: dict[str, SiteInfo] = {}
        self.subsamples = False
        #: The trace of :meth:`setup` (NumPyro's autoguides call it the prototype trace).
        self.prototype_trace: dict[str, Any] | None = None
        self._unravel: Callable[[jax.Array], dict[str, jax.Array]] | None = None
        self.dim = 0
        self.dtype: Any = None

    # -- set-up -------------------------------------------------------------------------
    def _bind(self, model: Callable) -> None:
        """Build the densities on ``model`` (the user's, or it with param sites held)."""
        self.held_model = model
        self.scaled_model = model if self.beta == 1.0 else handlers.scale(model, scale=self.beta)
        self.tilted_model = tilt_model(model, self.beta)

    def setup(self, rng_key: Any, model_args: tuple, model_kwargs: Mapping[str, Any]) -> None:
        """Trace the model once and record its latent sites.

        The trace is abstract when it can be (:func:`abstract_prototype`: nothing
        compiled or run); a model that needs concrete data, or whose supports depend on
        it, is traced eagerly.
        """
        found = abstract_prototype(self.model, model_args, model_kwargs, rng_key)
        if found is None:
            tr = trace_model(self.model, model_args, model_kwargs, rng_key)
            found = tr, inspect_model(self.model, model_args, model_kwargs, rng_key, tr)
        self.prototype_trace, (self.sites, self.subsamples) = found
        # Shapes only (``eval_shape``): eager zeros and concatenation would each compile.
        unravel: list[Callable[[jax.Array], dict[str, jax.Array]]] = []

        def flatten() -> jax.Array:
            zeros = {k: jnp.zeros(s.unconstrained_shape, s.dtype) for k, s in self.sites.items()}
            flat, fn = ravel_pytree(zeros)
            unravel.append(fn)
            return flat

        flat = jax.eval_shape(flatten)
        self._unravel = unravel[0]
        self.dim = int(flat.shape[0])
        self.dtype = flat.dtype
        self._hold_params(model_args, model_kwargs)

    def _hold_params(self, model_args: tuple, model_kwargs: Mapping[str, Any]) -> None:
        """Hold the param and mutable sites at their values in one trace (key 0)."""
        assert self.prototype_trace is not None
        names = held_sites(self.prototype_trace)
        if not names:
            self.held_values, self.held_in_density = {}, []
            if self.held_model is not self.model:  # set up before with other arguments
                self._bind(self.model)
            return
        self.held_values = held_values(self.model, model_args, model_kwargs, names)
        seeded = handlers.seed(self.model, rng_seed=0)  # a key for subsampled plates

        def potential(values: dict[str, Any]) -> jax.Array:
            u = self.unravel(jnp.zeros(self.dim, self.dtype))
            return potential_energy(hold(seeded, values), model_args, dict(model_kwargs), u)

        self.held_in_density = reaching(potential, self.held_values)
        self._bind(hold(self.model, self.held_values))

    @property
    def inv_transforms(self) -> dict[str, Any]:
        return {k: s.transform for k, s in self.sites.items()}

    # -- conversions --------------------------------------------------------------------
    def unravel(self, flat: jax.Array) -> dict[str, jax.Array]:
        """Flat unconstrained vector -> dict of unconstrained site values."""
        assert self._unravel is not None, "call setup() first"
        return self._unravel(flat)

    def ravel(self, unconstrained: Mapping[str, Any]) -> jax.Array:
        """Dict of unconstrained site values -> flat vector (site order of the model)."""
        return ravel_pytree({k: unconstrained[k] for k in self.sites})[0]

    def constrain(self, flat: jax.Array) -> dict[str, jax.Array]:
        """Flat unconstrained vector -> dict of constrained site values."""
        return transform_fn(self.inv_transforms, self.unravel(flat))

    def constrain_all(
        self, flat: jax.Array, model_args: tuple, model_kwargs: Mapping[str, Any]
    ) -> dict[str, jax.Array]:
        """Flat unconstrained vector -> constrained latent sites and deterministic sites.

        The model is run once at these values (NumPyro's ``constrain_fn`` with
        ``return_deterministic=True``), so the result also holds its
        ``numpyro.deterministic`` sites, among them the original sites of reparameterized
        ones (``theta`` beside ``theta_decentered`` under ``LocScaleReparam``).  Under
        ``jax.vmap`` it maps a batch of draws.
        """
        model = handlers.seed(self.held_model, rng_seed=0)  # a key for subsampled plates
        return constrain_fn(
            model, model_args, dict(model_kwargs), self.unravel(flat), return_deterministic=True
        )

    def unconstrain(self, params: Mapping[str, Any]) -> jax.Array:
        """Dict of constrained site values -> flat unconstrained vector."""
        # In the sites' own dtype (e.g. float64 values for float32 sites, or the reverse
        # under JAX_ENABLE_X64), so that the centre has one dtype all run long.
        values = {k: jnp.asarray(params[k], s.dtype) for k, s in self.sites.items()}
        return self.ravel(transform_fn(self.inv_transforms, values, invert=True))

    # -- densities ----------------------------------------------------------------------
    def potential(
        self,
        flat: jax.Array,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        batch_key: Any = None,
    ) -> jax.Array:
        """``f(u) = beta * U(u)``; ``batch_key`` fixes the mini-batch of subsampled plates."""
        model = self.scaled_model
        if batch_key is not None:
            model = handlers.seed(model, rng_seed=batch_key)
        return potential_energy(model, model_args, dict(model_kwargs), self.unravel(flat))

    def tilted_potential(
        self,
        flat: jax.Array,
        centre: jax.Array,
        tau: jax.Array,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        batch_key: Any = None,
    ) -> jax.Array:
        """``f(u) + |u - centre|² / (2τ)``, the potential of the tilted posterior."""
        f = self.potential(flat, model_args, model_kwargs, batch_key)
        return f + 0.5 * jnp.sum((flat - centre) ** 2) / tau

    def model_kwargs(
        self,
        model_kwargs: Mapping[str, Any],
        centre: jax.Array,
        tau: jax.Array,
        batch_key: Any = None,
    ) -> dict[str, Any]:
        """Keyword arguments of :attr:`tilted_model` for this centre and ``τ``."""
        kw = dict(model_kwargs)
        kw[CENTRE] = self.unravel(centre)
        kw[TAU] = tau
        if batch_key is not None:
            kw[BATCH_KEY] = batch_key
        return kw

    # -- validation ---------------------------------------------------------------------
    def check_params(self, params: Mapping[str, Any], name: str = "init_params") -> None:
        """Raise a clear error if ``params`` do not match the model's latent sites.

        Every problem is reported at once: missing and unknown sites, shapes, dtypes,
        non-finite values and values outside a site's support.
        """
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{name}: expected a dict of constrained values keyed by latent site name, "
                f"got {type(params).__name__}."
            )
        problems = []
        missing = sorted(set(self.sites) - set(params))
        extra = sorted(set(params) - set(self.sites))
        if missing:
            problems.append(f"missing sites {missing}")
        if extra:
            problems.append(f"unknown sites {extra}")
        for k, s in self.sites.items():
            if k not in params:
                continue
            value = params[k]
            shape = tuple(np.shape(value))
            if shape != s.shape:
                problems.append(f"{name}['{k}']: expected shape {s.shape}, got {shape}")
                continue
            dtype = jnp.result_type(value)
            if not jnp.issubdtype(dtype, jnp.floating):
                problems.append(f"{name}['{k}']: expected a floating-point array, got {dtype}")
                continue
            arr = np.asarray(value)
            if not np.all(np.isfinite(arr)):
                problems.append(f"{name}['{k}']: values must be finite, got {arr!r}")
                continue
            support = s.transform.codomain
            if not bool(np.all(np.asarray(support(jnp.asarray(value))))):
                problems.append(
                    f"{name}['{k}']: values must lie in the support {support}, got {arr!r}"
                )
        if problems:
            raise ValueError(
                f"{name}: does not match the model's latent sites {sorted(self.sites)}: "
                + "; ".join(problems)
                + "."
            )
