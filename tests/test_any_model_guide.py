"""Ordinary NumPyro models through the fitted guide, ``get_sites`` and the ArviZ export.

For each model of :mod:`tests._zoo` (plates, vector latents with batch dimensions,
reparameterization, deterministic sites, sites named ``tau``/``loss``/``step``, a
subsampled plate) a tiny heat-regularization SVI run, and tiny local-entropy runs on the
models with every shape at once (``hierarchical``, with NUTS) and with sites named like
ours (importance sampling: the cheapest compile); then

* ``Predictive`` with the fitted guide returns every latent (with its plate's shape),
  every deterministic site and the observations;
* ``to_inference_data`` + ``az.summary`` work, the posterior holds the deterministic
  sites and the original sites of reparameterized ones;
* none of our names (guide parameters, groups, dimensions) meets a site name.

Each run is made once (``functools.cache``) and shared by the tests of its model: every
run compiles, so there are as few as cover the shapes.
"""

from __future__ import annotations

from functools import cache

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import random
from numpyro.infer import Predictive

from tests._zoo import ZOO
from vi_entropy import HeatRegularization, LocalEntropy, to_inference_data

pytestmark = pytest.mark.xdist_group("any-model")

TAU = 0.01
NUM_STEPS = 2
NUM_PRED = 5
#: Models whose runs are tracked (centres / trajectory groups): sites named like ours,
#: plates and reparameterization.
TRACKED = {"eight_schools", "named_like_ours", "hierarchical"}
#: (model, scheme): heat regularization on every model, local entropy on a few.
RUNS = [(name, "hr") for name in sorted(ZOO)] + [
    ("eight_schools", "le"),
    ("named_like_ours", "le"),
    ("hierarchical", "le"),
]
NUTS_CHAINS, NUTS_DRAWS = 2, 20


@cache
def _run(name: str, scheme_name: str):
    case = ZOO[name]
    if scheme_name == "le" and name == "hierarchical":
        scheme = LocalEntropy(
            case.model,
            TAU,
            sampler="nuts",
            num_chains=NUTS_CHAINS,
            num_samples=NUTS_DRAWS,
            num_warmup=20,
            progress_bar=False,
        )
    elif scheme_name == "le":
        scheme = LocalEntropy(
            case.model,
            TAU,
            sampler="importance",
            num_samples=64,
            ess_threshold=None,
            progress_bar=False,
        )
    else:
        scheme = HeatRegularization(
            case.model, TAU, num_inner_steps=5, num_particles=2, progress_bar=False
        )
    track = 1 if name in TRACKED else 0
    result = scheme.run(random.PRNGKey(0), NUM_STEPS, *case.args, **case.kwargs, track_every=track)
    return scheme, result


def run(name: str, scheme_name: str):
    """The shared run; a model that calls NumPy on traced data is an expected failure."""
    try:
        return _run(name, scheme_name)
    except jax.errors.TracerArrayConversionError:
        if name == "ucbadmit":
            pytest.xfail("needs jit_model_args (NumPy on the model's data)")
        raise


@cache
def _idata(name: str, scheme_name: str):
    scheme, result = run(name, scheme_name)
    case = ZOO[name]
    return to_inference_data(
        result, scheme, model_args=case.args, model_kwargs=case.kwargs, num_draws=50
    )


@pytest.mark.parametrize(("name", "scheme_name"), RUNS)
def test_predictive_with_the_fitted_guide_returns_every_site(name, scheme_name):
    case = ZOO[name]
    scheme, result = run(name, scheme_name)
    params = scheme.get_guide_params(result.state)
    assert set(params) == {"_vi_tau"} | {f"_vi_{site}_loc" for site in case.latent}
    wanted = [*case.latent, *case.deterministic, *case.observed]
    draws = Predictive(
        case.model, guide=scheme.guide, params=params, num_samples=NUM_PRED, return_sites=wanted
    )(random.PRNGKey(1), *case.args, **case.kwargs)
    assert set(draws) == set(wanted)
    for site, shape in case.latent.items():
        assert draws[site].shape == (NUM_PRED, *shape), site
        assert bool(jnp.all(jnp.isfinite(draws[site]))), site
    for site in (*case.deterministic, *case.observed):
        assert draws[site].shape[0] == NUM_PRED, site


def test_predictive_without_return_sites_gives_observations_and_deterministic_sites():
    """As for any NumPyro guide: the sites the guide does not sample (documented)."""
    case = ZOO["eight_schools_noncentered"]
    scheme, result = run("eight_schools_noncentered", "hr")
    draws = Predictive(
        case.model,
        guide=scheme.guide,
        params=scheme.get_guide_params(result.state),
        num_samples=NUM_PRED,
    )(random.PRNGKey(1), *case.args)
    assert set(draws) == {"theta", "obs"}
    assert draws["obs"].shape == (NUM_PRED, 8)


def test_guide_draws_are_normal_with_sd_sqrt_tau_around_the_centre():
    """N(x_k, τI) in the unconstrained space: log τ_site has mean log(centre), sd √τ."""
    case = ZOO["eight_schools"]
    scheme, result = run("eight_schools", "le")
    n = 400
    draws = Predictive(
        case.model,
        guide=scheme.guide,
        params=scheme.get_guide_params(result.state),
        num_samples=n,
        return_sites=["tau", "theta"],
    )(random.PRNGKey(2), *case.args)
    log_tau = np.log(np.asarray(draws["tau"], np.float64))  # the site `tau`, not our τ
    se = np.sqrt(TAU / n)
    assert abs(log_tau.mean() - np.log(float(result.params["tau"]))) < 5 * se
    assert log_tau.std() == pytest.approx(np.sqrt(TAU), rel=0.15)
    theta = np.asarray(draws["theta"], np.float64)
    centre = np.asarray(result.params["theta"])
    np.testing.assert_array_less(np.abs(theta.mean(axis=0) - centre), 5 * se)


@pytest.mark.parametrize(("name", "scheme_name"), RUNS)
def test_get_sites_has_latent_and_deterministic_sites(name, scheme_name):
    case = ZOO[name]
    scheme, result = run(name, scheme_name)
    sites = scheme.get_sites(result.state, *case.args, **case.kwargs)
    assert set(case.latent) | set(case.deterministic) <= set(sites)
    assert not set(case.observed) & set(sites)
    for site, value in scheme.get_params(result.state).items():
        np.testing.assert_array_equal(np.asarray(sites[site]), np.asarray(value))


@pytest.mark.parametrize(("name", "scheme_name"), RUNS)
def test_export_has_every_site_and_az_summary_works(name, scheme_name):
    case = ZOO[name]
    scheme, result = run(name, scheme_name)
    idata = _idata(name, scheme_name)
    posterior = idata.posterior
    assert set(posterior.data_vars) == set(case.latent) | set(case.deterministic)
    if scheme_name == "hr":
        chains, draws = 4, 50  # the fitted Gaussian's
    elif name == "hierarchical":
        chains, draws = NUTS_CHAINS, NUTS_DRAWS
    else:
        chains, draws = 1, 64  # importance draws, resampled
    for site, shape in case.latent.items():
        assert posterior[site].shape == (chains, draws, *shape), site
    expected = "tilted posterior" if scheme_name == "le" else "fitted Gaussian"
    assert expected in posterior.attrs["draws_of"]
    assert int(posterior["outer_step"]) == (NUM_STEPS - 1 if scheme_name == "le" else NUM_STEPS)
    if name == "logistic_subsampled":  # only a mini-batch of `y` is seen in one trace
        assert "observed_data" not in idata.groups()
    else:
        assert set(idata.observed_data.data_vars) == set(case.observed)
    summary = az.summary(idata, var_names=list(case.latent))
    assert np.all(np.isfinite(summary["mean"]))
    ours = set(idata.step_stats.data_vars)
    assert idata.step_stats["displacement"].dims == ("outer_step",)
    if name in TRACKED:
        assert set(idata.centres.data_vars) == set(posterior.data_vars)
        ours |= set(idata.trajectory.data_vars)
        np.testing.assert_allclose(idata.trajectory["tau"].values, TAU, rtol=1e-6)
    assert ours == set(result.info) - {"step"} | (
        set(result.trace) - {"step", "centre"} if name in TRACKED else set()
    )


@pytest.mark.parametrize("scheme_name", ["le", "hr"])
def test_sites_named_like_ours_are_the_sites(scheme_name):
    """`tau` (eight schools), `step`, `loss`, `regularized_loss`: the model's, in its groups."""
    for name in ("eight_schools", "named_like_ours"):
        case = ZOO[name]
        scheme, result = run(name, scheme_name)
        idata = _idata(name, scheme_name)
        centres, traj = idata.centres, idata.trajectory
        steps = np.asarray(result.trace["step"])
        np.testing.assert_array_equal(centres["outer_step"].values, steps)
        np.testing.assert_array_equal(traj["outer_step"].values, steps)
        for site in case.latent:
            np.testing.assert_array_equal(
                centres[site].values[-1], np.asarray(result.params[site]), err_msg=site
            )
        np.testing.assert_array_equal(traj["loss"].values, np.asarray(result.trace["loss"]))
        np.testing.assert_array_equal(traj["tau"].values, np.asarray(result.trace["tau"]))
        if name == "named_like_ours":
            sites = scheme.get_sites(result.state, *case.args, **case.kwargs)
            np.testing.assert_allclose(
                np.asarray(sites["regularized_loss"]),
                float(result.params["loss"]) + float(result.params["step"]),
                rtol=1e-6,
            )
            regularized = centres["regularized_loss"].values
            np.testing.assert_allclose(
                regularized, centres["loss"].values + centres["step"].values, rtol=1e-6
            )
            assert not np.allclose(regularized, traj["regularized_loss"].values)


@pytest.mark.parametrize("scheme_name", ["le", "hr"])
def test_info_and_trace_keys_are_ours_whatever_the_model(scheme_name):
    """``result.info`` / ``result.trace`` hold our quantities only, never one per site."""
    (_, a), (_, b) = run("eight_schools", scheme_name), run("named_like_ours", scheme_name)
    assert set(a.info) == set(b.info)
    assert set(a.trace) == set(b.trace)
    assert a.trace["centre"].shape == (NUM_STEPS + 1, 10)  # flat: mu, tau, theta[8]


def test_nuts_posterior_has_the_original_sites_of_reparameterized_ones():
    """``alpha = mu + tau * alpha_decentered`` and ``mean``, draw by draw, under NUTS."""
    case = ZOO["hierarchical"]
    le, result = run("hierarchical", "le")
    posterior = _idata("hierarchical", "le").posterior
    shape = (NUTS_CHAINS, NUTS_DRAWS, 3)
    assert posterior["alpha"].shape == posterior["alpha_decentered"].shape == shape
    alpha = (
        posterior["mu"].values[..., None]
        + posterior["tau"].values[..., None] * posterior["alpha_decentered"].values
    )
    np.testing.assert_allclose(posterior["alpha"].values, alpha, rtol=1e-5, atol=1e-5)
    X, group = case.args
    mean = alpha[..., group] + np.einsum("cdk,nk->cdn", posterior["w"].values, X)
    np.testing.assert_allclose(posterior["mean"].values, mean, rtol=1e-4, atol=1e-4)
    idata = _idata("hierarchical", "le")
    summary = az.summary(idata)
    assert {"alpha[0]", "alpha_decentered[0]", "mean[0]", "mu", "tau"} <= set(summary.index)
    assert np.all(np.isfinite(summary["r_hat"]))
    assert {"diverging", "lp"} <= set(idata.sample_stats.data_vars)


def test_a_site_named_like_our_dimension_moves_the_dimension(monkeypatch):
    """Were our dimension called ``step``, a site ``step`` would move it to ``step_``."""
    import vi_entropy.arviz as module

    case = ZOO["named_like_ours"]
    scheme, result = run("named_like_ours", "le")
    monkeypatch.setattr(module, "STEP_DIM", "step")
    idata = to_inference_data(result, scheme, model_kwargs=case.kwargs)
    assert idata.centres["step"].dims == ("step_",)
    assert idata.trajectory["loss"].dims == ("step_",)
    assert idata.step_stats["displacement"].dims == ("step_",)
    assert idata.posterior["step"].dims == ("chain", "draw")
    assert int(idata.posterior["step_"]) == NUM_STEPS - 1
    np.testing.assert_array_equal(
        idata.centres["step"].values[-1], np.asarray(result.params["step"])
    )
