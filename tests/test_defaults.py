"""Defaults that move on models written the way NumPyro's documentation writes them:
SGLD across a NaN cliff, Robbins-Monro where ``τ`` times the curvature is large, a
horseshoe regression (a site named ``tau``), and a plain-NumPyro network trained by
``LocalEntropy(sampler="sgld")`` given only the model, ``τ`` and the steps."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random

from vi_entropy import HeatRegularization, LocalEntropy, VIEntropyWarning
from vi_entropy.data import load_digits


def _run(scheme, steps, *args, **kwargs):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = scheme.run(random.PRNGKey(0), steps, *args, **kwargs)
    said = [str(w.message) for w in seen if issubclass(w.category, VIEntropyWarning)]
    return result, said


# -- SGLD refuses a proposal beyond a NaN cliff ---------------------------------------------
def sqrt_link(y=None):
    """``sqrt(theta)`` of an unconstrained ``theta`` (a user's slip: a variance given a
    ``Normal`` prior): the potential is finite down to 0 and NaN below."""
    theta = numpyro.sample("theta", dist.Normal(1.0, 1.0))
    with numpyro.plate("data", 50):
        numpyro.sample("y", dist.Normal(jnp.sqrt(theta), 1.0), obs=y)


def test_sgld_refuses_proposals_beyond_a_nan_cliff_and_trains():
    # Data centred at 0 push theta against the cliff at 0 (the potential grows like
    # 25 theta there): proposals cross it, and are refused rather than poisoning the step.
    y = random.normal(random.PRNGKey(1), (50,))
    le = LocalEntropy(sqrt_link, 0.01, sampler="sgld", num_chains=4, progress_bar=False)
    result, said = _run(le, 20, y, init_params={"theta": 0.5})
    assert int(result.info["num_rejected_total"][-1]) == 0
    assert result.info["num_refused"].sum() > 0
    assert any("SGLD refused" in s and "stayed where they were" in s for s in said)
    theta = float(result.params["theta"])
    assert 0.0 < theta < 0.2  # moved from 0.5 to the posterior's bulk, against the cliff


# -- Robbins-Monro's gain where τ times the curvature is large ------------------------------
def linreg(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 10.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def _scaled_regression():
    rng = np.random.default_rng(0)
    X = (3.0 * rng.normal(size=(200, 3))).astype(np.float32)  # ∇²f ≈ 1800 I: τλ ≈ 18
    y = (X @ np.array([1.0, -2.0, 3.0]) + rng.normal(size=200)).astype(np.float32)
    return X, y


def test_robbins_monro_default_gain_stays_stable_where_tau_times_curvature_is_large():
    X, y = _scaled_regression()
    hr = HeatRegularization(linreg, method="robbins_monro", progress_bar=False)
    result, said = _run(hr, 20, X, y)
    assert int(result.info["num_rejected_total"][-1]) == 0 and not said  # converged, too
    assert np.all(result.info["rm_gain_scale"] == 1.0)  # never needed a retry
    # Scaled by 1 / (1 + τλ): the first gain is about 0.5 τ / 19, not 0.5 τ.
    np.testing.assert_allclose(result.info["rm_first_gain"][0], 0.5e-2 / 19, rtol=0.2)
    # Noise of the iterate about 0.017 per coordinate (as below, with a ≈ 2.6e-4): 3 of those.
    w_hat = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(result.params["w"]), w_hat, atol=0.05)


def test_robbins_monro_with_a_fixed_gain_that_diverges_retries_with_smaller_gains():
    X, y = _scaled_regression()
    hr = HeatRegularization(linreg, method="robbins_monro", gain=0.5, progress_bar=False)
    result, said = _run(hr, 20, X, y)
    # 0.5 (1 + τλ) ≈ 9.5 > 2 diverges; each fit is retried with a quarter of the gains.
    assert int(result.info["num_rejected_total"][-1]) == 0 and not said
    assert result.info["rm_gain_scale"].max() <= 0.5  # gains that converge, found anew
    # The iterate keeps a noise of sqrt(a σ_g² / 2λ) ≈ 0.04 per coordinate (first gain
    # a ≈ 1e-3, gradient noise σ_g ≈ λ √(τ/8) ≈ 64 from 8 particles): 3 of those.
    w_hat = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(result.params["w"]), w_hat, atol=0.12)


def test_gradient_free_robbins_monro_keeps_to_forward_evaluations_and_retries():
    """The gradient-free estimator takes no curvature (no gradient at all): its default
    gain stays 0.5 τ, which diverges at τλ ≈ 18, and the retries find gains that converge."""
    X, y = _scaled_regression()
    hr = HeatRegularization(
        linreg, method="robbins_monro", estimator="gradient_free", progress_bar=False
    )
    result, said = _run(hr, 20, X, y)
    assert np.all(result.info["num_grad_evals"] == 0)
    assert int(result.info["num_rejected_total"][-1]) == 0
    assert result.info["rm_gain_scale"].max() <= 0.5
    assert np.all(np.isfinite(np.asarray(result.params["w"])))


def horseshoe(X, y=None):
    """NumPyro's horseshoe regression (its examples' form, with a site named ``tau``)."""
    D = X.shape[1]
    lambdas = numpyro.sample("lambdas", dist.HalfCauchy(jnp.ones(D)))
    tau = numpyro.sample("tau", dist.HalfCauchy(jnp.ones(1)))
    unscaled_betas = numpyro.sample("unscaled_betas", dist.Normal(0.0, jnp.ones(D)))
    betas = numpyro.deterministic("betas", tau * lambdas * unscaled_betas)
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(X @ betas, sigma), obs=y)


def test_robbins_monro_defaults_train_a_horseshoe_regression():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 10)).astype(np.float32)
    y = (X[:, :3] @ np.array([1.0, -2.0, 3.0]) + 0.5 * rng.normal(size=100)).astype(np.float32)
    hr = HeatRegularization(horseshoe, method="robbins_monro", progress_bar=False)
    result, said = _run(hr, 30, X, y, track_every=10)
    assert int(result.info["num_rejected_total"][-1]) == 0
    assert not [s for s in said if "rejected" in s]
    loss = result.trace["loss"]
    assert loss[-1] < 0.2 * loss[0]
    betas = hr.get_sites(result.state, X, y)["betas"]
    # The three signals found, with the right signs, the noise coefficients small.
    assert np.all(np.sign(np.asarray(betas[:3])) == [1, -1, 1])
    assert np.max(np.abs(np.asarray(betas[3:]))) < 0.5


# -- a network written as a plain NumPyro model ---------------------------------------------
def mlp(X, y=None):
    """Two ReLU layers of 32, ``Normal(0, 1)`` priors, ``Categorical`` logits in a plate."""
    sizes = [X.shape[1], 32, 32, 10]
    h = X
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        W = numpyro.sample(f"W{i}", dist.Normal(0.0, 1.0).expand([a, b]).to_event(2))
        c = numpyro.sample(f"b{i}", dist.Normal(0.0, 1.0).expand([b]).to_event(1))
        h = h @ W + c
        if i < len(sizes) - 2:
            h = jax.nn.relu(h)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=h), obs=y)
    return h


def glorot(key, X):
    sizes = [X.shape[1], 32, 32, 10]
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = random.split(key)
        params[f"W{i}"] = random.normal(sub, (a, b)) * jnp.sqrt(2.0 / (a + b))
        params[f"b{i}"] = jnp.zeros(b)
    return params


@pytest.mark.parametrize("tau", [1e-3, 1e-2])
def test_sgld_defaults_train_a_network_the_user_wrote(tau):
    """Given only the model, τ and the steps, LE-SGLD trains where the old adapted step
    (MALA's acceptance in 3,500 dimensions) underfit at chance level."""
    data = load_digits()
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    le = LocalEntropy(mlp, tau, sampler="sgld", progress_bar=False)
    result, said = _run(le, 40, X, y, init_params=glorot(random.PRNGKey(0), X))
    assert int(result.info["num_rejected_total"][-1]) == 0
    # Only the note that the tracked F_τ of a network rests on one or two draws.
    assert all("tracked local entropy rests on" in s for s in said)
    predict = numpyro.handlers.seed(numpyro.handlers.substitute(mlp, result.params), 0)
    logits = predict(jnp.asarray(data.X_test))
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == data.y_test))
    assert accuracy > 0.85  # 40 steps × 21 gradients; Adam's 840 steps reach about 0.95


def test_sgld_adapted_as_nuts_adapts_underfits_a_network_and_says_what_to_change():
    """The adapted step (``step_size=None``: MALA's acceptance, a diagonal mass matrix)
    barely moves a network: the run warns that it ended still moving, naming the step."""
    data = load_digits()
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    le = LocalEntropy(
        mlp, 1e-3, sampler="sgld", sampler_kwargs={"step_size": None}, progress_bar=False
    )
    _, said = _run(le, 40, X, y, init_params=glorot(random.PRNGKey(0), X))
    moving = [s for s in said if "the run ended still moving" in s]
    assert len(moving) == 1 and "a larger SGLD step" in moving[0]


def normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", 20):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.mark.parametrize("scheme", [LocalEntropy, HeatRegularization])
def test_a_run_that_ends_still_moving_names_tau_and_a_converged_one_is_quiet(scheme):
    y = np.full(20, 3.0, np.float32)
    # τ = 1e-4 against a posterior sd of 0.22: each step moves mu by about 20 τ |mu - 3|.
    small = scheme(normal_mean, 1e-4, progress_bar=False)
    _, said = _run(small, 20, y, init_params={"mu": -3.0})
    moving = [s for s in said if "the run ended still moving" in s]
    assert len(moving) == 1 and "a larger tau (now tau=0.0001" in moving[0]
    assert "more outer steps" in moving[0] and "outer_optim" in moving[0]
    large = scheme(normal_mean, 0.1, progress_bar=False)
    result, said = _run(large, 20, y, init_params={"mu": -3.0})
    assert not [s for s in said if "still moving" in s]
    assert abs(float(result.params["mu"]) - 3.0) < 0.1


def test_tracked_local_entropy_on_one_or_two_draws_is_said():
    """2,000 observations of 5 means and τ = 1: N(x, τI) puts about 256 (1/√2000)^5 of
    its 256 tracking draws where e^-f is not negligible, so the tracked F_τ rests on the
    single best of them at every tracked step."""
    y = random.normal(random.PRNGKey(2), (2000, 5)) + 3.0

    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(jnp.zeros(5), 10.0).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)

    le = LocalEntropy(model, 1.0, sampler="importance", num_samples=64, ess_threshold=None,
                      progress_bar=False)  # fmt: skip
    result, said = _run(le, 3, y, init_params={"mu": jnp.full(5, 3.0)}, track_every=1)
    assert np.all(result.trace["smoothing_ess"] < 3)
    assert len([s for s in said if "tracked local entropy rests on" in s]) == 1
