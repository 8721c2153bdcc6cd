"""An Optax optimizer on the outer step (``outer_optim``, our extension).

The default (``None``) is the paper's step ``x_{k+1} = (1 − α) x_k + α m_k``, bitwise;
``optax.sgd(τ)`` on the direction ``(x_k − m_k)/τ`` is the same step up to rounding;
Adam converges to the posterior mean (LE's and HR's fixed point on a Gaussian model);
the optimizer's state is checkpointed, resumed bitwise, kept on rejected steps and
compiled once.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import random

from tests.conftest import NAN, OK, linreg_data, linreg_model, linreg_posterior, poisoned_linreg
from tests.test_checkpoint import assert_results_equal, interrupted_at_step
from tests.test_compile import count_compilations
from vi_entropy import HeatRegularization, LocalEntropy, OuterOptimState, VIEntropyWarning
from vi_entropy.checkpoint import CheckpointError

X, Y = linreg_data(n=10, d=3)
TAU = 0.01

SCHEMES = {
    "le-importance": partial(
        LocalEntropy, sampler="importance", num_samples=32, ess_threshold=None
    ),
    "le-sgld": partial(
        LocalEntropy,
        sampler="sgld",
        num_chains=2,
        num_samples=4,
        num_warmup=4,
        sampler_kwargs={"step_size": 1e-3},
    ),
    "hr-svi": partial(HeatRegularization, method="svi", num_inner_steps=4, num_particles=2),
}


def make(name, model=linreg_model, **kwargs):
    return SCHEMES[name](model, TAU, progress_bar=False, **kwargs)


def _exposing_mean(cls):
    """``cls`` with step 2's mean ``m_k`` copied into ``info["m"]`` (white box)."""

    class Exposing:  # an InnerStep around the scheme's own
        def __init__(self, inner):
            self.inner = inner

        def init(self, *args):
            return self.inner.init(*args)

        def step(self, *args):
            mean, state, info, draws = self.inner.step(*args)
            return mean, state, {**info, "m": mean}, draws

    class Exposed(cls):
        def _make_inner(self):
            return Exposing(super()._make_inner())

    return Exposed


def _iterates(scheme, n, *args):
    """Centres ``x_0 .. x_n`` and means ``m_0 .. m_{n-1}`` of ``n`` updates."""
    state = scheme.init(random.PRNGKey(0), *args)
    centres, means = [np.asarray(state.centre)], []
    for _ in range(n):
        state, info = scheme.update(state, *args)
        centres.append(np.asarray(state.centre))
        means.append(np.asarray(info["m"]))
    return np.stack(centres), np.stack(means)


@pytest.mark.x64
@pytest.mark.parametrize("name", ["le-importance", "hr-svi"])
def test_default_is_the_papers_step_bitwise_and_sgd_tau_the_same_up_to_rounding(name):
    cls = _exposing_mean(SCHEMES[name].func)
    options = SCHEMES[name].keywords
    paper = cls(linreg_model, TAU, progress_bar=False, **options)
    centres, means = _iterates(paper, 4, X, Y)
    # α = 1: the new centre is step 2's mean, bit for bit.
    np.testing.assert_array_equal(centres[1:], means)
    damped = cls(linreg_model, TAU, alpha=0.5, progress_bar=False, **options)
    centres, means = _iterates(damped, 4, X, Y)
    half = np.asarray(0.5, centres.dtype)
    np.testing.assert_array_equal(centres[1:], half * centres[:-1] + half * means)

    sgd = cls(linreg_model, TAU, outer_optim=optax.sgd(TAU), progress_bar=False, **options)
    sgd_centres, sgd_means = _iterates(sgd, 4, X, Y)
    # x − τ (x − m)/τ rounds differently from m: a few ulps of the centre, no more.
    eps = np.finfo(centres.dtype).eps
    np.testing.assert_allclose(sgd_centres, _iterates(paper, 4, X, Y)[0], rtol=0, atol=64 * eps)


@pytest.mark.parametrize("name", ["le-sgld", "hr-svi"])
def test_adam_outer_converges_to_the_posterior_mean(name):
    # On a Gaussian posterior N(μ, Σ) both schemes' fixed point is μ; Adam with a
    # decaying learning rate gets there from 10-30 posterior sd away.
    X, y = linreg_data()
    prec, prec_mean = linreg_posterior(X, y)
    mu = np.linalg.solve(prec, prec_mean)
    sd = np.sqrt(np.diag(np.linalg.inv(prec)))
    adam = optax.adam(optax.exponential_decay(0.1, 100, 0.1))
    if name == "le-sgld":
        options = {"num_warmup": 10, "num_samples": 10, "sampler_kwargs": {}}
    else:  # SGD on the proximal problem, a small enough step for its curvature (≤ 400)
        options = {"optim": optax.sgd(0.25 * TAU), "num_inner_steps": 10}
    scheme = make(name, outer_optim=adam, **options)
    result = scheme.run(random.PRNGKey(0), 100, X, y, init_params={"w": jnp.zeros(5)})
    assert isinstance(result.state.inner, OuterOptimState)
    assert np.all(np.abs(mu) / sd > 2)  # it had somewhere to go
    assert np.all(np.abs(np.asarray(result.state.centre) - mu) / sd < 0.5)


@pytest.mark.parametrize("name", ["le-sgld"])
def test_interrupted_run_with_outer_optim_resumes_bitwise(name, tmp_path):
    scheme = make(name, outer_optim=optax.adam(0.05))
    key = random.PRNGKey(3)
    whole = scheme.run(key, 5, X, Y, keep_draws="all")
    assert jax.tree.leaves(whole.state.inner.opt_state)  # Adam's moments are state leaves
    path = tmp_path / "run.ckpt"
    with interrupted_at_step(scheme, 3), pytest.raises(KeyboardInterrupt):
        scheme.run(key, 5, X, Y, keep_draws="all", checkpoint=path, checkpoint_every=2)
    resumed = scheme.run(None, 5, X, Y, keep_draws="all", checkpoint=path, resume=True)
    assert_results_equal(resumed, whole)
    # Without the outer optimizer the checkpoint is another run's: refused.
    with pytest.raises(CheckpointError, match="outer_optim"):
        make(name).run(None, 5, X, Y, checkpoint=path, resume=True)


# HR-SVI skips every inner step on a NaN loss, so its mean stays put and the direction
# is zero: a step Adam would still count, had the driver not kept the old state.
@pytest.mark.parametrize("name", ["hr-svi"])
def test_rejected_step_keeps_the_optimizer_state(name):
    scheme = make(name, model=poisoned_linreg, outer_optim=optax.adam(0.05))
    state = scheme.init(random.PRNGKey(0), X, Y, OK)
    state, info = scheme.update(state, X, Y, OK)
    assert not bool(info["rejected"])
    bad, info = scheme.update(state, X, Y, NAN)
    assert bool(info["rejected"])
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        (bad.centre, bad.inner),
        (state.centre, state.inner),
    )
    # update reads a step's outcome at the next call (the host never waits for it)
    with pytest.warns(VIEntropyWarning, match="rejected"):
        good, info = scheme.update(bad, X, Y, OK)
    assert not bool(info["rejected"])
    assert int(good.inner.opt_state[0].count) == 2  # the rejected step did not count


@pytest.mark.parametrize("name", ["le-importance"])
def test_fifty_steps_with_outer_optim_compile_no_more_than_five(name):
    tau = lambda step: 0.01 / (1.0 + step)  # noqa: E731
    scheme = partial(SCHEMES[name], linreg_model, tau, progress_bar=False, max_rejections=100)
    adam = optax.adam(optax.exponential_decay(0.05, 10, 0.5))
    first = scheme(outer_optim=adam)
    with count_compilations() as short_run:
        result = first.run(random.PRNGKey(0), 5, X, Y)
    assert short_run["n"] > 0
    with count_compilations() as more:
        first.run(None, 45, X, Y, init_state=result.state)
    assert more["n"] == 0
    with count_compilations() as long_run:
        scheme(outer_optim=adam).run(random.PRNGKey(1), 50, X, Y)
    assert long_run["n"] <= short_run["n"]


def test_bad_outer_optim_is_refused_with_its_name():
    with pytest.raises(TypeError, match=r"LocalEntropy: outer_optim: expected an Optax"):
        LocalEntropy(linreg_model, outer_optim="adam")
    with pytest.raises(TypeError, match=r"HeatRegularization: outer_optim: expected an Optax"):
        HeatRegularization(linreg_model, outer_optim=optax.adam)  # the factory, not called
    with pytest.raises(ValueError, match=r"alpha=0.5 damps the default outer step only"):
        LocalEntropy(linreg_model, alpha=0.5, outer_optim=optax.sgd(0.01))
