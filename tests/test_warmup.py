"""The warm-up runs inside the first outer step, in the loop of its draws.

``init`` returns the kernel initialized but not warmed up (its transition counter ``i``
at 0); the first step runs ``num_warmup`` transitions, then the draws, with the kernel's
transition traced once; a rejected first step leaves the warm-up to the next one.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jax import random
from numpyro.infer import NUTS

from tests.conftest import NAN, OK, linreg_data, linreg_model, poisoned_linreg
from vi_entropy import LocalEntropy

X, Y = linreg_data(n=20, d=3)
WARMUP, SAMPLES, THINNING = 6, 3, 2


class CountingNUTS(NUTS):
    """NumPyro's NUTS, counting how many times its transition is traced."""

    traces = 0

    def sample(self, state, model_args, model_kwargs):
        type(self).traces += 1
        return super().sample(state, model_args, model_kwargs)


def test_first_step_warms_up_and_traces_the_transition_once():
    CountingNUTS.traces = 0
    le = LocalEntropy(linreg_model, 0.05, sampler=CountingNUTS, num_chains=2,
                      num_samples=SAMPLES, num_warmup=WARMUP, thinning=THINNING,
                      progress_bar=False)  # fmt: skip
    state = le.init(random.PRNGKey(0), X, Y)
    # Not warmed up: the counter at 0, the step size NumPyro's first guess.
    assert np.all(np.asarray(state.inner.i) == 0)
    initial = np.asarray(state.inner.adapt_state.step_size)
    assert CountingNUTS.traces == 0
    result = le.run(None, 3, X, Y, init_state=state)
    # Every transition ran (warm-up, kept draws, thinned ones), traced once in all.
    per_step = SAMPLES * THINNING
    assert np.all(np.asarray(result.state.inner.i) == WARMUP + 3 * per_step)
    assert CountingNUTS.traces == 1
    adapted = np.asarray(result.state.inner.adapt_state.step_size)
    assert np.all(adapted != initial)
    # The adapted step size is kept after the first step (no more warm-up).
    np.testing.assert_array_equal(result.info["step_size"][1:], result.info["step_size"][1])


def test_a_rejected_first_step_leaves_the_warm_up_to_the_next():
    le = LocalEntropy(poisoned_linreg, 0.05, sampler="nuts", num_chains=2,
                      num_samples=SAMPLES, num_warmup=WARMUP, progress_bar=False)  # fmt: skip
    state = le.init(random.PRNGKey(0), X, Y, OK)
    with pytest.warns(match="rejected"):
        state, info = le.update(state, X, Y, NAN)  # NaN potential: rejected
        assert bool(info["rejected"])
        assert np.all(np.asarray(state.inner.i) == 0)  # the state before the warm-up
        state, info = le.update(state, X, Y, OK)  # the warning of the rejection comes here
    assert not bool(info["rejected"])
    assert np.all(np.asarray(state.inner.i) == WARMUP + SAMPLES)
    # The step's gradient count holds the warm-up's leapfrog steps (at least one per
    # transition and chain) beside the kept draws' and the refresh's (one per chain).
    kept = float(info["mean_n_steps"]) * 2 * SAMPLES
    warmup_grads = int(info["num_grad_evals"]) - round(kept) - 2
    assert warmup_grads >= 2 * WARMUP
    state, info = le.update(state, X, Y, OK)  # no warm-up left
    assert int(info["num_grad_evals"]) == round(float(info["mean_n_steps"]) * 2 * SAMPLES) + 2


def test_readapt_warms_up_every_step():
    le = LocalEntropy(linreg_model, 0.05, sampler="nuts", num_chains=2, num_samples=SAMPLES,
                      num_warmup=WARMUP, readapt=True, progress_bar=False)  # fmt: skip
    state = le.init(random.PRNGKey(0), X, Y)
    for _ in range(2):
        state, _info = le.update(state, X, Y)
        assert np.all(np.asarray(state.inner.i) == WARMUP + SAMPLES)
    assert bool(jnp.all(jnp.isfinite(state.centre)))


@pytest.mark.parametrize("name", ["hierarchical", "logistic_subsampled"])
def test_warm_up_in_step_0_on_models_we_did_not_write(name):
    """Plates, a batch-dimension latent, constrained scales, ``LocScaleReparam``, a
    deterministic site and a site named ``tau``; and a subsampled plate, whose energies
    are refreshed for step 0's mini-batch before the warm-up."""
    from tests._zoo import ZOO

    case = ZOO[name]
    le = LocalEntropy(case.model, 0.01, sampler="nuts", num_chains=2, num_samples=SAMPLES,
                      num_warmup=WARMUP, progress_bar=False)  # fmt: skip
    state = le.init(random.PRNGKey(0), *case.args, **case.kwargs)
    assert np.all(np.asarray(state.inner.i) == 0)
    initial = np.asarray(state.inner.adapt_state.step_size)
    for k in (1, 2):
        state, info = le.update(state, *case.args, **case.kwargs)
        assert not bool(info["rejected"]) and int(info["fault"]) == 0
        assert np.all(np.asarray(state.inner.i) == WARMUP + k * SAMPLES)
    assert np.all(np.asarray(state.inner.adapt_state.step_size) != initial)
    params = le.get_params(state)
    for site, shape in case.latent.items():
        assert params[site].shape == shape and np.all(np.isfinite(params[site])), site
