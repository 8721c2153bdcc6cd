"""Regularized-loss estimators, tracking in ``run``, the monotone-descent check, and the
per-step sampler diagnostics (R-hat, ESS, exact evaluation counts).

Closed forms on the linear regression of ``conftest`` (a Gaussian posterior
``N(μ, P⁻¹)``, ``f`` quadratic): ``F_τ(x) = f(μ) + ½ log|I + τP| + ½ (x−μ)ᵀ(P⁻¹ + τI)⁻¹(x−μ)``
and ``f_τ(x) = f(x) + ½ τ tr P``.
"""

from __future__ import annotations

import math
from functools import partial

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.diagnostics import split_gelman_rubin

from tests._runs import hr_svi_run, le_nuts_run
from tests.conftest import NOISE, ExactGaussianKernel, linreg_model
from vi_entropy import LocalEntropy, monotonicity
from vi_entropy.diagnostics import MIN_ESS, bulk_effective_sample_size, heat_loss, local_entropy
from vi_entropy.inner import Draws
from vi_entropy.observers import DIAGNOSED_COORDINATES, chain_diagnostics

K = 5.0  # tolerance in standard errors


def f_linreg(w, X, y):
    """``f = −log p(y, w)`` of ``linreg_model``, in float64."""
    X, y, w = (np.asarray(a, np.float64) for a in (X, y, w))
    n, d = X.shape
    r = y - X @ w
    return (
        0.5 * r @ r / NOISE**2
        + n * np.log(NOISE * np.sqrt(2 * np.pi))
        + 0.5 * w @ w
        + 0.5 * d * np.log(2 * np.pi)
    )


def closed_forms(x, tau, X, y, prec, prec_mean):
    """``(F_τ(x), f_τ(x))`` of the linear regression."""
    x = np.asarray(x, np.float64)
    mu = np.linalg.solve(prec, prec_mean)
    d = len(mu)
    _, logdet = np.linalg.slogdet(np.eye(d) + tau * prec)
    delta = x - mu
    cov = np.linalg.inv(prec) + tau * np.eye(d)
    le = f_linreg(mu, X, y) + 0.5 * logdet + 0.5 * delta @ np.linalg.solve(cov, delta)
    heat = f_linreg(x, X, y) + 0.5 * tau * np.trace(prec)
    return le, heat


# -- the estimators ------------------------------------------------------------------------

TAU = 0.002  # f varies by about 1 over the τ-ball at the point below: weights stay healthy
SEEDS = 100
N = 500


@pytest.fixture(scope="module")
def over_seeds(linreg):
    """Both estimates at one point under 100 keys (vectorized, which also shows they trace)."""
    X, y, prec, prec_mean = linreg
    mu = np.linalg.solve(prec, prec_mean)
    x = jnp.asarray(mu + 0.05 * np.array([1.0, -1.0, 1.0, -1.0, 1.0]), jnp.float32)
    params = {"w": x}
    keys = random.split(random.PRNGKey(0), SEEDS)

    def both(key):
        return (
            local_entropy(linreg_model, params, TAU, X, y, rng_key=key, num_samples=N),
            heat_loss(linreg_model, params, TAU, X, y, rng_key=key, num_samples=N),
        )

    le, heat = jax.jit(jax.vmap(both))(keys)
    exact = closed_forms(x, TAU, X, y, prec, prec_mean)
    return {"local_entropy": (le, exact[0]), "heat_loss": (heat, exact[1])}


@pytest.mark.parametrize("name", ["local_entropy", "heat_loss"])
def test_estimator_matches_closed_form(over_seeds, name):
    est, exact = over_seeds[name]
    value = np.asarray(est.value, np.float64)
    se = np.asarray(est.se, np.float64)
    # Every single estimate within 5 of its own SEs ...
    np.testing.assert_array_less(np.abs(value - exact), K * se)
    # ... and their average within 5 SEs of the average.
    assert abs(value.mean() - exact) < K * value.std(ddof=1) / np.sqrt(SEEDS)


@pytest.mark.parametrize("name", ["local_entropy", "heat_loss"])
def test_reported_se_matches_spread_over_seeds(over_seeds, name):
    est, _ = over_seeds[name]
    spread = float(np.std(np.asarray(est.value, np.float64), ddof=1))
    reported = float(np.mean(np.asarray(est.se, np.float64)))
    assert 1 / 1.5 < reported / spread < 1.5


def test_estimators_take_constrained_params():
    """x is the unconstrained image of the params: here log σ, with a Jacobian in f."""

    def model():
        numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))

    # In u = log σ the potential is u²/2 + log √(2π) (the Jacobian cancels the 1/σ):
    # f_τ(u) = (u² + τ)/2 + log √(2π) at u = log 2.
    estimate = jax.jit(partial(heat_loss, model, num_samples=4000))
    est = estimate({"sigma": jnp.array(2.0)}, 0.5, rng_key=random.PRNGKey(0))
    u = np.log(2.0)
    exact = 0.5 * (u**2 + 0.5) + 0.5 * np.log(2 * np.pi)
    assert abs(float(est.value) - exact) < K * float(est.se)


# -- tracking in run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_le_run(linreg):
    """LE with i.i.d. draws of the tilted posterior: exact steps up to a small MC error."""
    X, y, prec, prec_mean = linreg
    le = LocalEntropy(
        linreg_model,
        TAU,
        sampler=lambda m: ExactGaussianKernel(m, prec, prec_mean),
        num_chains=4,
        num_samples=250,
        num_warmup=0,
        progress_bar=False,
    )
    result = le.run(
        random.PRNGKey(1),
        30,
        X,
        y,
        init_params={"w": jnp.zeros(5)},
        track_every=3,
        track_samples=1000,
    )
    return le, result


def test_tracked_loss_descends_with_exact_steps(linreg, exact_le_run):
    X, y, prec, prec_mean = linreg
    _, result = exact_le_run
    trace = result.trace
    np.testing.assert_array_equal(trace["step"], np.arange(0, 31, 3))
    report = monotonicity(result)
    assert report.consistent, str(report)
    assert report.num_comparisons == 10
    assert "consistent with monotone descent" in str(report)
    # The exact F_τ at the tracked centres does descend (the paper's guarantee) ...
    exact = np.array([closed_forms(c, TAU, X, y, prec, prec_mean)[0] for c in trace["centre"]])
    assert np.all(np.diff(exact) < 0)
    # ... and each estimate matches it where the weights are healthy (delta-method regime).
    healthy = trace["smoothing_ess"] >= 10 * MIN_ESS
    assert healthy.sum() >= len(healthy) // 2
    err = np.abs(trace["regularized_loss"] - exact)[healthy]
    np.testing.assert_array_less(err, K * trace["regularized_loss_se"][healthy])
    loss = np.array([f_linreg(c, X, y) for c in trace["centre"]])
    np.testing.assert_allclose(trace["loss"], loss, rtol=1e-5)


def test_regularized_loss_method_is_what_run_tracks(linreg, exact_le_run):
    X, y, _, _ = linreg
    le, result = exact_le_run
    again = le.regularized_loss(result.state, X, y, num_samples=1000)
    assert float(again.value) == float(result.trace["regularized_loss"][-1])
    assert float(again.se) == float(result.trace["regularized_loss_se"][-1])


def test_too_few_samples_are_flagged(linreg):
    """IS with 2 proposals: each step jumps about √τ at random and F_τ rises often."""
    X, y, prec, prec_mean = linreg
    mu = np.linalg.solve(prec, prec_mean)
    le = LocalEntropy(linreg_model, TAU, sampler="importance", num_samples=2, progress_bar=False)
    start = {"w": jnp.asarray(mu, jnp.float32)}
    result = le.run(
        random.PRNGKey(0), 12, X, y, init_params=start, track_every=1, track_samples=2000
    )
    report = monotonicity(result)
    assert not report.consistent
    assert "rise(s)" in str(report)
    # Each flagged rise is real: the exact F_τ rose between those centres.
    centres = dict(zip(result.trace["step"].tolist(), result.trace["centre"], strict=True))
    for rise in report.rises:
        before = closed_forms(centres[rise.step_from], TAU, X, y, prec, prec_mean)[0]
        after = closed_forms(centres[rise.step_to], TAU, X, y, prec, prec_mean)[0]
        assert after > before


def test_default_tracking_costs_at_most_a_tenth_and_changes_nothing(linreg):
    X, y, _, _ = linreg
    # From the default start the weights are degenerate (ESS ~ 1): that is not the point
    # here, so the warning about it is off.
    le = LocalEntropy(
        linreg_model,
        0.01,
        sampler="importance",
        num_samples=500,
        ess_threshold=None,
        progress_bar=False,
    )
    tracked = le.run(random.PRNGKey(0), 12, X, y)
    untracked = le.run(random.PRNGKey(0), 12, X, y, track_every=0)
    np.testing.assert_array_equal(
        np.asarray(tracked.params["w"]), np.asarray(untracked.params["w"])
    )
    assert untracked.trace == {}
    every = math.ceil((256 + 1) / (0.1 * 500))  # the documented rule
    np.testing.assert_array_equal(tracked.trace["step"], np.arange(0, 13, every))
    # Beyond the starting point, tracking costs at most 10% of the run's evaluations.
    cost = tracked.trace["num_potential_evals"][1:].sum()
    assert cost <= 0.1 * tracked.info["num_potential_evals"].sum()


@pytest.mark.xdist_group("shared-runs")  # tests._runs: made once, on one worker
def test_heat_regularization_tracks_the_heat_loss(linreg):
    X, y, prec, prec_mean = linreg
    _, result, _ = hr_svi_run()
    trace = result.trace
    assert "smoothing_ess" not in trace
    for c, value, se in zip(
        trace["centre"], trace["regularized_loss"], trace["regularized_loss_se"], strict=True
    ):
        assert abs(value - closed_forms(c, 0.01, X, y, prec, prec_mean)[1]) < K * se


# -- the monotonicity report ------------------------------------------------------------------


def test_monotonicity_skips_pairs_across_a_change_of_tau():
    trace = {
        "step": np.array([0, 1, 2]),
        "regularized_loss": np.array([1.0, 5.0, 9.0]),
        "regularized_loss_se": np.full(3, 0.1),
        "tau": np.array([0.1, 0.05, 0.05]),
    }
    report = monotonicity(trace)
    assert (report.num_comparisons, report.num_skipped) == (1, 1)
    assert [(r.step_from, r.step_to) for r in report.rises] == [(1, 2)]
    assert report.rises[0].z == pytest.approx(4.0 / np.hypot(0.1, 0.1))
    with pytest.raises(ValueError, match="k"):
        monotonicity(trace, k=0.0)
    with pytest.raises(ValueError, match="tracking"):
        monotonicity({})


# -- per-step sampler diagnostics -------------------------------------------------------------


@pytest.mark.xdist_group("shared-runs")  # tests._runs: made once, on one worker
def test_rhat_and_ess_per_step_are_the_worst_coordinates():
    _, result, _ = le_nuts_run()
    info = result.info
    for step, draws in result.draws.items():
        values = np.asarray(draws.values, np.float64)
        assert info["max_rhat"][step] == pytest.approx(split_gelman_rubin(values).max())
        # ESS: ArviZ's bulk ESS (rank-normalized split chains).
        bulk = az.ess(az.convert_to_dataset(values), method="bulk")["x"].values
        assert info["min_ess"][step] == pytest.approx(bulk.min(), rel=1e-6)
    # Well-mixed NUTS chains on a Gaussian.
    assert np.all(info["max_rhat"] < 1.1)
    assert np.all(info["min_ess"] > 50)
    np.testing.assert_array_equal(info["step"], np.arange(len(info["step"])))


def test_chain_diagnostics_edge_cases():
    draws = Draws(jnp.zeros((2, 3, 4)), None, {})
    out = chain_diagnostics(draws)
    assert np.isnan(out["max_rhat"]) and np.isnan(out["min_ess"])
    assert chain_diagnostics(Draws(jnp.zeros((1, 8, 2)), jnp.zeros((1, 8)), {})) == {}
    # Large models: an evenly spaced subset of DIAGNOSED_COORDINATES coordinates.
    values = np.random.default_rng(0).normal(size=(2, 20, 2500))
    subset = values[..., np.linspace(0, 2499, DIAGNOSED_COORDINATES).astype(int)]
    out = chain_diagnostics(Draws(jnp.asarray(values), None, {}))
    assert out["max_rhat"] == pytest.approx(split_gelman_rubin(subset).max(), rel=1e-5)
    assert out["min_ess"] == pytest.approx(bulk_effective_sample_size(subset).min(), rel=1e-5)


CALLS = {"n": 0}


def _count(x):
    CALLS["n"] += 1


def counting_model():
    """A model that counts its own evaluations (one host callback per evaluation)."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    jax.debug.callback(_count, w[0])


@pytest.mark.parametrize(
    "make",
    [
        partial(LocalEntropy, sampler="nuts", num_samples=6, thinning=2),
        partial(LocalEntropy, sampler="importance", num_samples=6),
    ],
    ids=["nuts-thinned", "importance"],
)
def test_evaluation_counts_are_exact(make):
    """Reported counts equal the model evaluations actually run (one chain: no lockstep).

    NUTS with thinning is the case whose count is assembled from several parts; the
    importance sampler checks the tracking's count too.
    """
    scheme = make(counting_model, 0.1, num_chains=1, num_warmup=0, progress_bar=False)
    state = scheme.init(random.PRNGKey(0))
    jax.effects_barrier()
    CALLS["n"] = 0
    state, info = scheme.update(state)
    jax.block_until_ready(state)
    jax.effects_barrier()
    reported = max(int(info["num_potential_evals"]), int(info["num_grad_evals"]))
    assert CALLS["n"] == reported
    CALLS["n"] = 0
    jax.block_until_ready(scheme.regularized_loss(state, num_samples=10))
    jax.effects_barrier()
    assert CALLS["n"] == 10 + 1  # the draws and f(x_k)
