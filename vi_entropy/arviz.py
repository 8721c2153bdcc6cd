"""Export a run to ArviZ: draws, their statistics, the centres and the optimization trajectory.

All ArviZ code of the package lives here.  Groups of the result:

* ``posterior`` - draws named after the model's sites (constrained), with its
  deterministic sites (among them the original sites of reparameterized ones) computed
  per draw: the inner draws of the tilted posterior ``φ_k`` at the kept steps, dims
  ``(chain, draw, [outer_step,] ...)``; or, when the run kept no draws (heat
  regularization, ``keep_draws=None``), draws of the fitted Gaussian ``N(x_k, τI)`` at
  the final centre (its ``attrs["draws_of"]`` says which);
* ``sample_stats`` - the inner draws' per-draw statistics under ArviZ's names
  (``diverging``, ``acceptance_rate``, ``step_size``, ``n_steps``, ``lp``, ``energy``, ...);
* ``centres`` - the tracked centres ``x_k`` (constrained, one variable per latent site,
  plus the deterministic sites at ``x_k``), dims ``(outer_step, ...)``;
* ``trajectory`` - our per-step quantities over the tracked steps (``outer_step``):
  ``loss`` ``f(x_k)``, ``regularized_loss`` and ``regularized_loss_se`` (``F_τ`` or
  ``f_τ``), ``tau``, ...;
* ``step_stats`` - ``result.info`` over every outer step (``outer_step``): acceptance,
  divergences, R-hat, ESS, evaluation counts, ...;
* ``observed_data`` - the model's observed sites (outside subsampled plates).

Site names never meet our own: sites live in ``posterior``, ``centres`` and
``observed_data``, our quantities in ``sample_stats``, ``trajectory`` and
``step_stats``.  The outer-step dimension is ``outer_step`` (``outer_step_`` if a site
is named ``outer_step``).

With ArviZ < 1 the result is an :class:`arviz.InferenceData`; with ArviZ ≥ 1 (Python ≥
3.12) an :class:`xarray.DataTree` with the same groups, built with ``arviz_base``'s
``dict_to_dataset``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax import random
from numpyro import handlers

from vi_entropy._compile import normal
from vi_entropy.tilted import subsampled_plates

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1

if ARVIZ_1:  # pragma: no cover - ArviZ 1.x needs Python >= 3.12
    from arviz_base import dict_to_dataset as _dict_to_dataset
else:
    _dict_to_dataset = az.dict_to_dataset

__all__ = ["to_inference_data"]

SAMPLE_DIMS = ["chain", "draw"]

#: Name of the outer-step dimension (with ``_`` appended while a site has that name).
STEP_DIM = "outer_step"

TILTED_DRAWS = "the tilted posterior phi_k (inner draws)"
GAUSSIAN_DRAWS = (
    "the fitted Gaussian N(x_k, tau I) at the final centre, pushed through the "
    "constraints (not draws of the tilted posterior)"
)


def _dataset(
    data: Mapping[str, np.ndarray],
    dims: Mapping[str, list[str]],
    coords: Mapping[str, Any],
    sample_dims: list[str],
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """One group, with ArviZ's attributes; the only call that differs between versions."""
    kwargs: dict[str, Any] = {"attrs": dict(attrs or {}), "coords": coords, "dims": dims}
    if ARVIZ_1:  # pragma: no cover
        return _dict_to_dataset(data, sample_dims=sample_dims, **kwargs)
    return _dict_to_dataset(data, default_dims=sample_dims, **kwargs)


def _container(groups: Mapping[str, xr.Dataset]) -> Any:
    if ARVIZ_1:  # pragma: no cover
        return xr.DataTree.from_dict(dict(groups))
    return az.InferenceData(**groups)


def _site_dims(name: str, shape: Sequence[int], lead: Sequence[str] = ()) -> list[str]:
    """``[*lead, name_dim_0, ...]``, ArviZ's default dimension names."""
    return [*lead, *(f"{name}_dim_{i}" for i in range(len(shape)))]


def _select_steps(result: Any, steps: str | int | Sequence[int]) -> list[int]:
    available = sorted(result.draws)
    if not available:
        return []
    if steps == "last":
        return [available[-1]]
    if steps == "all":
        return available
    wanted = [steps] if isinstance(steps, int | np.integer) else list(steps)
    missing = sorted(set(int(s) for s in wanted) - set(available))
    if missing:
        raise ValueError(
            f"steps: no draws kept for outer steps {missing}; result.draws has {available} "
            "(choose them with run(..., keep_draws=[...]) or keep_draws='all')."
        )
    return [int(s) for s in wanted]


def _systematic_resample(log_weights: np.ndarray) -> np.ndarray:
    """Indices of a deterministic systematic resample (offset ½) to equal weights."""
    w = np.exp(log_weights - np.max(log_weights))
    cdf = np.cumsum(w / w.sum())
    n = len(log_weights)
    return np.minimum(np.searchsorted(cdf, (np.arange(n) + 0.5) / n), n - 1)


def _step_draws(draws: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Values ``(chains, draws, d)`` and stats of one step; importance draws resampled."""
    values = np.asarray(draws.values)
    stats = {k: np.asarray(v) for k, v in draws.stats.items()}
    if draws.log_weights is None:
        return values, stats
    idx = _systematic_resample(np.asarray(draws.log_weights, np.float64).ravel())
    # Only f(y) makes sense per resampled draw; the proposal's weights do not.
    return values.reshape(-1, values.shape[-1])[idx][None], {
        "loss": stats["potential_energy"].ravel()[idx][None]
    }


def _model_call(fn: Any, model_args: tuple, model_kwargs: Mapping[str, Any]) -> Any:
    """Run ``fn`` (which runs the model); say what to pass when no arguments were given."""
    try:
        return fn()
    except Exception as err:
        if model_args or model_kwargs:
            raise
        raise ValueError(
            "to_inference_data: tracing the model without arguments failed "
            f"({type(err).__name__}: {err}); pass model_args=(...) and model_kwargs={{...}} "
            "as given to run()."
        ) from err


def _constrain_batches(
    scheme: Any, batches: Sequence[np.ndarray], model_args: tuple, model_kwargs: Mapping
) -> list[dict[str, np.ndarray]]:
    """Latent and deterministic sites of flat unconstrained batches ``(..., d)``.

    One compiled, vectorized call of the model (``TiltedPosterior.constrain_all``) over
    all batches together.  The model's arguments are closed over, as NumPyro's
    ``Predictive`` does, so models that need concrete data work.
    """
    if not batches:
        return []
    d = scheme.tilted.dim
    flat = np.concatenate([np.reshape(b, (-1, d)) for b in batches])

    @jax.jit
    def constrain(u: jax.Array) -> dict[str, jax.Array]:
        return jax.vmap(lambda x: scheme.tilted.constrain_all(x, model_args, model_kwargs))(u)

    sites = _model_call(lambda: constrain(jnp.asarray(flat)), model_args, model_kwargs)
    sites = {k: np.asarray(v) for k, v in sites.items()}
    out, start = [], 0
    for b in batches:
        lead = np.shape(b)[:-1]
        n = int(np.prod(lead))
        out.append({k: v[start : start + n].reshape(lead + v.shape[1:]) for k, v in sites.items()})
        start += n
    return out


def _free_name(base: str, taken: set[str]) -> str:
    """``base``, with ``_`` appended while it is one of ``taken``."""
    while base in taken:
        base += "_"
    return base


def _stack_steps(per_step: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One dict per chosen step -> one dict, steps on axis 2 when there are several."""
    if len(per_step) == 1:
        return dict(per_step[0])
    return {k: np.stack([d[k] for d in per_step], axis=2) for k in per_step[0]}


def _sample_stats(per_step: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The inner draws' statistics under ArviZ's names."""
    stats = _stack_steps(per_step)
    if "potential_energy" in stats:
        # ArviZ's lp: the log density of the sampled (tilted) posterior, up to a constant.
        stats["lp"] = -stats.pop("potential_energy")
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    return stats


def _gaussian_draws(scheme: Any, state: Any, num_chains: int, num_draws: int, rng_key: Any):
    """Flat draws ``(chains, draws, d)`` of the fitted ``N(x_k, τI)`` at ``state``."""
    tau = scheme.get_guide_params(state)[scheme.guide.tau_name]
    centre = jnp.asarray(state.centre)
    key = random.PRNGKey(0) if rng_key is None else rng_key
    xi = normal(key, (num_chains, num_draws, centre.shape[0]), centre.dtype)
    return np.asarray(centre + jnp.sqrt(tau) * xi)


def _observed(
    scheme: Any, result: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
) -> tuple[dict, dict]:
    """Observed sites of one trace of the model at the final centre."""
    model = handlers.substitute(handlers.seed(scheme.model, rng_seed=0), data=dict(result.params))
    tr = _model_call(
        lambda: handlers.trace(model).get_trace(*model_args, **model_kwargs),
        model_args,
        model_kwargs,
    )
    subsampled = subsampled_plates(tr)
    data, dims = {}, {}
    for name, site in tr.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        if any(f.name in subsampled for f in site["cond_indep_stack"]):
            continue  # only a mini-batch of it is seen in one trace
        value = np.asarray(site["value"])
        data[name] = value
        dims[name] = _site_dims(name, value.shape)
    return data, dims


def to_inference_data(
    result: Any,
    scheme: Any,
    *,
    steps: str | int | Sequence[int] = "last",
    model_args: tuple = (),
    model_kwargs: Mapping[str, Any] | None = None,
    num_chains: int = 4,
    num_draws: int = 250,
    rng_key: Any = None,
) -> Any:
    """Convert a :class:`~vi_entropy.RunResult` into ArviZ's ``InferenceData``.

    The ``posterior`` holds the inner draws of the tilted posterior
    ``φ_k ∝ e^{−f(y) − |y − x_k|²/(2τ)}`` at the chosen outer steps ``k``, mapped to
    constrained values, with the model's deterministic sites computed per draw; a run
    that kept no draws (heat regularization) gets draws of the fitted ``N(x_k, τI)`` at
    its final centre instead.  ``centres`` holds the tracked centres ``x_k``,
    ``trajectory`` ``f(x_k)`` and the regularized loss ± SE, ``step_stats`` the per-step
    diagnostics of ``result.info`` (see :mod:`vi_entropy.arviz` for every group).

    Parameters
    ----------
    result : RunResult
        What ``scheme.run`` returned (``result.draws`` holds the steps kept by
        ``keep_draws``).
    scheme : TwoStepScheme
        The scheme that produced ``result`` (for the model's sites and transforms).
    steps : "last", "all", int or list of int, default "last"
        Outer steps whose draws go to ``posterior``/``sample_stats``; several give an
        ``outer_step`` dimension after ``(chain, draw)``.
    model_args : tuple, default ()
        The model's positional arguments, to trace its deterministic and observed sites.
    model_kwargs : dict, optional
        The model's keyword arguments.
    num_chains, num_draws : int, default 4 and 250
        Shape of the draws of ``N(x_k, τI)`` when ``result`` kept no draws.
    rng_key : jax.random.PRNGKey, optional
        Key of those draws (default ``PRNGKey(0)``: the export is deterministic).

    Returns
    -------
    arviz.InferenceData
        (``xarray.DataTree`` with ArviZ ≥ 1.)  Importance-sampling draws are
        resampled to equal weights (systematic resampling, deterministic) so that the
        ``posterior`` describes ``φ_k``; their ``sample_stats`` hold ``loss = f(y)``.

    Example
    -------
    >>> import jax, arviz as az, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.deterministic("mu_squared", mu**2)
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=200,
    ...                   progress_bar=False)
    >>> result = le.run(jax.random.PRNGKey(0), 3, 1.5)
    >>> idata = to_inference_data(result, le, model_args=(1.5,))
    >>> sorted(idata.groups())
    ['centres', 'observed_data', 'posterior', 'sample_stats', 'step_stats', 'trajectory']
    >>> sorted(idata.posterior.data_vars)
    ['mu', 'mu_squared']
    >>> list(az.summary(idata, kind="diagnostics").columns)[-1]
    'r_hat'
    """
    scheme._require_setup()
    model_args = tuple(model_args)
    model_kwargs = dict(model_kwargs or {})
    meta = {"scheme": type(scheme).__name__, "beta": scheme.beta}
    chosen = _select_steps(result, steps)
    trace = result.trace or {}
    observed, obs_dims = _observed(scheme, result, model_args, model_kwargs)

    # Flat unconstrained batches -> latent and deterministic sites, in one compiled call.
    per_step = [_step_draws(result.draws[k]) for k in chosen]
    batches = [values for values, _ in per_step]
    if not chosen and result.state is not None:
        batches.append(_gaussian_draws(scheme, result.state, num_chains, num_draws, rng_key))
    if trace:
        batches.append(np.asarray(trace["centre"]))
    constrained = _constrain_batches(scheme, batches, model_args, model_kwargs)
    centres = constrained.pop() if trace else {}
    posterior = _stack_steps(constrained) if constrained else {}
    # Our outer-step dimension, apart from every site name of the model.
    step_dim = _free_name(STEP_DIM, set(posterior) | set(centres) | set(observed))

    groups: dict[str, xr.Dataset] = {}
    if posterior:
        several = len(chosen) > 1
        lead = [step_dim] if several else []
        n_lead = len(SAMPLE_DIMS) + len(lead)
        dims = {k: _site_dims(k, v.shape[n_lead:], lead) for k, v in posterior.items()}
        coords = {step_dim: np.asarray(chosen)} if several else {}
        attrs = {**meta, "draws_of": TILTED_DRAWS if chosen else GAUSSIAN_DRAWS}
        groups["posterior"] = _dataset(posterior, dims, coords, SAMPLE_DIMS, attrs)
        if chosen:
            stats = _sample_stats([s for _, s in per_step])
            stats_dims = {k: list(lead) for k in stats}
            groups["sample_stats"] = _dataset(stats, stats_dims, coords, SAMPLE_DIMS, meta)
        if not several:  # which outer step, as a scalar coordinate
            at = chosen[0] if chosen else int(result.state.step)
            for name in ("posterior", "sample_stats"):
                if name in groups:
                    groups[name] = groups[name].assign_coords({step_dim: at})
    if trace:
        tracked = {step_dim: np.asarray(trace["step"])}
        dims = {k: _site_dims(k, v.shape[1:], [step_dim]) for k, v in centres.items()}
        groups["centres"] = _dataset(centres, dims, tracked, [], meta)
        data = {k: np.asarray(v) for k, v in trace.items() if k not in ("step", "centre")}
        attrs = {**meta, "regularized_loss": scheme.regularized_loss_name}
        groups["trajectory"] = _dataset(data, {k: [step_dim] for k in data}, tracked, [], attrs)
    if result.info:
        info = {k: np.asarray(v) for k, v in result.info.items() if k != "step"}
        step = np.asarray(result.info.get("step", np.arange(len(next(iter(info.values()))))))
        dims = {k: [step_dim] for k in info}
        groups["step_stats"] = _dataset(info, dims, {step_dim: step}, [], meta)
    if observed:
        groups["observed_data"] = _dataset(observed, obs_dims, {}, [])
    return _container(groups)
