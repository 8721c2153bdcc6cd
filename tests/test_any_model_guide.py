"""Ordinary NumPyro models through the fitted guide, ``get_sites`` and the ArviZ export.

For each model of :mod:`tests._zoo` (plates, vector latents with batch dimensions,
reparameterization, deterministic sites, sites named ``tau``/``loss``/``step``, a
subsampled plate): heat regularization's objective (the ELBO of the tilted model under
the guide) is finite and ``Predictive`` with the guide returns every latent (with its
plate's shape), every deterministic site and the observations.  Tiny runs, on the
models that between them have every shape (heat-regularization SVI, and local entropy
with NUTS on ``hierarchical``), then show that

* ``Predictive`` with the fitted guide returns every site after training;
* ``to_inference_data`` + ``az.summary`` work, the posterior holds the deterministic
  sites and the original sites of reparameterized ones;
* none of our names (guide parameters, groups, dimensions) meets a site name.

Each run is made once (``functools.cache``) and shared by the tests of its model: every
run compiles, so there are as few as cover the shapes (``hierarchical`` has those of
``eight_schools_noncentered``, ``logistic`` and ``change_point`` at once).  A heat-
regularization run also exports a posterior (draws of the fitted Gaussian), so it tests
the export's names as a local-entropy run would.
"""

from __future__ import annotations

from functools import cache

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import random
from numpyro.infer import Predictive, Trace_ELBO

from tests._zoo import ZOO
from vi_entropy import (
    GaussianGuide,
    HeatRegularization,
    LocalEntropy,
    TiltedPosterior,
    to_inference_data,
)

pytestmark = pytest.mark.xdist_group("any-model")

TAU = 0.01
NUM_STEPS = 2
NUM_PRED = 5
#: Runs tracked (centres / trajectory groups): sites named like ours, plates and
#: reparameterization.
TRACKED = {("eight_schools", "hr"), ("named_like_ours", "hr"), ("hierarchical", "hr")}
#: (model, scheme) of the runs.
RUNS = [
    ("eight_schools", "hr"),
    ("hierarchical", "hr"),
    ("named_like_ours", "hr"),
    ("ucbadmit", "hr"),
    ("hierarchical", "le"),
]
NUTS_CHAINS, NUTS_DRAWS = 2, 20


@cache
def _run(name: str, scheme_name: str):
    case = ZOO[name]
    if scheme_name == "le":
        scheme = LocalEntropy(
            case.model,
            TAU,
            sampler="nuts",
            num_chains=NUTS_CHAINS,
            num_samples=NUTS_DRAWS,
            num_warmup=20,
            progress_bar=False,
        )
    else:
        scheme = HeatRegularization(
            case.model, TAU, num_inner_steps=5, num_particles=2, progress_bar=False
        )
    track = 1 if (name, scheme_name) in TRACKED else 0
    result = scheme.run(random.PRNGKey(0), NUM_STEPS, *case.args, **case.kwargs, track_every=track)
    return scheme, result


def run(name: str, scheme_name: str):
    """The shared run of ``name`` under ``"hr"`` (SVI) or ``"le"`` (NUTS)."""
    return _run(name, scheme_name)


@cache
def _idata(name: str, scheme_name: str):
    scheme, result = run(name, scheme_name)
    case = ZOO[name]
    return to_inference_data(
        result, scheme, model_args=case.args, model_kwargs=case.kwargs, num_draws=50
    )


def _predict_every_site(case, guide, params):
    """``Predictive`` with the guide and its parameters, checked for every site and shape."""
    assert set(params) == {"_vi_tau"} | {f"_vi_{site}_loc" for site in case.latent}
    wanted = [*case.latent, *case.deterministic, *case.observed]
    draws = Predictive(
        case.model, guide=guide, params=params, num_samples=NUM_PRED, return_sites=wanted
    )(random.PRNGKey(1), *case.args, **case.kwargs)
    assert set(draws) == set(wanted)
    for site, shape in case.latent.items():
        assert draws[site].shape == (NUM_PRED, *shape), site
        assert bool(jnp.all(jnp.isfinite(draws[site]))), site
    for site in (*case.deterministic, *case.observed):
        assert draws[site].shape[0] == NUM_PRED, site


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_guide_fits_every_model_shape(name):
    """Heat regularization's inner objective and Predictive with the guide, on every model.

    The ELBO of the tilted model under ``N(x, τI)`` is what ``SVIFit`` trains (its event
    dimensions must agree with the model's); no scheme is run, so nothing but the loss
    compiles.
    """
    case = ZOO[name]
    tilted = TiltedPosterior(case.model)
    tilted.setup(random.PRNGKey(0), case.args, case.kwargs)
    centre = jnp.zeros(tilted.dim, tilted.dtype)  # every support's middle (exp 0 = 1, ...)
    guide = GaussianGuide(tilted)

    @jax.jit
    def loss(key, centre):
        kwargs = tilted.model_kwargs(case.kwargs, centre, TAU)
        elbo = Trace_ELBO(num_particles=2)
        return elbo.loss(key, {}, tilted.tilted_model, guide, *case.args, **kwargs)

    # The model's arguments are closed over (not traced), so ucbadmit's NumPy works here.
    assert np.isfinite(float(loss(random.PRNGKey(1), centre)))
    _predict_every_site(case, guide, guide.params(centre, TAU))


@pytest.mark.parametrize(("name", "scheme_name"), RUNS)
def test_predictive_with_the_fitted_guide_returns_every_site(name, scheme_name):
    scheme, result = run(name, scheme_name)
    _predict_every_site(ZOO[name], scheme.guide, scheme.get_guide_params(result.state))


def test_predictive_without_return_sites_gives_observations_and_deterministic_sites():
    """As for any NumPyro guide: the sites the guide does not sample (documented)."""
    case = ZOO["hierarchical"]
    scheme, result = run("hierarchical", "hr")
    draws = Predictive(
        case.model,
        guide=scheme.guide,
        params=scheme.get_guide_params(result.state),
        num_samples=NUM_PRED,
    )(random.PRNGKey(1), case.args[0], case.args[1])
    assert set(draws) == {"alpha", "mean", "y"}
    assert draws["y"].shape == draws["mean"].shape == (NUM_PRED, case.args[0].shape[0])


def test_guide_draws_are_normal_with_sd_sqrt_tau_around_the_centre():
    """N(x_k, τI) in the unconstrained space: log τ_site has mean log(centre), sd √τ."""
    case = ZOO["eight_schools"]
    scheme, result = run("eight_schools", "hr")
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
    chains, draws = (4, 50) if scheme_name == "hr" else (NUTS_CHAINS, NUTS_DRAWS)
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
    if (name, scheme_name) in TRACKED:
        assert set(idata.centres.data_vars) == set(posterior.data_vars)
        ours |= set(idata.trajectory.data_vars)
        np.testing.assert_allclose(idata.trajectory["tau"].values, TAU, rtol=1e-6)
    else:
        assert "centres" not in idata.groups() and "trajectory" not in idata.groups()
    assert ours == set(result.info) - {"step"} | set(result.trace or {}) - {"step", "centre"}


def test_sites_named_like_ours_are_the_sites():
    """`tau` (eight schools), `step`, `loss`, `regularized_loss`: the model's, in its groups."""
    for name in ("eight_schools", "named_like_ours"):
        case = ZOO[name]
        scheme, result = run(name, "hr")
        idata = _idata(name, "hr")
        assert "fitted Gaussian" in idata.posterior.attrs["draws_of"]
        for site in case.latent:  # the sites' draws, not our τ / loss / step
            assert idata.posterior[site].shape[:2] == (4, 50), site
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


def test_info_and_trace_keys_are_ours_whatever_the_model():
    """``result.info`` / ``result.trace`` hold our quantities only, never one per site."""
    (_, a), (_, b) = run("eight_schools", "hr"), run("named_like_ours", "hr")
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
    scheme, result = run("named_like_ours", "hr")
    monkeypatch.setattr(module, "STEP_DIM", "step")
    idata = to_inference_data(result, scheme, model_kwargs=case.kwargs, num_draws=10)
    assert idata.centres["step"].dims == ("step_",)
    assert idata.trajectory["loss"].dims == ("step_",)
    assert idata.step_stats["displacement"].dims == ("step_",)
    assert idata.posterior["step"].dims == ("chain", "draw")
    assert int(idata.posterior["step_"]) == NUM_STEPS
    np.testing.assert_array_equal(
        idata.centres["step"].values[-1], np.asarray(result.params["step"])
    )
