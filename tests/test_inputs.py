"""Bad input gets a clear error naming the argument and what was expected."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.infer import NUTS

from tests.conftest import linreg_data, linreg_model
from vi_entropy import HeatRegularization, LocalEntropy

X, Y = linreg_data(n=10, d=3)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("cls", [LocalEntropy, HeatRegularization])
def test_tau_must_be_positive_and_finite(cls, tau):
    with pytest.raises(ValueError, match="tau"):
        cls(linreg_model, tau)


def test_tau_type_and_schedule():
    with pytest.raises(TypeError, match="tau"):
        LocalEntropy(linreg_model, "0.1")
    with pytest.raises(ValueError, match=r"tau\(0\)"):
        LocalEntropy(linreg_model, lambda step: -0.1 + 0.0 * step)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "gibbs"}, "sampler"),
        ({"num_chains": 0}, "num_chains"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_warmup": -1}, "num_warmup"),
        ({"thinning": 0}, "thinning"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"beta": -1.0}, "beta"),
        ({"averaging": "median"}, "averaging"),
        ({"ema_decay": 2.0}, "ema_decay"),
        ({"sampler": "importance", "sampler_kwargs": {"step_size": 1.0}}, "sampler_kwargs"),
    ],
)
def test_local_entropy_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalEntropy(linreg_model, 0.1, **kwargs)


def test_count_type_errors():
    with pytest.raises(TypeError, match="num_chains"):
        LocalEntropy(linreg_model, 0.1, num_chains=2.5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "adam"}, ValueError, "method"),
        ({"optim": "adam"}, TypeError, "optim"),
        ({"num_inner_steps": 0}, ValueError, "num_inner_steps"),
        ({"num_particles": 0}, ValueError, "num_particles"),
        ({"method": "robbins_monro", "gain_kappa": 0.4}, ValueError, "gain_kappa"),
        ({"method": "robbins_monro", "estimator": "spsa"}, ValueError, "estimator"),
    ],
)
def test_heat_regularization_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        HeatRegularization(linreg_model, 0.1, **kwargs)


@pytest.fixture(scope="module")
def le():
    return LocalEntropy(linreg_model, 0.1, sampler="importance", num_samples=8, progress_bar=False)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({}, ValueError, r"init_params: sites must be exactly \['w'\]; missing \['w'\]"),
        ({"w": jnp.zeros(3), "b": 1.0}, ValueError, r"unexpected \['b'\]"),
        ({"w": jnp.zeros(4)}, ValueError, r"init_params\['w'\]: expected shape \(3,\)"),
        (
            {"w": jnp.array([0.0, jnp.nan, 0.0])},
            ValueError,
            r"init_params\['w'\]: values must be finite",
        ),
        ({"w": jnp.zeros(3, jnp.int32)}, TypeError, r"init_params\['w'\]: expected a floating"),
        ([0.0, 0.0, 0.0], TypeError, "init_params: expected a dict"),
    ],
)
def test_init_params_are_checked(le, params, error, match):
    with pytest.raises(error, match=match):
        le.init(random.PRNGKey(0), X, Y, init_params=params)


def test_init_params_outside_support():
    def model():
        numpyro.sample("s", dist.HalfNormal(1.0))

    le = LocalEntropy(model, 0.1, sampler="importance", num_samples=8)
    with pytest.raises(ValueError, match=r"init_params\['s'\]: values must lie in the support"):
        le.init(random.PRNGKey(0), init_params={"s": jnp.array(-1.0)})


def test_non_finite_potential_at_start(le):
    y_bad = np.asarray(Y).copy()
    y_bad[0] = np.nan
    with pytest.raises(ValueError, match="potential energy at the starting point is not finite"):
        le.init(random.PRNGKey(0), X, jnp.asarray(y_bad), init_params={"w": jnp.zeros(3)})


def test_discrete_latent_site():
    def model():
        numpyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="model: latent site 'k' has a discrete distribution"):
        LocalEntropy(model, 0.1).init(random.PRNGKey(0))


def test_no_latent_sites():
    def model(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="model: it has no latent sample sites"):
        HeatRegularization(model, 0.1).init(random.PRNGKey(0), 1.0)


def test_kernel_of_another_model():
    def other(X, y=None):
        numpyro.sample("v", dist.Normal(0.0, 1.0))

    le = LocalEntropy(linreg_model, 0.1, sampler=NUTS(other))
    with pytest.raises(ValueError, match="sampler: the kernel must be built on the same model"):
        le.init(random.PRNGKey(0), X, Y)


def test_kernel_factory_must_return_a_kernel():
    le = LocalEntropy(linreg_model, 0.1, sampler=lambda model: "nuts")
    with pytest.raises(TypeError, match="sampler: the factory returned str"):
        le.init(random.PRNGKey(0), X, Y)


def test_get_params_before_init():
    with pytest.raises(RuntimeError, match="call init"):
        LocalEntropy(linreg_model, 0.1).get_params(None)


def test_num_steps_and_init_state_conflicts(le):
    state = le.init(random.PRNGKey(0), X, Y, init_params={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="num_steps"):
        le.run(random.PRNGKey(0), -1, X, Y)
    with pytest.raises(ValueError, match="init_params: give either"):
        le.run(random.PRNGKey(0), 1, X, Y, init_params={"w": jnp.zeros(3)}, init_state=state)
    with pytest.raises(ValueError, match="keep_draws"):
        le.run(random.PRNGKey(0), 1, X, Y, keep_draws="first")
