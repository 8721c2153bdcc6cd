"""Numerical faults never reach the centre; degenerate importance weights warn once.

Faults are injected through :func:`~tests.conftest.poisoned_linreg`, whose log density
gets a term ``poison · Σw`` with ``poison`` traced data: ``nan`` makes the potential and
its gradient NaN everywhere, for one outer step, without recompiling.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random

from tests.conftest import (
    NAN,
    OK,
    RELIABILITY_SCHEMES,
    linreg_data,
    linreg_model,
    linreg_posterior,
)
from vi_entropy import LocalEntropy, RejectedStepsError, VIEntropyWarning
from vi_entropy.faults import Fault, advise, describe

X, Y = linreg_data(n=10, d=3)

# The fault each sampler must report when the potential is NaN everywhere.
EXPECTED_FAULT = {
    # refresh() caches a NaN potential and gradient; every leapfrog proposal diverges
    "le-nuts": Fault.NONFINITE_STATE | Fault.DIVERGENT_CHAIN,
    "le-hmc": Fault.NONFINITE_STATE | Fault.DIVERGENT_CHAIN,
    # the population's energies become NaN
    "le-sa": Fault.NONFINITE_STATE,
    # refresh() caches a NaN potential and gradient; SGLD refuses every (NaN) proposal:
    # the chains stay where they are, stuck
    "le-sgld": Fault.NONFINITE_STATE | Fault.DIVERGENT_CHAIN,
    # refresh() caches a NaN potential; pCN rejects every proposal, elliptical slice
    # finds no point on the (NaN) slice and stays: the chains do not move
    "le-pcn": Fault.NONFINITE_STATE,
    "le-elliptical_slice": Fault.NONFINITE_STATE,
    "le-importance": Fault.ZERO_WEIGHTS | Fault.NONFINITE_PROPOSAL,
    # stable_update skips every inner step: the guide keeps its old mean
    "hr-svi": Fault.NONFINITE_LOSS,
    "hr-robbins_monro": Fault.NONFINITE_PROPOSAL,
}


def assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.x64
@pytest.mark.parametrize("name", RELIABILITY_SCHEMES)
def test_faulty_step_is_rejected_and_keeps_the_state(reliability_scheme, name, float_dtype):
    scheme = reliability_scheme(name)
    state = scheme.init(random.PRNGKey(0), X, Y, OK)
    state, info = scheme.update(state, X, Y, OK)
    assert int(info["fault"]) == 0 and not bool(info["rejected"])
    assert state.centre.dtype == float_dtype

    bad, info = scheme.update(state, X, Y, NAN)
    assert bool(info["rejected"])
    fault = int(info["fault"])
    assert fault & EXPECTED_FAULT[name] == EXPECTED_FAULT[name], describe(fault)
    if name == "hr-svi":
        assert int(info["num_skipped_inner"]) == scheme.num_inner_steps
    # Neither the centre nor the chains / optimizer moved; the counters did.
    assert_trees_equal(bad.centre, state.centre)
    assert_trees_equal(bad.inner, state.inner)
    assert float(info["displacement"]) == 0.0
    assert int(bad.step) == int(state.step) + 1
    assert (int(bad.num_rejected), int(bad.num_rejected_total)) == (1, 1)
    assert int(info["num_rejected_total"]) == 1

    # The rejection is said by the next update (reading it at once would make the host
    # wait for the device), once per kind of fault.
    with pytest.warns(VIEntropyWarning, match="outer step 1 was rejected") as said:
        good, info = scheme.update(bad, X, Y, OK)
    assert len(said) == 1
    assert int(info["fault"]) == 0
    assert (int(good.num_rejected), int(good.num_rejected_total)) == (0, 1)
    assert bool(jnp.all(jnp.isfinite(good.centre)))
    assert not np.array_equal(np.asarray(good.centre), np.asarray(state.centre))


@pytest.mark.parametrize("name", RELIABILITY_SCHEMES)
def test_run_stops_after_max_rejections_and_keeps_the_last_good_state(reliability_scheme, name):
    scheme = reliability_scheme(name)
    start = scheme.run(random.PRNGKey(1), 2, X, Y, OK).state
    with (
        pytest.warns(VIEntropyWarning, match="outer step 2 was rejected") as said,
        pytest.raises(RejectedStepsError) as err,
    ):
        scheme.run(None, 50, X, Y, NAN, init_state=start)
    assert len(said) == 1  # at the first rejection, once per run
    for text in advise(EXPECTED_FAULT[name]):
        assert text in str(said[0].message)
    message = str(err.value)
    assert f"{scheme.max_rejections} consecutive outer steps were rejected" in message
    assert "steps 2 to 11" in message
    for text in describe(EXPECTED_FAULT[name]):
        assert f"{text} ({scheme.max_rejections} of {scheme.max_rejections} steps)" in message
    result = err.value.result
    assert_trees_equal(result.state, start)
    assert_trees_equal(result.params, scheme.get_params(start))
    assert result.info["rejected"].tolist() == [True] * scheme.max_rejections
    assert result.info["num_rejected_total"].tolist() == list(range(1, 11))


def test_transient_faults_are_skipped_and_counted():
    """A τ schedule that is NaN at steps 2 and 3: those steps are rejected, the run goes on."""
    tau = lambda k: jnp.where((k == 2) | (k == 3), jnp.nan, 0.01)  # noqa: E731
    le = LocalEntropy(
        linreg_model, tau, sampler="importance", num_samples=16, ess_threshold=None,
        progress_bar=False,
    )  # fmt: skip
    with pytest.warns(VIEntropyWarning, match="tau schedule gave a value"):
        result = le.run(random.PRNGKey(0), 6, X, Y)
    info = result.info
    assert info["rejected"].tolist() == [False, False, True, True, False, False]
    assert info["num_rejected_total"].tolist() == [0, 0, 1, 2, 2, 2]
    assert all(int(f) & Fault.BAD_TAU for f in info["fault"][2:4])
    assert info["fault"][[0, 1, 4, 5]].tolist() == [0, 0, 0, 0]
    assert info["displacement"][2:4].tolist() == [0.0, 0.0]
    assert (info["displacement"][[0, 1, 4, 5]] > 0).all()
    assert int(result.state.num_rejected_total) == 2
    assert bool(jnp.all(jnp.isfinite(result.params["w"])))


def test_exploding_sgld_chains_stop_the_run_with_the_reason():
    """Step size 1000 on a tilted posterior of curvature ~150: the chains grow ~10^5-fold
    per transition and overflow (float32 and float64) within the first step's 100; SGLD
    refuses every proposal from there on, so the chains are stuck."""
    le = LocalEntropy(
        linreg_model, 0.01, sampler="sgld", num_chains=2, num_samples=100, num_warmup=0,
        sampler_kwargs={"step_size": 1e3}, max_rejections=3, progress_bar=False,
    )  # fmt: skip
    start = {"w": jnp.zeros(3)}
    with (
        pytest.warns(VIEntropyWarning, match="a chain was stuck"),
        pytest.raises(RejectedStepsError, match="SGLD refused all its last proposals") as err,
    ):
        le.run(random.PRNGKey(0), 20, X, Y, init_params=start)
    assert "steps 0 to 2" in str(err.value) and "SGLD: lower its step size" in str(err.value)
    assert int(err.value.result.state.step) == 0
    np.testing.assert_array_equal(np.asarray(err.value.result.params["w"]), np.zeros(3))


def test_importance_proposals_in_a_nan_region_get_zero_weight():
    """f is NaN for w[0] > 0.2: those proposals drop out; the step is not a fault."""

    def holed(X, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        numpyro.factor("hole", jnp.where(w[0] > 0.2, jnp.nan, 0.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)

    le = LocalEntropy(
        holed, 0.01, sampler="importance", num_samples=256, ess_threshold=None,
        progress_bar=False,
    )  # fmt: skip
    result = le.run(random.PRNGKey(0), 2, X, Y, init_params={"w": jnp.array([0.15, 0.0, 0.0])})
    assert int(result.info["num_zero_weights"][0]) > 0  # ~30 % of them start in the hole
    assert result.info["fault"].tolist() == [0, 0]
    assert bool(jnp.all(jnp.isfinite(result.params["w"])))
    assert float(result.params["w"][0]) <= 0.2


# -- degenerate importance weights ----------------------------------------------------------


@pytest.fixture(scope="module")
def importance():
    return LocalEntropy(
        linreg_model, 0.01, sampler="importance", num_samples=64, progress_bar=False
    )


def test_degenerate_weights_warn_once_per_run_with_advice(importance):
    """From w = 0 the loss changes by hundreds over the proposal: ESS < 2 of 64 for the
    first steps, yet one warning per run."""
    for _ in range(2):  # once per run, again in the next run
        with pytest.warns(VIEntropyWarning) as record:
            result = importance.run(random.PRNGKey(0), 4, X, Y)
        # (The tracked F_τ rests on few draws too, and says so in a warning of its own.)
        said = [str(w.message) for w in record if "weights degenerated" in str(w.message)]
        assert len(said) == 1
        message = said[0]
        assert "effective sample size" in message and "outer step 0" in message
        assert "Lower tau" in message and "num_samples" in message and "sampler" in message
        assert (result.info["importance_ess"][:2] < 2).all()


def test_healthy_weights_and_disabled_threshold_do_not_warn(importance, monkeypatch):
    """Near the posterior mean the loss changes by ~0.5 over the proposal: ESS ~ 50 of 64
    (Kish's ESS of log-normal weights with log-variance 0.24: 64 · e^(-0.24) ≈ 50)."""
    prec, prec_mean = linreg_posterior(X, Y)
    near = {"w": jnp.asarray(np.linalg.solve(prec, prec_mean))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        healthy = importance.run(random.PRNGKey(0), 3, X, Y, init_params=near)
        assert (healthy.info["importance_ess"] > 32).all()
        monkeypatch.setattr(importance.inner_step, "ess_threshold", None)
        # (from w = 0, untracked: the tracked F_τ would rest on one draw, and say so)
        silenced = importance.run(random.PRNGKey(0), 3, X, Y, track_every=0)
        assert (silenced.info["importance_ess"][:2] < 2).all()
