"""pCN and elliptical slice: as NumPyro kernels in ``MCMC``, and inside ``LocalEntropy``.

The tilted posterior's own Gaussian factor is these kernels' reference there; that
local entropy then moves to the closed-form tilted mean is checked with the other
samplers in ``test_schemes.py`` (``LE_CASES``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

from tests.conftest import linreg_data, linreg_model
from vi_entropy import PCN, EllipticalSlice, LocalEntropy, to_inference_data

K = 5  # tolerance in Monte Carlo standard errors

LOC = np.array([1.0, -2.0])
SCALE = 0.5
HALF_NORMAL = 2.0  # E[s] = 2 √(2/π), sd[s] = 2 √(1 − 2/π)


def scale_and_vector_model():
    """A constrained scale and a vector latent with batch dims (no ``.to_event``)."""
    numpyro.sample("s", dist.HalfNormal(HALF_NORMAL))
    x = numpyro.sample("x", dist.Normal(jnp.asarray(LOC), SCALE))
    numpyro.deterministic("x_sum", x.sum())


KERNELS = {"pcn": PCN, "elliptical_slice": EllipticalSlice}


@pytest.fixture(scope="module", params=list(KERNELS))
def mcmc_run(request):
    mcmc = MCMC(
        KERNELS[request.param](scale_and_vector_model),
        num_warmup=500,
        num_samples=4000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    fields = ("accept_prob",) if request.param == "pcn" else ("num_evals", "capped")
    mcmc.run(random.PRNGKey(0), extra_fields=fields)
    return request.param, mcmc


def _mean_within(draws: np.ndarray, expected: np.ndarray) -> None:
    """``draws`` (chains, draws, ...): the mean is within K Monte Carlo standard errors."""
    draws = np.asarray(draws, np.float64)
    ess = effective_sample_size(draws)
    flat = draws.reshape((-1, *draws.shape[2:]))
    se = flat.std(axis=0) / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(flat.mean(axis=0) - expected), K * se)
    assert np.all(ess > 300)


def test_kernel_in_mcmc_matches_known_means(mcmc_run):
    name, mcmc = mcmc_run
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["s"].shape == (4, 4000) and samples["x"].shape == (4, 4000, 2)
    assert bool(jnp.all(samples["s"] > 0))  # postprocessed to the constrained space
    _mean_within(samples["x"], LOC)
    _mean_within(samples["s"], np.asarray(HALF_NORMAL * np.sqrt(2 / np.pi)))
    np.testing.assert_allclose(samples["x_sum"], samples["x"].sum(-1), rtol=1e-6)


def test_pcn_adapts_rho_towards_the_target_acceptance(mcmc_run):
    name, mcmc = mcmc_run
    if name != "pcn":
        pytest.skip("pCN only")
    accept = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["accept_prob"])
    assert abs(accept.mean() - 0.25) < 0.05
    rho = np.asarray(mcmc.last_state.rho)
    assert rho.shape == (4,) and np.all((rho > 0) & (rho < 1))


def test_slice_counts_its_evaluations(mcmc_run):
    name, mcmc = mcmc_run
    if name != "elliptical_slice":
        pytest.skip("elliptical slice only")
    extra = mcmc.get_extra_fields()
    n, capped = np.asarray(extra["num_evals"]), np.asarray(extra["capped"])
    # At most 1 + max_shrinks (16); the cap is reached rarely, only in the far tails.
    assert n.min() >= 1 and n.max() <= 17 and np.all(n[capped] == 17)
    assert capped.mean() < 0.01


def gaussian_potential(z):
    return 0.5 * jnp.sum(((z - LOC) / SCALE) ** 2)


def test_reference_equal_to_the_target_is_exact():
    """With the target as reference, Φ is constant: pCN accepts everything and elliptical
    slice takes its first point on the ellipse."""
    ref = dict(reference_loc=LOC, reference_scale=SCALE)
    pcn = MCMC(PCN(potential_fn=gaussian_potential, rho=0.9, adapt_rho=False, **ref),
               num_warmup=0, num_samples=200, progress_bar=False)  # fmt: skip
    pcn.run(random.PRNGKey(1), init_params=jnp.zeros(2), extra_fields=("accept_prob",))
    np.testing.assert_allclose(pcn.get_extra_fields()["accept_prob"], 1.0, rtol=1e-5)
    ess = MCMC(EllipticalSlice(potential_fn=gaussian_potential, **ref),
               num_warmup=0, num_samples=200, progress_bar=False)  # fmt: skip
    ess.run(random.PRNGKey(1), init_params=jnp.zeros(2), extra_fields=("num_evals",))
    assert np.all(np.asarray(ess.get_extra_fields()["num_evals"]) == 1)


def test_capped_bracket_stays_put_and_keeps_the_target():
    """A target much narrower than the reference: most searches hit a cap of 3 shrinks
    and stay, and the draws still have the target's mean and variance."""
    mean, sd = 0.3, 0.05

    def potential(z):
        return 0.5 * jnp.sum(((z - mean) / sd) ** 2)

    mcmc = MCMC(EllipticalSlice(potential_fn=potential, max_shrinks=3), num_warmup=200,
                num_samples=20000, progress_bar=False)  # fmt: skip
    mcmc.run(random.PRNGKey(2), init_params=jnp.full(1, mean), extra_fields=("num_evals", "capped"))
    z = np.asarray(mcmc.get_samples(), np.float64)[:, 0]
    extra = mcmc.get_extra_fields()
    n, capped = np.asarray(extra["num_evals"]), np.asarray(extra["capped"])
    assert n.max() == 4 and np.all(n[capped] == 4)
    assert 0.2 < capped.mean() < 0.9
    assert np.all(z[1:][capped[1:]] == z[:-1][capped[1:]])  # a capped transition stays
    ess = float(effective_sample_size(z[None]))
    assert abs(z.mean() - mean) < K * sd / np.sqrt(ess)
    assert abs(z.var() - sd**2) < K * sd**2 * np.sqrt(2 / ess)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_non_finite_potential_is_never_entered(kernel):
    """Where the potential is NaN the target has no mass: pCN rejects such proposals,
    elliptical slice shrinks past them."""

    def potential(z):
        return jnp.where(z[0] > 0.5, jnp.nan, 0.5 * jnp.sum(z**2))

    mcmc = MCMC(KERNELS[kernel](potential_fn=potential), num_warmup=100, num_samples=2000,
                progress_bar=False)  # fmt: skip
    mcmc.run(random.PRNGKey(3), init_params=jnp.zeros(2))
    z = np.asarray(mcmc.get_samples())
    assert np.all(np.isfinite(z)) and np.all(z[:, 0] <= 0.5) and z[:, 0].std() > 0.1


# -- inside local entropy ------------------------------------------------------------------


def ordinary_model(X, y=None):
    """Not designed for us: a subsampled plate, a HalfNormal scale, a vector latent
    with batch dims, a deterministic site and a site named tau."""
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0))
    mu = numpyro.deterministic("mu", X @ w)
    with numpyro.plate("data", X.shape[0], subsample_size=10) as idx:
        numpyro.sample("y", dist.Normal(mu[idx], tau), obs=y[idx])


CHAINS, SAMPLES, WARMUP = 3, 6, 10


@pytest.fixture(scope="module", params=list(KERNELS))
def le_run(request):
    X, y = linreg_data(n=30, d=3)
    le = LocalEntropy(ordinary_model, 0.01, sampler=request.param, num_chains=CHAINS,
                      num_samples=SAMPLES, num_warmup=WARMUP, progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 3, X, y, keep_draws="all")
    return request.param, le, result, (X, y)


def test_local_entropy_runs_and_counts_exactly(le_run):
    name, le, result, _ = le_run
    info = result.info
    assert not info["rejected"].any() and not info["fault"].any()
    assert result.params["tau"].shape == () and float(result.params["tau"]) > 0
    assert result.params["w"].shape == (3,)
    assert np.all(info["num_grad_evals"] == 0)
    for k, draws in result.draws.items():
        assert draws.values.shape == (CHAINS, SAMPLES, 4)
        # The first step runs the warm-up, and refreshes twice: for its mini-batch (the
        # model subsamples) before the warm-up, for its target after.
        warmup, refreshes = (WARMUP, 2) if k == 0 else (0, 1)
        if name == "pcn":
            # one evaluation per transition, and one per chain at each refresh
            assert int(info["num_potential_evals"][k]) == CHAINS * (warmup + SAMPLES + refreshes)
            assert 0 < float(info["acceptance_rate"][k]) <= 1 and 0 < float(info["rho"][k]) < 1
            continue
        n = np.asarray(draws.stats["n_evals"])  # (chains, draws)
        logical, executed = info["num_potential_evals"][k], info["num_potential_evals_executed"][k]
        assert int(info["num_slice_capped"][k]) == int(draws.stats["slice_capped"].sum())
        if k == 0:  # + the warm-up's, at least one evaluation per transition
            assert int(logical) >= n.sum() + CHAINS * (WARMUP + refreshes)
            assert int(executed) >= CHAINS * (n.max(axis=0).sum() + WARMUP + refreshes)
            continue
        assert int(logical) == n.sum() + CHAINS
        assert int(executed) == CHAINS * (n.max(axis=0).sum() + 1) >= n.sum() + CHAINS


def test_local_entropy_draws_go_to_arviz(le_run):
    name, le, result, data = le_run
    idata = to_inference_data(result, le, model_args=data)
    stats = idata.sample_stats
    assert idata.posterior["w"].shape[:2] == (CHAINS, SAMPLES)
    assert ("acceptance_rate" if name == "pcn" else "n_evals") in stats


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_readapt_counts_the_warm_up(kernel):
    X, y = linreg_data(n=10, d=2)
    le = LocalEntropy(linreg_model, 0.01, sampler=kernel, num_chains=2, num_samples=3,
                      num_warmup=4, readapt=True, progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 1, X, y, keep_draws="all")
    evals = int(result.info["num_potential_evals"][0])
    if kernel == "pcn":
        # warm-up and kept transitions, every chain's start and initialize_model's check
        assert evals == 2 * (4 + 3) + 2 + 1
    else:
        assert evals >= 2 * (4 + 3) + 2 + 1


def test_local_entropy_accepts_a_kernel_instance():
    X, y = linreg_data(n=10, d=2)
    le = LocalEntropy(linreg_model, 0.01, sampler=PCN(linreg_model, rho=0.1, adapt_rho=False),
                      num_chains=2, num_samples=3, num_warmup=0, progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 2, X, y)
    np.testing.assert_allclose(result.info["rho"], 0.1, rtol=1e-6)


@pytest.mark.parametrize(
    "sampler, options, match",
    [
        ("pcn", {"rho": 1.5}, r"sampler_kwargs\['rho'\]: expected a float in \(0, 1\]"),
        ("pcn", {"target_accept_prob": 1.0}, r"sampler_kwargs\['target_accept_prob'\]"),
        ("pcn", {"reference_loc": 0.0}, r"sampler='pcn' takes only \['adapt_reference'"),
        (
            "pcn",
            {"adapt_reference": 1.0},
            r"sampler_kwargs\['adapt_reference'\]: expected a float in \[0, 1\)",
        ),
        ("elliptical_slice", {"max_shrinks": -1}, r"sampler_kwargs\['max_shrinks'\]"),
        ("elliptical_slice", {"rho": 0.5}, r"takes only \['init_strategy', 'max_shrinks'\]"),
    ],
)
def test_bad_options_name_the_option(sampler, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LocalEntropy(linreg_model, 0.01, sampler=sampler, sampler_kwargs=options)


def test_bad_kernel_arguments_name_the_argument():
    with pytest.raises(ValueError, match="rho: expected a finite float > 0"):
        PCN(linreg_model, rho=0.0)
    with pytest.raises(ValueError, match="PCN: give exactly one of `model` and `potential_fn`"):
        PCN()
    with pytest.raises(ValueError, match="PCN: adapt_reference is not available with antithetic"):
        PCN(linreg_model, adapt_reference=0.1, antithetic=True)
    with pytest.raises(ValueError, match="reference_scale: values must be finite and > 0"):
        EllipticalSlice(linreg_model, reference_scale=-1.0)
    with pytest.raises(ValueError, match="max_shrinks"):
        EllipticalSlice(linreg_model, max_shrinks=-2)


# -- the benchmark's gradient-free baselines and the convolutional network ---------------


def _mean_cross_entropy(model, params, X, y):
    logits = model.forward(params, X)
    return float(-jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)))


@pytest.mark.parametrize("method", ["es-openes", "es-snes", "es-pgpe", "es-sep-cma"])
def test_every_evolution_strategy_lowers_the_potential(method):
    """evosax minimizes its fitness: handed the potential, each strategy lowers the loss
    (a sign error would raise it), at the benchmark's settings."""
    from vi_entropy.data import load_digits
    from vi_entropy.experiment.methods import get_benchmark_method, resolve_point
    from vi_entropy.models import dense_network

    data = load_digits()
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    model = dense_network(data.num_features, (8,), data.num_classes)
    record = get_benchmark_method(method)
    tau, settings = resolve_point(method, record.grid[-1], 60, smoke=True)
    trainer = record.build(model, tau, dict(settings), 64)
    init = model.init(random.PRNGKey(0))
    state = trainer.init(random.PRNGKey(1), init, X, y)
    for _ in range(60):
        state, counts = trainer.step(state, X, y)
    assert counts == {"grad_evals": 0, "forward_evals": settings["population_size"]}
    before = _mean_cross_entropy(model, init, X, y)
    after = _mean_cross_entropy(model, trainer.params(state), X, y)
    assert after < before - 0.1, (before, after)


def test_conv_network_trains_without_gradients():
    """The convolutional network is a plain NumPyro model that LE-pCN trains."""
    from vi_entropy.data import load_digits
    from vi_entropy.models import conv_network

    data = load_digits()
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    model = conv_network(data.num_features, channels=(4, 4))
    init = model.init(random.PRNGKey(0))
    assert {k: v.shape for k, v in init.items()} == {
        "K0": (5, 5, 1, 4), "c0": (4,), "K1": (5, 5, 4, 4), "c1": (4,), "W": (16, 10),
        "b": (10,),
    }  # fmt: skip
    scheme = LocalEntropy(
        model, 1e-3, sampler="pcn", num_chains=2, num_samples=20, num_warmup=20,
        progress_bar=False,
    )  # fmt: skip
    result = scheme.run(random.PRNGKey(1), 40, X, y, init_params=init, batch_size=64)
    before = _mean_cross_entropy(model, init, X, y)
    after = _mean_cross_entropy(model, result.params, X, y)
    assert after < before - 0.2, (before, after)


def test_antithetic_pcn_midpoint_keeps_the_mean_with_less_spread():
    """Each chain of the pair is a pCN chain of the target; the midpoint reported has
    the target's mean and a smaller spread (the reference's noise cancels in it)."""

    def model():
        numpyro.sample("x", dist.Normal(jnp.asarray(LOC), SCALE))

    def run(antithetic):
        mcmc = MCMC(
            PCN(model, antithetic=antithetic), num_warmup=500, num_samples=4000, num_chains=4,
            chain_method="vectorized", progress_bar=False,
        )  # fmt: skip
        mcmc.run(random.PRNGKey(0))
        return mcmc

    plain, pair = run(False), run(True)
    midpoints = np.asarray(pair.get_samples(group_by_chain=True)["x"])
    _mean_within(midpoints, LOC)
    assert np.all(midpoints.std(axis=(0, 1)) < 0.9 * SCALE)
    _mean_within(np.asarray(plain.get_samples(group_by_chain=True)["x"]), LOC)
    state = pair.last_state
    assert state.pair.shape == (4, 2, 2)  # chains, the two of a pair, coordinates
    np.testing.assert_allclose(state.z["x"], state.pair.mean(axis=1), rtol=1e-6)


def test_antithetic_pcn_in_local_entropy_counts_two_evaluations_a_transition():
    X, y = linreg_data(n=30, d=3)
    le = LocalEntropy(ordinary_model, 0.01, sampler="pcn", num_chains=CHAINS,
                      num_samples=SAMPLES, num_warmup=10, sampler_kwargs={"antithetic": True},
                      progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 3, X, y)
    info = result.info
    assert not info["rejected"].any() and not info["fault"].any()
    assert np.all(np.asarray(info["num_potential_evals"])[1:] == 2 * CHAINS * (SAMPLES + 1))
    assert np.all(np.isfinite(np.asarray(result.params["w"])))


@pytest.mark.parametrize("option", [{"antithetic": True}, {"adapt_reference": 0.5}])
@pytest.mark.parametrize(
    "name", ["hierarchical", "logistic_subsampled", "change_point", "named_like_ours"]
)
def test_pcn_options_run_on_models_we_did_not_write(name, option):
    """Plates, a batch-dimension latent, ``LocScaleReparam``, constrained scales and a site
    named ``tau`` on (0, ∞) or (0, 1), a subsampled plate, a simplex:
    the mirror image and the adapted reference live on the unconstrained scale, so every
    pair stays valid and the reference covers every coordinate."""
    from tests._zoo import ZOO

    case = ZOO[name]
    le = LocalEntropy(case.model, 0.01, sampler="pcn", num_chains=2, num_samples=5,
                      num_warmup=5, sampler_kwargs=option, progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 3, *case.args, **case.kwargs)
    info = result.info
    assert not np.asarray(info["fault"]).any() and not np.asarray(info["rejected"]).any()
    per_transition = 2 if "antithetic" in option else 1
    assert np.all(np.asarray(info["num_potential_evals"])[1:] == per_transition * 2 * (5 + 1))
    for site, shape in case.latent.items():
        value = np.asarray(result.params[site])
        assert value.shape == shape and np.all(np.isfinite(value)), site
    precond = result.state.inner.precond
    if "adapt_reference" in option:
        assert precond.shape[0] == 2 and np.all((precond >= 0.01) & (precond <= 1))
        assert np.any(precond < 1)
    else:
        assert precond is None


def test_pcn_with_a_narrower_reference_keeps_the_target():
    """Given a reference with half the target's variance in one coordinate, the chain
    is still an exact pCN chain of the target: its mean and variance are the target's."""

    def model():
        numpyro.sample("x", dist.Normal(jnp.asarray(LOC), SCALE))

    kernel = PCN(model, rho=0.5, adapt_rho=False, adapt_reference=0.5, reference_loc=LOC,
                 reference_scale=SCALE)  # fmt: skip
    mcmc = MCMC(kernel, num_warmup=100, num_samples=4000, num_chains=4,
                chain_method="vectorized", progress_bar=False)  # fmt: skip
    mcmc.warmup(random.PRNGKey(0))
    narrower = jnp.tile(jnp.array([0.5, 1.0]), (4, 1))
    mcmc.post_warmup_state = mcmc.post_warmup_state._replace(precond=narrower)
    mcmc.run(random.PRNGKey(1))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    _mean_within(draws, LOC)
    _mean_within((draws - LOC) ** 2, np.full(2, SCALE**2))
    np.testing.assert_array_equal(mcmc.last_state.precond, narrower)


def test_adapted_reference_follows_the_tilted_spread():
    """Within local entropy each chain's reference variance moves towards the tilted
    posterior's per coordinate: narrow where the likelihood is, wide where it is flat,
    at the evaluations of plain pCN."""
    sd = jnp.array([0.003, 1.0])  # tilted variance / τ: 1 / (1 + τ / sd²) = 0.08 and 1.0

    def model():
        numpyro.sample("x", dist.Normal(0.0, sd))

    def run(option):
        le = LocalEntropy(model, 1e-4, sampler="pcn", num_chains=2, num_samples=40,
                          num_warmup=20, sampler_kwargs=option, progress_bar=False)  # fmt: skip
        return le.run(random.PRNGKey(0), 20)

    plain, adapted = run({}), run({"adapt_reference": 0.5})
    precond = np.asarray(adapted.state.inner.precond)
    assert np.all(precond[:, 0] < 0.3) and np.all(precond[:, 1] > 0.6)
    np.testing.assert_array_equal(
        adapted.info["num_potential_evals"], plain.info["num_potential_evals"]
    )
