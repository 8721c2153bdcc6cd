"""Export a run to ArviZ: the inner draws, their statistics and the optimization trajectory.

All ArviZ code of the package lives here.  Groups of the result:

* ``posterior`` - the inner draws of the tilted posterior ``φ_k`` (constrained, named
  after the model's latent sites), dims ``(chain, draw, [step,] ...)``;
* ``sample_stats`` - their per-draw statistics under ArviZ's names (``diverging``,
  ``acceptance_rate``, ``step_size``, ``n_steps``, ``lp``, ``energy``, ...);
* ``trajectory`` - over the tracked steps (``step``): the centres ``x_k`` (constrained,
  one variable per site), ``loss`` ``f(x_k)``, ``regularized_loss`` and
  ``regularized_loss_se`` (``F_τ`` or ``f_τ``), ``tau``;
* ``step_stats`` - ``result.info`` over every outer step (``step``): acceptance,
  divergences, R-hat, ESS, evaluation counts, ...;
* ``observed_data`` - the model's observed sites (outside subsampled plates).

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
from numpyro import handlers

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1

if ARVIZ_1:  # pragma: no cover - ArviZ 1.x needs Python >= 3.12
    from arviz_base import dict_to_dataset as _dict_to_dataset
else:
    _dict_to_dataset = az.dict_to_dataset

__all__ = ["to_inference_data"]

SAMPLE_DIMS = ["chain", "draw"]


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


def _posterior(scheme: Any, result: Any, steps: list[int]) -> tuple[dict, dict, dict, dict]:
    per_step = [_step_draws(result.draws[k]) for k in steps]
    constrain = jax.vmap(jax.vmap(scheme.tilted.constrain))
    several = len(steps) > 1
    lead = ["step"] if several else []
    posterior: dict[str, np.ndarray] = {}
    for name in scheme.tilted.sites:
        arrays = [np.asarray(constrain(jnp.asarray(v))[name]) for v, _ in per_step]
        posterior[name] = np.stack(arrays, axis=2) if several else arrays[0]
    dims = {name: _site_dims(name, site.shape, lead) for name, site in scheme.tilted.sites.items()}
    stats: dict[str, np.ndarray] = {}
    for key in per_step[0][1]:
        arrays = [s[key] for _, s in per_step]
        stats[key] = np.stack(arrays, axis=2) if several else arrays[0]
    if "potential_energy" in stats:
        # ArviZ's lp: the log density of the sampled (tilted) posterior, up to a constant.
        stats["lp"] = -stats.pop("potential_energy")
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    stats_dims = {k: list(lead) for k in stats}
    return posterior, dims, stats, stats_dims


def _observed(
    scheme: Any, result: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
) -> tuple[dict, dict]:
    """Observed sites of one trace of the model at the final centre."""
    model = handlers.substitute(handlers.seed(scheme.model, rng_seed=0), data=dict(result.params))
    try:
        tr = handlers.trace(model).get_trace(*model_args, **model_kwargs)
    except Exception as err:
        if model_args or model_kwargs:
            raise
        raise ValueError(
            "to_inference_data: tracing the model without arguments failed "
            f"({type(err).__name__}: {err}); pass model_args=(...) and model_kwargs={{...}} "
            "as given to run()."
        ) from err
    subsampled = {
        name
        for name, site in tr.items()
        if site["type"] == "plate"
        and site["args"][1] is not None
        and site["args"][1] < site["args"][0]
    }
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
) -> Any:
    """Convert a :class:`~vi_entropy.RunResult` into ArviZ's ``InferenceData``.

    The ``posterior`` holds the inner draws of the tilted posterior
    ``φ_k ∝ e^{−f(y) − |y − x_k|²/(2τ)}`` at the chosen outer steps ``k``, mapped to
    constrained values; ``trajectory`` the tracked centres ``x_k`` with ``f(x_k)`` and
    the regularized loss ± SE; ``step_stats`` the per-step diagnostics of
    ``result.info`` (see :mod:`vi_entropy.arviz` for every group).

    Parameters
    ----------
    result : RunResult
        What ``scheme.run`` returned (``result.draws`` holds the steps kept by
        ``keep_draws``; heat regularization keeps none, so it gets no ``posterior``).
    scheme : TwoStepScheme
        The scheme that produced ``result`` (for the model's sites and transforms).
    steps : "last", "all", int or list of int, default "last"
        Outer steps whose draws go to ``posterior``/``sample_stats``; several give a
        ``step`` dimension after ``(chain, draw)``.
    model_args : tuple, default ()
        The model's positional arguments, to trace its observed sites.
    model_kwargs : dict, optional
        The model's keyword arguments.

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
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=200,
    ...                   progress_bar=False)
    >>> result = le.run(jax.random.PRNGKey(0), 3, 1.5)
    >>> idata = to_inference_data(result, le, model_args=(1.5,))
    >>> sorted(idata.groups())
    ['observed_data', 'posterior', 'sample_stats', 'step_stats', 'trajectory']
    >>> list(az.summary(idata, kind="diagnostics").columns)[-1]
    'r_hat'
    """
    scheme._require_setup()
    model_kwargs = dict(model_kwargs or {})
    groups: dict[str, xr.Dataset] = {}
    meta = {"scheme": type(scheme).__name__, "beta": scheme.beta}
    chosen = _select_steps(result, steps)
    if chosen:
        posterior, dims, stats, stats_dims = _posterior(scheme, result, chosen)
        coords = {"step": np.asarray(chosen)} if len(chosen) > 1 else {}
        groups["posterior"] = _dataset(posterior, dims, coords, SAMPLE_DIMS, meta)
        groups["sample_stats"] = _dataset(stats, stats_dims, coords, SAMPLE_DIMS, meta)
        if len(chosen) == 1:  # which outer step, as a scalar coordinate
            for name in ("posterior", "sample_stats"):
                groups[name] = groups[name].assign_coords(step=chosen[0])
    trace = result.trace or {}
    if trace:
        steps_tracked = np.asarray(trace["step"])
        centres = jax.vmap(scheme.tilted.constrain)(jnp.asarray(trace["centre"]))
        data = {name: np.asarray(v) for name, v in centres.items()}
        dims = {
            name: _site_dims(name, site.shape, ["step"])
            for name, site in scheme.tilted.sites.items()
        }
        for key, value in trace.items():
            if key not in ("step", "centre"):
                data[key] = np.asarray(value)
                dims[key] = ["step"]
        attrs = {**meta, "regularized_loss": scheme.regularized_loss_name}
        groups["trajectory"] = _dataset(data, dims, {"step": steps_tracked}, [], attrs)
    if result.info:
        info = {k: np.asarray(v) for k, v in result.info.items() if k != "step"}
        step = np.asarray(result.info.get("step", np.arange(len(next(iter(info.values()))))))
        groups["step_stats"] = _dataset(info, {k: ["step"] for k in info}, {"step": step}, [], meta)
    observed, obs_dims = _observed(scheme, result, tuple(model_args), model_kwargs)
    if observed:
        groups["observed_data"] = _dataset(observed, obs_dims, {}, [])
    return _container(groups)
