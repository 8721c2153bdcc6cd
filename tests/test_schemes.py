"""Tiers 2 and 3: the driver with an exact sampler, then real samplers end to end.

Every statistical check compares with a closed form (or quadrature) within 5 Monte Carlo
standard errors, the standard error estimated from the draws themselves (effective
sample size for MCMC, the delta method for importance weights, the spread over repeated
steps for the SVI and Robbins-Monro fits).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax import random
from numpyro.diagnostics import effective_sample_size
from numpyro.distributions import constraints
from numpyro.infer import Predictive
from scipy.optimize import minimize_scalar

from tests.conftest import ExactGaussianKernel, linreg_model, tilted_gaussian
from vi_entropy import HeatRegularization, LocalEntropy

K = 5.0  # tolerance in Monte Carlo standard errors


def mcmc_se(draws: np.ndarray) -> np.ndarray:
    """Standard error of the mean of MCMC draws ``(chains, draws, d)``, per coordinate."""
    draws = np.asarray(draws, np.float64)
    ess = effective_sample_size(draws)
    return draws.reshape(-1, draws.shape[-1]).std(axis=0) / np.sqrt(ess)


def importance_se(values: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
    """Delta-method standard error of a self-normalized importance-sampling mean."""
    y = np.asarray(values, np.float64).reshape(-1, values.shape[-1])
    lw = np.asarray(log_weights, np.float64).ravel()
    w = np.exp(lw - lw.max())
    w /= w.sum()
    mean = w @ y
    return np.sqrt((w[:, None] ** 2 * (y - mean) ** 2).sum(axis=0))


# -- tier 2: the driver with an exact sampler -------------------------------------------


def quadratic_model(d=4, s=0.5):
    def model():
        numpyro.sample("w", dist.Normal(0.0, np.sqrt(s)).expand([d]).to_event(1))

    return model


def test_local_entropy_quadratic_iterates_with_exact_sampler():
    """f = |y|²/(2s): x_{k+1} = s x_k/(s+τ) up to Monte Carlo error, step after step."""
    s, tau, d = 0.5, 0.25, 4
    model = quadratic_model(d, s)
    prec, prec_mean = np.eye(d) / s, np.zeros(d)
    le = LocalEntropy(
        model,
        tau,
        sampler=lambda m: ExactGaussianKernel(m, prec, prec_mean),
        num_chains=4,
        num_samples=250,
        num_warmup=0,
        progress_bar=False,
    )
    state = le.init(random.PRNGKey(0), init_params={"w": jnp.array([2.0, -1.0, 0.5, 3.0])})
    sd = np.sqrt(s * tau / (s + tau) / (4 * 250))
    for _ in range(4):
        x = np.asarray(state.centre)
        state, info = le.update(state)
        np.testing.assert_array_less(np.abs(np.asarray(state.centre) - s * x / (s + tau)), K * sd)
        assert not bool(info["rejected"])


def test_damping_moves_part_of_the_way():
    s, tau, d, alpha = 0.5, 0.25, 4, 0.5
    model = quadratic_model(d, s)
    prec, prec_mean = np.eye(d) / s, np.zeros(d)
    le = LocalEntropy(
        model,
        tau,
        sampler=lambda m: ExactGaussianKernel(m, prec, prec_mean),
        alpha=alpha,
        num_chains=4,
        num_samples=250,
        num_warmup=0,
        progress_bar=False,
    )
    x0 = jnp.array([2.0, -1.0, 0.5, 3.0])
    state = le.init(random.PRNGKey(1), init_params={"w": x0})
    state, _ = le.update(state)
    expected = (1 - alpha) * x0 + alpha * s * x0 / (s + tau)
    sd = alpha * np.sqrt(s * tau / (s + tau) / (4 * 250))
    np.testing.assert_array_less(np.abs(np.asarray(state.centre) - expected), K * sd)


def test_exponential_averaging_starts_at_the_centre():
    """Entropy-SGD's moving average of i.i.d. draws: ρ^S x + (1 − ρ^S) m in expectation."""
    s, tau, d, rho, n = 0.5, 0.25, 4, 0.9, 20
    model = quadratic_model(d, s)
    prec, prec_mean = np.eye(d) / s, np.zeros(d)
    le = LocalEntropy(
        model,
        tau,
        sampler=lambda m: ExactGaussianKernel(m, prec, prec_mean),
        averaging="exponential",
        ema_decay=rho,
        num_chains=64,
        num_samples=n,
        num_warmup=0,
        progress_bar=False,
    )
    x0 = jnp.array([2.0, -1.0, 0.5, 3.0])
    state = le.init(random.PRNGKey(2), init_params={"w": x0})
    state, _ = le.update(state)
    m = s * np.asarray(x0) / (s + tau)
    expected = rho**n * np.asarray(x0) + (1 - rho**n) * m
    var_one = s * tau / (s + tau)
    weights = (1 - rho) * rho ** np.arange(n)
    sd = np.sqrt(var_one * np.sum(weights**2) / 64)
    np.testing.assert_array_less(np.abs(np.asarray(state.centre) - expected), K * sd)


# -- tier 2/3: the quadratic iterate for heat regularization ------------------------------


def repeated_steps(scheme, state, args, repeats):
    """The next centre from ``state`` under ``repeats`` independent keys."""
    outs = []
    for r in range(repeats):
        nxt, _ = scheme.update(state._replace(rng_key=random.PRNGKey(100 + r)), *args)
        outs.append(np.asarray(nxt.centre, np.float64))
    return np.stack(outs)


@pytest.mark.parametrize("method", ["svi", "robbins_monro"])
def test_heat_regularization_quadratic_iterate(method):
    s, tau, d = 0.5, 0.25, 4
    model = quadratic_model(d, s)
    if method == "svi":
        opts = {"optim": optax.adam(optax.cosine_decay_schedule(0.05, 300))}
    else:
        opts = {"gain": 0.5}
    hr = HeatRegularization(
        model,
        tau,
        method=method,
        num_inner_steps=300,
        num_particles=8,
        progress_bar=False,
        **opts,
    )
    x0 = jnp.array([2.0, -1.0, 0.5, 3.0])
    state = hr.init(random.PRNGKey(0), init_params={"w": x0})
    outs = repeated_steps(hr, state, (), 8)
    expected = s * np.asarray(x0) / (s + tau)
    se = outs.std(axis=0, ddof=1) / np.sqrt(len(outs)) + 1e-6
    np.testing.assert_array_less(np.abs(outs.mean(axis=0) - expected), K * se)


# -- a 1-D non-Gaussian loss: LE and HR differ, each matches quadrature ------------------


def well(y):
    return (y**2 - 1.0) ** 2 + 0.3 * y


def well_model():
    y = numpyro.sample("y", dist.ImproperUniform(constraints.real, (), ()))
    numpyro.factor("loss", -well(y))


X0, TAU1 = 0.8, 0.5


@pytest.fixture(scope="module")
def quadrature():
    grid = np.linspace(-8.0, 8.0, 40001)
    dy = grid[1] - grid[0]

    def log_tilted(x):
        return -well(grid) - (grid - x) ** 2 / (2 * TAU1)

    def tilted_mean(x):
        lw = log_tilted(x)
        w = np.exp(lw - lw.max())
        return float((w * grid).sum() / w.sum())

    def local_entropy(x):
        lw = -well(grid) - (grid - x) ** 2 / (2 * TAU1) - 0.5 * np.log(2 * np.pi * TAU1)
        top = lw.max()
        return -(top + np.log(np.exp(lw - top).sum() * dy))

    z, wz = np.polynomial.hermite_e.hermegauss(80)
    wz = wz / wz.sum()

    def heat_loss(m):
        return float(np.sum(wz * well(m + np.sqrt(TAU1) * z)))

    def objective(m):
        return heat_loss(m) + (m - X0) ** 2 / (2 * TAU1)

    # The global minimizer: a grid search, then a bounded 1-D refinement around it.
    coarse = np.linspace(-3.0, 3.0, 6001)
    best = coarse[np.argmin([objective(m) for m in coarse])]
    prox = minimize_scalar(
        objective, bounds=(best - 0.01, best + 0.01), method="bounded", options={"xatol": 1e-10}
    ).x
    h = 1e-4
    grad_f = (local_entropy(X0 + h) - local_entropy(X0 - h)) / (2 * h)
    return {"mean": tilted_mean(X0), "grad_step": X0 - TAU1 * grad_f, "prox": float(prox)}


def test_quadrature_identity_tilted_mean_is_a_gradient_step_on_local_entropy(quadrature):
    assert quadrature["mean"] == pytest.approx(quadrature["grad_step"], abs=1e-6)
    # ... and the two schemes really differ on this loss (mean- versus mode-seeking).
    assert abs(quadrature["mean"] - quadrature["prox"]) > 0.1


def test_local_entropy_1d_matches_tilted_mean(quadrature):
    le = LocalEntropy(well_model, TAU1, sampler="importance", num_samples=20000, progress_bar=False)
    state = le.init(random.PRNGKey(0), init_params={"y": jnp.array(X0)})
    result = le.run(None, 1, init_state=state, keep_draws="all")
    draws = result.draws[0]
    se = importance_se(draws.values, draws.log_weights)[0]
    got = float(result.params["y"])
    assert abs(got - quadrature["mean"]) < K * se
    assert abs(got - quadrature["prox"]) > 10 * K * se


def test_heat_regularization_1d_matches_proximal_point(quadrature):
    hr = HeatRegularization(
        well_model,
        TAU1,
        method="robbins_monro",
        num_inner_steps=400,
        num_particles=256,
        gain=0.2,
        progress_bar=False,
    )
    state = hr.init(random.PRNGKey(0), init_params={"y": jnp.array(X0)})
    outs = repeated_steps(hr, state, (), 8)[:, 0]
    se = outs.std(ddof=1) / np.sqrt(len(outs))
    assert abs(outs.mean() - quadrature["prox"]) < K * se
    assert abs(outs.mean() - quadrature["mean"]) > 10 * K * se


# -- tier 3: every sampler end to end on a Bayesian linear regression --------------------

LE_CASES = {
    "nuts": dict(tau=0.05, num_chains=4, num_samples=200, num_warmup=200),
    "hmc": dict(tau=0.05, num_chains=4, num_samples=200, num_warmup=200),
    "sa": dict(tau=0.05, num_chains=4, num_samples=1500, num_warmup=1000),
    "sgld": dict(
        tau=0.05, num_chains=4, num_samples=1000, num_warmup=200, sampler_kwargs={"step_size": 2e-3}
    ),
    "pcn": dict(tau=0.05, num_chains=4, num_samples=1000, num_warmup=300),
    "elliptical_slice": dict(tau=0.05, num_chains=4, num_samples=500, num_warmup=100),
    "importance": dict(tau=0.01, num_samples=8000),
}


@pytest.mark.parametrize("sampler", list(LE_CASES))
def test_local_entropy_end_to_end_linreg(linreg, sampler):
    X, y, prec, prec_mean = linreg
    opts = dict(LE_CASES[sampler])
    tau = opts.pop("tau")
    le = LocalEntropy(linreg_model, tau, sampler=sampler, progress_bar=False, **opts)
    start = jnp.zeros(5)
    if sampler == "importance":
        # The proposal N(x_k, τI) must overlap the tilted posterior: start near the
        # posterior mean (from 0 the weights degenerate, and the ESS says so).
        start = jnp.asarray(np.linalg.solve(prec, prec_mean) + 0.1, jnp.float32)
    state = le.init(random.PRNGKey(3), X, y, init_params={"w": start})
    for k in range(3):
        x = np.asarray(state.centre)
        result = le.run(None, 1, X, y, init_state=state, keep_draws="all")
        draws = result.draws[k]
        if draws.log_weights is None:
            se = mcmc_se(draws.values)
        else:
            se = importance_se(draws.values, draws.log_weights)
            assert float(result.info["importance_ess"][0]) > 200
        _, expected = tilted_gaussian(prec, prec_mean, x, tau)
        np.testing.assert_array_less(np.abs(np.asarray(result.state.centre) - expected), K * se)
        state = result.state


@pytest.mark.parametrize("method", ["svi", "robbins_monro"])
def test_heat_regularization_end_to_end_linreg(linreg, method):
    """A Gaussian tilted posterior: the reverse-KL fit is its mean too."""
    X, y, prec, prec_mean = linreg
    tau = 0.05
    # The optimizer state (and a schedule's step count) carries over between outer steps,
    # so the SVI fit uses a constant learning rate here.
    opts = {"optim": optax.adam(0.03)} if method == "svi" else {"gain": 0.2}
    hr = HeatRegularization(
        linreg_model,
        tau,
        method=method,
        num_inner_steps=300,
        num_particles=8,
        progress_bar=False,
        **opts,
    )
    state = hr.init(random.PRNGKey(0), X, y, init_params={"w": jnp.zeros(5)})
    for _ in range(2):
        x = np.asarray(state.centre)
        outs = repeated_steps(hr, state, (X, y), 8)
        _, expected = tilted_gaussian(prec, prec_mean, x, tau)
        se = outs.std(axis=0, ddof=1) / np.sqrt(len(outs)) + 1e-6
        np.testing.assert_array_less(np.abs(outs.mean(axis=0) - expected), K * se)
        state, _ = hr.update(state, X, y)


# -- constrained sites, the guide, reproducibility ----------------------------------------


def scale_model(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


@pytest.fixture(scope="module")
def scale_schemes():
    return {
        "le": LocalEntropy(
            scale_model,
            0.01,
            sampler="nuts",
            num_chains=2,
            num_samples=50,
            num_warmup=50,
            progress_bar=False,
        ),
        "hr": HeatRegularization(
            scale_model, 0.01, num_inner_steps=50, num_particles=4, progress_bar=False
        ),
    }


@pytest.mark.parametrize("name", ["le", "hr"])
def test_constrained_site_stays_in_support_and_guide_predicts(linreg, scale_schemes, name):
    X, y, _, _ = linreg
    scheme = scale_schemes[name]
    result = scheme.run(random.PRNGKey(0), 5, X, y)
    assert float(result.params["sigma"]) > 0
    assert result.params["w"].shape == (5,)
    pred = Predictive(
        scale_model,
        guide=scheme.guide,
        params=scheme.get_guide_params(result.state),
        num_samples=30,
        return_sites=["w", "sigma", "y"],
    )(random.PRNGKey(1), X)
    assert pred["y"].shape == (30, X.shape[0])
    assert bool(jnp.all(pred["sigma"] > 0))
    # The draws come from N(x_k, τI) in the unconstrained space: log σ has sd √τ.
    log_sigma = np.log(np.asarray(pred["sigma"]))
    assert log_sigma.mean() == pytest.approx(
        np.log(float(result.params["sigma"])), abs=K * 0.1 / np.sqrt(30)
    )


SAMPLERS = ["nuts", "hmc", "sa", "sgld", "importance"]


def _no_ess(sampler):
    """These tests start importance sampling far from the posterior with few proposals:
    the weights degenerate (ESS ≈ 1), which is not what they test, so no ESS warning."""
    return {"ess_threshold": None} if sampler == "importance" else {}


@pytest.mark.parametrize(
    "make",
    [
        partial(LocalEntropy, sampler=s, num_chains=2, num_samples=10, num_warmup=10, **_no_ess(s))
        for s in SAMPLERS
    ]
    + [
        partial(HeatRegularization, method=m, num_inner_steps=10, num_particles=2)
        for m in ("svi", "robbins_monro")
    ],
    ids=[f"le-{s}" for s in SAMPLERS] + ["hr-svi", "hr-robbins_monro"],
)
def test_same_key_same_result(linreg, make):
    X, y, _, _ = linreg
    scheme = make(linreg_model, 0.01, progress_bar=False)
    runs = [scheme.run(random.PRNGKey(7), 3, X, y).params["w"] for _ in range(2)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    other = scheme.run(random.PRNGKey(8), 3, X, y)
    assert not np.array_equal(np.asarray(runs[0]), np.asarray(other.params["w"]))


def test_run_continues_from_init_state(linreg):
    """Two runs of 2 steps, chained through init_state, equal one run of 4 steps."""
    X, y, _, _ = linreg
    le = LocalEntropy(
        linreg_model,
        0.01,
        sampler="importance",
        num_samples=64,
        progress_bar=False,
        **_no_ess("importance"),
    )
    whole = le.run(random.PRNGKey(0), 4, X, y)
    first = le.run(random.PRNGKey(0), 2, X, y)
    second = le.run(None, 2, X, y, init_state=first.state)
    np.testing.assert_array_equal(np.asarray(whole.params["w"]), np.asarray(second.params["w"]))
    assert whole.info["tau"].shape == (4,)
    assert int(second.state.step) == 4


def test_schedules_for_tau(linreg):
    X, y, _, _ = linreg
    schedule = optax.exponential_decay(0.02, transition_steps=1, decay_rate=0.5)
    le = LocalEntropy(
        linreg_model,
        schedule,
        sampler="importance",
        num_samples=32,
        progress_bar=False,
        **_no_ess("importance"),
    )
    result = le.run(random.PRNGKey(0), 3, X, y)
    np.testing.assert_allclose(np.asarray(result.info["tau"]), [0.02, 0.01, 0.005], rtol=1e-6)


# NUTS's chains, warmed up on the first batch, can get stuck on a new one and have a step
# rejected (warned at once); the run recovers, which is what this checks.
@pytest.mark.filterwarnings(
    "ignore:LocalEntropy. outer step .* was rejected:vi_entropy.VIEntropyWarning"
)
def test_subsampled_plate_trains_with_every_sampler():
    """Mini-batches: SGLD redraws per inner step, NUTS/IS fix one batch per outer step."""
    X = random.normal(random.PRNGKey(0), (200, 3))
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.5 * random.normal(random.PRNGKey(1), (200,))

    def model(X, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with numpyro.plate("data", X.shape[0], subsample_size=50) as idx:
            numpyro.sample("y", dist.Normal(X[idx] @ w, 0.5), obs=y[idx])

    for sampler in ("sgld", "nuts", "importance"):
        le = LocalEntropy(
            model,
            0.01,
            sampler=sampler,
            num_chains=2,
            num_samples=20,
            num_warmup=20,
            sampler_kwargs={"step_size": 1e-4} if sampler == "sgld" else None,
            progress_bar=False,
            **_no_ess(sampler),
        )
        result = le.run(random.PRNGKey(2), 15, X, y)
        assert bool(jnp.all(jnp.isfinite(result.params["w"])))
        assert float(jnp.linalg.norm(result.params["w"] - jnp.array([1.0, -2.0, 0.5]))) < 1.0
    hr = HeatRegularization(model, 0.01, num_inner_steps=20, num_particles=2, progress_bar=False)
    result = hr.run(random.PRNGKey(2), 15, X, y)
    assert float(jnp.linalg.norm(result.params["w"] - jnp.array([1.0, -2.0, 0.5]))) < 1.0


def test_vectorized_chains_have_chain_axis(linreg):
    X, y, _, _ = linreg
    le = LocalEntropy(
        linreg_model,
        0.01,
        sampler="nuts",
        num_chains=3,
        num_samples=7,
        num_warmup=5,
        progress_bar=False,
    )
    result = le.run(random.PRNGKey(0), 1, X, y)
    assert result.draws[0].values.shape == (3, 7, 5)
    assert jax.tree.leaves(result.state.inner)[0].shape[0] == 3
