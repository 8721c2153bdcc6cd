"""Bad input gets a clear error naming the argument and what was expected."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.optim
import pytest
from jax import random
from numpyro.distributions import constraints
from numpyro.infer import NUTS

from tests.conftest import linreg_data, linreg_model
from vi_entropy import HeatRegularization, LocalEntropy, VIEntropyWarning

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
        ({}, ValueError, r"init_params: does not match .*\['w'\]: missing sites \['w'\]"),
        ({"w": jnp.zeros(3), "b": 1.0}, ValueError, r"unknown sites \['b'\]"),
        ({"w": jnp.zeros(4)}, ValueError, r"init_params\['w'\]: expected shape \(3,\)"),
        (
            {"w": jnp.array([0.0, jnp.nan, 0.0])},
            ValueError,
            r"init_params\['w'\]: values must be finite",
        ),
        ({"w": jnp.zeros(3, jnp.int32)}, ValueError, r"init_params\['w'\]: expected a floating"),
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


def test_every_init_params_problem_is_reported_at_once():
    def model(X, y=None):  # as NumPyro's docs write a regression
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ w + b, sigma), obs=y)

    le = LocalEntropy(model, 0.1, sampler="importance", num_samples=8, progress_bar=False)
    bad = {"w": jnp.zeros(4), "sigma": jnp.array(-1.0), "c": 0.0}
    with pytest.raises(ValueError) as err:
        le.init(random.PRNGKey(0), X, Y, init_params=bad)
    message = str(err.value)
    for part in (
        "missing sites ['b']",
        "unknown sites ['c']",
        "init_params['w']: expected shape (3,), got (4,)",
        "init_params['sigma']: values must lie in the support",
    ):
        assert part in message, message


def test_non_finite_potential_at_start(le):
    y_bad = np.asarray(Y).copy()
    y_bad[0] = np.nan
    # The data are the cause, whatever the starting point: the message names them.
    with pytest.raises(ValueError, match=r"model argument 'y' holds non-finite values \(1 of"):
        le.init(random.PRNGKey(0), X, jnp.asarray(y_bad), init_params={"w": jnp.zeros(3)})


def test_non_finite_potential_at_a_given_start_names_init_params():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", jnp.where(x > 1.0, -jnp.inf, 0.0))

    le = LocalEntropy(model, 0.1, sampler="importance", num_samples=8, progress_bar=False)
    with pytest.raises(ValueError, match="init_params: the potential energy at the starting"):
        le.init(random.PRNGKey(0), init_params={"x": jnp.array(2.0)})


def test_nan_in_a_data_argument_is_named():
    y_bad = np.asarray(Y).copy()
    y_bad[[0, 3]] = np.nan
    le = LocalEntropy(linreg_model, 0.1, sampler="importance", num_samples=8, progress_bar=False)
    match = rf"model argument 'y' holds non-finite values \(2 of {Y.size}\)"
    with pytest.raises(ValueError, match=match):
        le.init(random.PRNGKey(0), X, y=jnp.asarray(y_bad))


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


# -- options of the samplers, flags, schedules -----------------------------------------------


@pytest.mark.parametrize(
    "sampler, options, error, match",
    [
        ("nuts", {"step_sise": 0.1}, ValueError, r"sampler_kwargs: sampler='nuts' takes only \["),
        ("nuts", {"step_size": -0.1}, ValueError, r"sampler_kwargs\['step_size'\]: expected a finite float > 0, got -0.1"),
        ("nuts", {"target_accept_prob": 1.0}, ValueError, r"sampler_kwargs\['target_accept_prob'\]: expected a float in \(0, 1\)"),
        ("nuts", {"max_tree_depth": 0}, ValueError, r"sampler_kwargs\['max_tree_depth'\]: expected an int >= 1, got 0"),
        ("nuts", {"max_tree_depth": (3,)}, ValueError, r"sampler_kwargs\['max_tree_depth'\]: expected an int or a pair"),
        ("nuts", {"adapt_step_size": "yes"}, TypeError, r"sampler_kwargs\['adapt_step_size'\]: expected True or False"),
        ("hmc", {"num_steps": 0}, ValueError, r"sampler_kwargs\['num_steps'\]: expected an int >= 1"),
        ("hmc", {"trajectory_length": float("nan")}, ValueError, r"sampler_kwargs\['trajectory_length'\]"),
        ("hmc", {"max_tree_depth": 5}, ValueError, r"sampler='hmc' takes only"),
        ("sa", {"adapt_state_size": 1}, ValueError, r"sampler_kwargs\['adapt_state_size'\]: expected an int >= 2"),
        ("sa", {"dense_mass": [("w",)]}, TypeError, r"sampler_kwargs\['dense_mass'\]: expected True or False"),
        ("sgld", {"step_size": 0.0}, ValueError, r"sampler_kwargs\['step_size'\]: expected a finite float > 0"),
        ("sgld", {"step_size": lambda t: -1e-3 + 0.0 * t}, ValueError, r"sampler_kwargs\['step_size'\]\(0\)"),
        ("sgld", {"noise_scale": -1.0}, ValueError, r"sampler_kwargs\['noise_scale'\]: expected a finite float >= 0"),
        ("importance", {"batch_size": 0}, ValueError, r"sampler_kwargs\['batch_size'\]: expected an int >= 1"),
        ("importance", {"batch_size": 2.5}, TypeError, r"sampler_kwargs\['batch_size'\]: expected an int"),
        ("nuts", [("step_size", 0.1)], TypeError, "sampler_kwargs: expected a dict"),
    ],
)  # fmt: skip
def test_sampler_options_are_checked_at_construction(sampler, options, error, match):
    with pytest.raises(error, match=match):
        LocalEntropy(linreg_model, 0.1, sampler=sampler, sampler_kwargs=options)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sampler": 3}, TypeError, r"sampler: expected one of .*, got int 3"),
        ({"sampler": NUTS(linreg_model), "sampler_kwargs": {"step_size": 0.1}}, ValueError, "sampler_kwargs: only used with a sampler given by name"),
        ({"readapt": "no"}, TypeError, "readapt: expected True or False, got str 'no'"),
        ({"progress_bar": 1}, TypeError, "progress_bar: expected True or False, got int 1"),
        ({"init_strategy": "median"}, TypeError, "init_strategy: expected a NumPyro init strategy"),
        ({"ess_threshold": 0.0}, ValueError, r"ess_threshold: expected a finite float > 0, got 0.0"),
        ({"ess_threshold": 1.5}, ValueError, r"ess_threshold: expected a float in \(0, 1\]"),
        ({"max_rejections": 0}, ValueError, "max_rejections: expected an int >= 1, got 0"),
        ({"beta": float("inf")}, ValueError, "beta: expected a finite float > 0, got inf"),
        ({"num_samples": True}, TypeError, "num_samples: expected an int >= 1, got bool True"),
    ],
)  # fmt: skip
def test_more_local_entropy_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalEntropy(linreg_model, 0.1, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "robbins_monro", "gain": -1.0}, ValueError, "gain: expected a finite float > 0, got -1.0"),
        ({"method": "robbins_monro", "gain_t0": 0.0}, ValueError, "gain_t0: expected a finite float > 0, got 0.0"),
        ({"alpha": float("nan")}, ValueError, "alpha: expected a finite float > 0, got nan"),
        ({"num_inner_steps": 1.0}, TypeError, "num_inner_steps: expected an int >= 1, got float 1.0"),
        ({"method": "robbins_monro", "optim": numpyro.optim.Adam(0.1)}, ValueError, "optim: only used with method='svi'"),
    ],
)  # fmt: skip
def test_more_heat_regularization_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        HeatRegularization(linreg_model, 0.1, **kwargs)


@pytest.mark.parametrize(
    "tau, match",
    [
        (lambda k: 0.1 if k < 10 else 0.01, "tau: the schedule must be a JAX function of the step"),
        (lambda k: jnp.full(2, 0.1), r"tau\(0\): expected a scalar, got shape \(2,\)"),
        (lambda k: 1 / 0, "tau: the schedule failed at step 0: division by zero"),
        (lambda k: jnp.nan, r"tau\(0\): expected a finite float > 0"),
    ],
)
def test_tau_schedules_are_checked(tau, match):
    with pytest.raises(ValueError, match=match):
        HeatRegularization(linreg_model, tau)


def test_support_without_bijection():
    class Knot(constraints.Constraint):
        """A continuous support NumPyro has no bijection for."""

        def __call__(self, x):
            return jnp.ones(jnp.shape(x), bool)

    def model():
        numpyro.sample("k", dist.ImproperUniform(Knot(), (), ()))

    with pytest.raises(ValueError, match=r"model: latent site 'k' has support .* no bijection"):
        LocalEntropy(model, 0.1).init(random.PRNGKey(0))


@pytest.mark.parametrize(
    "key, match",
    [
        (None, "rng_key: expected a single PRNG key .* got NoneType None"),
        (0, "rng_key: expected a single PRNG key .* got int 0"),
        (jnp.zeros(3), r"rng_key: expected a single PRNG key .* shape \(3,\)"),
        (random.split(random.PRNGKey(0), 2), r"rng_key: .* shape \(2, 2\)"),
    ],
)
def test_rng_key_is_checked(le, key, match):
    with pytest.raises(TypeError, match=match):
        le.run(key, 1, X, Y)


def test_run_options_are_checked(le):
    with pytest.raises(ValueError, match="checkpoint_every: expected an int >= 1, got 0"):
        le.run(random.PRNGKey(0), 1, X, Y, checkpoint="x.ckpt", checkpoint_every=0)
    with pytest.raises(TypeError, match="checkpoint: expected a file path, got int 3"):
        le.run(random.PRNGKey(0), 1, X, Y, checkpoint=3)
    with pytest.raises(TypeError, match="resume: expected a file path, got int 1"):
        le.run(random.PRNGKey(0), 1, X, Y, resume=1)
    with pytest.raises(TypeError, match="progress_bar: expected True or False"):
        le.run(random.PRNGKey(0), 1, X, Y, progress_bar="off")
    with pytest.raises(TypeError, match="num_steps: expected an int >= 0, got float 2.0"):
        le.run(random.PRNGKey(0), 2.0, X, Y)


def test_init_state_must_belong_to_the_scheme(le):
    hr = HeatRegularization(linreg_model, 0.1, num_inner_steps=2, progress_bar=False)
    other = hr.init(random.PRNGKey(0), X, Y)
    with pytest.raises(TypeError, match="init_state: expected a TwoStepState .* got dict"):
        le.run(None, 1, X, Y, init_state={"centre": other.centre})
    with pytest.raises(ValueError, match=r"init_state: its state does not fit this scheme"):
        le.run(None, 1, X, Y, init_state=other)
    X4, Y4 = linreg_data(n=10, d=4)
    wider = le.init(random.PRNGKey(0), X4, Y4)
    with pytest.raises(ValueError, match=r"init_state: state leaf \.centre has shape \(4,\)"):
        le.run(None, 1, X, Y, init_state=wider)


def test_init_params_of_another_float_dtype_are_cast(le):
    state = le.init(random.PRNGKey(0), X, Y, init_params={"w": np.zeros(3, np.float16)})
    assert state.centre.dtype == jnp.asarray(1.0).dtype


def test_a_model_given_data_that_observes_nothing_warns():
    def model(X, y=None):  # the obs=y is forgotten
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ w, 1.0))

    le = LocalEntropy(model, 0.1, sampler="importance", num_samples=8, progress_bar=False)
    with pytest.warns(VIEntropyWarning, match=r"observes no site.*'X'.*obs=.*batch shape: y"):
        le.init(random.PRNGKey(0), X, Y)

    def density():  # no data: a density to explore, nothing to warn about
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalEntropy(density, 0.1, sampler="importance", num_samples=8).init(random.PRNGKey(0))
