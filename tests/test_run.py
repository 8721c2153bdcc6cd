"""``run``'s fast paths keep its results: checks one step behind, draws not kept."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random

from tests.conftest import linreg_data, linreg_model
from vi_entropy import LocalEntropy, RejectedStepsError, VIEntropyWarning


def walled_model():
    """``x ~ N(0, 1)`` with a NaN potential outside ``|x| < 1``."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("wall", jnp.where(jnp.abs(x) < 1.0, 0.0, jnp.nan))


def test_rejected_steps_stop_the_run_at_the_same_step_with_the_last_good_state():
    # Tiny τ for three steps (all proposals inside the wall), then huge (all outside).
    tau = lambda step: jnp.where(step < 3, 1e-4, 1e6)  # noqa: E731
    le = LocalEntropy(
        walled_model, tau, sampler="importance", num_samples=2, max_rejections=3,
        progress_bar=False,
    )  # fmt: skip
    with (
        pytest.warns(VIEntropyWarning, match="outer step 3 was rejected"),
        pytest.raises(RejectedStepsError) as err,
    ):
        le.run(random.PRNGKey(0), 20)
    result = err.value.result
    assert int(result.state.step) == 3
    rejected = np.asarray(result.info["rejected"])
    np.testing.assert_array_equal(rejected, [False] * 3 + [True] * 3)
    assert list(result.draws) == [5]  # the draws of the step that stopped the run


@pytest.mark.parametrize("averaging", ["arithmetic", "exponential"])
def test_running_average_without_draws_matches_the_kept_draws(averaging):
    X, y = linreg_data(n=20, d=3)
    le = LocalEntropy(
        linreg_model, 0.01, sampler="sgld", num_chains=3, num_samples=6, num_warmup=2,
        sampler_kwargs={"step_size": 1e-3}, averaging=averaging, progress_bar=False,
    )  # fmt: skip
    kept = le.run(random.PRNGKey(0), 3, X, y)
    streamed = le.run(random.PRNGKey(0), 3, X, y, keep_draws=None)
    assert streamed.draws == {} and list(kept.draws) == [2]
    assert set(streamed.info) == set(kept.info)
    np.testing.assert_allclose(
        np.asarray(streamed.state.centre), np.asarray(kept.state.centre), rtol=1e-5, atol=1e-6
    )
    # Some steps kept, the others streamed: the same iterates again.
    some = le.run(random.PRNGKey(0), 3, X, y, keep_draws=[1])
    assert list(some.draws) == [1] and some.draws[1].values.shape == (3, 6, 3)
    np.testing.assert_allclose(
        np.asarray(some.state.centre), np.asarray(kept.state.centre), rtol=1e-5, atol=1e-6
    )
