"""Ordinary NumPyro models meet the package: concrete data, SGLD defaults, rejections
said at once, ESS as ArviZ's, and the small things on the way (numpyro.param sites and
networks: tests/test_modules.py)."""

from __future__ import annotations

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax import random
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

from tests._zoo import ZOO
from tests.conftest import linreg_data, linreg_model
from tests.test_compile import count_compilations
from vi_entropy import (
    HeatRegularization,
    LocalEntropy,
    RejectedStepsError,
    VIEntropyWarning,
    monotonicity,
)
from vi_entropy.diagnostics import bulk_effective_sample_size
from vi_entropy.experiment import method_settings
from vi_entropy.inner import SGLD
from vi_entropy.observers import chain_diagnostics

UCB = ZOO["ucbadmit"]


# -- 3. models that need concrete data ------------------------------------------------------
def _ucb_is(**kw):
    return LocalEntropy(
        UCB.model, 0.01, sampler="importance", num_samples=16, ess_threshold=None,
        progress_bar=False, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ucb_run():
    le = _ucb_is()
    with count_compilations() as first:
        result = le.run(random.PRNGKey(0), 3, *UCB.args, **UCB.kwargs, track_every=1)
    return le, result, first["n"]


def test_a_model_that_calls_numpy_on_its_data_runs_compiled_once(ucb_run):
    le, result, compiled = ucb_run
    assert {k: v.shape for k, v in result.params.items()} == UCB.latent
    assert le._concrete_args  # found by tracing the model once
    # More steps, and equal data in new arrays: no new compilation.
    args = tuple(np.array(a) for a in UCB.args)
    kwargs = {k: np.array(v) for k, v in UCB.kwargs.items()}
    with count_compilations() as more:
        le.run(None, 10, *args, init_state=result.state, **kwargs)
    assert compiled > 0 and more["n"] == 0
    state, info = le.update(result.state, *UCB.args, **UCB.kwargs)  # compiles its step
    with count_compilations() as updates:
        for _ in range(2):
            state, info = le.update(state, *args, **kwargs)
    assert updates["n"] == 0 and not bool(info["rejected"])
    # Robbins-Monro runs it too.
    hr = HeatRegularization(UCB.model, 0.01, method="rm", num_inner_steps=3, progress_bar=False)
    assert set(hr.run(random.PRNGKey(0), 2, *UCB.args, **UCB.kwargs).params) == set(UCB.latent)


def test_tracing_a_model_that_needs_concrete_data_names_the_option():
    with pytest.raises(TypeError, match=r"jit_model_args=True traces them.*jit_model_args=False"):
        _ucb_is(jit_model_args=True).init(random.PRNGKey(0), *UCB.args, **UCB.kwargs)
    with pytest.raises(ValueError, match="jit_model_args: shard_data=True"):
        _ucb_is(jit_model_args=False, shard_data=True)
    with pytest.raises(TypeError, match="jit_model_args: expected True or False"):
        _ucb_is(jit_model_args="no")


def test_traced_and_concrete_data_give_the_same_iterates_on_a_traceable_model():
    X, y = linreg_data(n=20, d=3)
    make = lambda **kw: LocalEntropy(  # noqa: E731
        linreg_model, 0.01, sampler="importance", num_samples=16, ess_threshold=None,
        progress_bar=False, **kw,
    )  # fmt: skip
    default = make()
    traced = default.run(random.PRNGKey(0), 3, X, y).state.centre
    assert not default._concrete_args  # traced, as before
    concrete = make(jit_model_args=False).run(random.PRNGKey(0), 3, X, y).state.centre
    np.testing.assert_allclose(np.asarray(concrete), np.asarray(traced), rtol=1e-5, atol=1e-6)


# -- 4. SGLD without a step size ------------------------------------------------------------
def regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


def test_sgld_defaults_train_a_regression_with_a_noise_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(size=200)).astype(np.float32)
    # The default step (from the curvature, followed as the noise scale settles) with
    # 4 chains × 50 draws, so that the last centre's Monte Carlo error is small.
    le = LocalEntropy(
        regression, tau=0.05, sampler="sgld", num_chains=4, num_samples=50, progress_bar=False
    )
    result = le.run(random.PRNGKey(0), 10, X, y, track_every=3)
    assert int(result.info["num_rejected_total"][-1]) == 0
    loss = result.trace["loss"]
    assert loss[-1] < loss[0] - 100
    # The posterior mode: least squares (200 rows, a N(0, 1) prior barely matters), and
    # the residual scale.
    w_hat = np.linalg.lstsq(X, y, rcond=None)[0]
    sigma_hat = np.std(y - X @ w_hat)
    assert np.max(np.abs(np.asarray(result.params["w"]) - w_hat)) < 0.1
    assert abs(float(result.params["sigma"]) - sigma_hat) < 0.1
    step = result.info["step_size"]
    assert np.all(step > 0) and step[-1] > 10 * step[0]  # followed the curvature as σ grew


def test_sgld_defaults_sample_a_gaussian_mean_in_mcmc():
    def model():
        numpyro.sample("x", dist.Normal(1.0, 0.5))

    mcmc = MCMC(SGLD(model), num_warmup=200, num_samples=4000, progress_bar=False)
    mcmc.run(random.PRNGKey(3))
    x = np.asarray(mcmc.get_samples()["x"])
    se = x.std() / np.sqrt(effective_sample_size(x[None]))
    assert abs(x.mean() - 1.0) < 4 * se
    # Unadjusted Langevin inflates the variance by O(η); the adapted η keeps it small.
    assert 0.45 < x.std() < 0.6


def test_sgld_with_a_step_size_is_plain_langevin():
    kernel = SGLD(potential_fn=lambda z: 0.5 * jnp.sum(z**2), step_size=0.01)
    state = kernel.init(random.PRNGKey(0), 0, jnp.ones(2))
    assert state.adapt_state is None
    new = kernel.sample(state, (), {})
    _, _, key_noise = random.split(state.rng_key, 3)
    noise = random.normal(key_noise, (2,))
    np.testing.assert_array_equal(new.z, jnp.ones(2) - 0.01 * jnp.ones(2) + jnp.sqrt(0.02) * noise)
    with pytest.raises(ValueError, match="num_warmup=0"):
        SGLD(potential_fn=lambda z: jnp.sum(z**2)).init(random.PRNGKey(0), 0, jnp.ones(2))


def test_the_experiment_keeps_its_explicit_sgld_step_size():
    for smoke in (True, False):
        assert method_settings("le-sgld", 1e-3, smoke)["step_size"] == 0.25e-3


# -- 5. rejections are said at once -----------------------------------------------------------
def _exploding(**kw):
    return LocalEntropy(
        ZOO["change_point"].model, 0.01, sampler="sgld", num_chains=2, num_samples=5,
        num_warmup=0, sampler_kwargs={"step_size": 1e4}, progress_bar=False, **kw,
    )  # fmt: skip


def test_the_first_rejection_of_a_run_warns_once_with_advice():
    le = _exploding(max_rejections=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(RejectedStepsError):
            le.run(random.PRNGKey(0), 6, *ZOO["change_point"].args)
    said = [w for w in seen if issubclass(w.category, VIEntropyWarning)]
    assert len(said) == 1
    text = str(said[0].message)
    # The chains blew up until every move overflowed: SGLD refused them all, stuck.
    assert "outer step 0 was rejected" in text and "a chain was stuck" in text
    assert "SGLD: lower its step size" in text and "max_rejections=4" in text


def test_update_warns_once_per_kind_of_fault():
    le = _exploding()
    state = le.init(random.PRNGKey(0), *ZOO["change_point"].args)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(4):
            state, info = le.update(state, *ZOO["change_point"].args)
    said = [w for w in seen if issubclass(w.category, VIEntropyWarning)]
    assert bool(info["rejected"]) and len(said) == 1
    assert "was rejected" in str(said[0].message)


# -- 6. ESS as ArviZ's bulk ESS -------------------------------------------------------------------
def _ar1(phi, chains, draws, dim, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((chains, draws, dim))
    e = rng.normal(size=x.shape)
    x[:, 0] = e[:, 0]
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


@pytest.mark.parametrize(
    "phi, chains, draws", [(0.5, 4, 100), (0.95, 4, 50), (-0.9, 4, 20), (0.0, 2, 21)]
)
def test_bulk_ess_agrees_with_arviz_and_is_never_negative(phi, chains, draws):
    x = _ar1(phi, chains, draws, 3, seed=1)
    ours = bulk_effective_sample_size(x)
    theirs = az.ess(az.convert_to_dataset(x), method="bulk")["x"].values
    np.testing.assert_allclose(ours, theirs, rtol=0.01)
    assert np.all(ours >= 0)
    info = chain_diagnostics(type("D", (), {"values": x, "log_weights": None})())
    assert info["min_ess"] == pytest.approx(theirs.min(), rel=0.01)


# -- 9. the smaller ones -------------------------------------------------------------------------
def enumerated(y=None):
    z = numpyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
    numpyro.sample("y", dist.Normal(z, 1.0), obs=y)


def test_small_things_say_what_is_wrong_in_the_users_words(ucb_run):
    with pytest.raises(TypeError, match="LocalEntropy: unknown keyword 'num_sample'; did you mean 'num_samples'"):  # fmt: skip
        LocalEntropy(linreg_model, num_sample=10)
    with pytest.raises(TypeError, match="HeatRegularization: unknown keyword 'num_inner'"):
        HeatRegularization(linreg_model, num_inner=10)
    with pytest.raises(ValueError, match="'z' is a discrete site marked for enumeration.*not supported"):  # fmt: skip
        LocalEntropy(enumerated, progress_bar=False).init(random.PRNGKey(0), 1.0)
    assert HeatRegularization(linreg_model, method="rm").method == "robbins_monro"
    assert HeatRegularization(linreg_model, method="SVI").method == "svi"
    le = ucb_run[0]
    with pytest.raises(TypeError, match="state: expected a TwoStepState"):
        le.get_params(None)


def test_repr_of_a_run_result_is_a_summary(ucb_run):
    text = repr(ucb_run[1])
    assert text.startswith("RunResult(steps=3, params={a(), b(), sigma(), z(4)}")
    assert "4 tracked step(s)" in text and "1 step(s) [2]" in text and len(text) < 500


def test_monotonicity_under_a_tau_schedule_says_why_it_skips():
    trace = {
        "step": np.arange(4), "regularized_loss": np.array([3.0, 2.0, 1.0, 0.5]),
        "regularized_loss_se": np.full(4, 0.1), "tau": np.array([0.1, 0.05, 0.05, 0.02]),
    }  # fmt: skip
    report = monotonicity(trace)
    assert (report.num_comparisons, report.num_skipped_tau) == (1, 2)
    assert "not compared because tau differs" in str(report)
    trace["tau"] = np.array([0.1, 0.05, 0.03, 0.02])
    assert "nothing could be compared" in str(monotonicity(trace))


def test_an_unconverged_svi_fit_is_named_when_the_run_ends_still_moving():
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("data", 20):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = np.full(20, 3.0, np.float32)
    short = HeatRegularization(model, 0.1, num_inner_steps=3, progress_bar=False)
    with pytest.warns(VIEntropyWarning, match=r"ended still moving.*inner_gap.*num_inner_steps=3") as seen:  # fmt: skip
        result = short.run(random.PRNGKey(0), 10, y, init_params={"mu": -3.0})
    assert len([w for w in seen if "still moving" in str(w.message)]) == 1
    assert np.all(result.info["inner_gap"] > 1)
    # Converged (a larger learning rate): small gaps, no warning.
    long = HeatRegularization(model, 0.1, optim=optax.adam(0.1), progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VIEntropyWarning)
        result = long.run(random.PRNGKey(0), 10, y, init_params={"mu": -3.0})
    # A converged fit's gap is about 0.3 or less; each is estimated from 16 draws, so the
    # run's median is what the warning reads.
    assert np.median(result.info["inner_gap"]) < 0.3
