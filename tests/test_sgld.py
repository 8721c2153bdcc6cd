"""The SGLD kernel on its own, inside plain ``numpyro.infer.MCMC``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

from vi_entropy import SGLD

MEAN = np.array([1.0, -2.0])
SD = np.array([0.5, 0.3])


def gaussian_model():
    numpyro.sample("x", dist.Normal(jnp.asarray(MEAN), jnp.asarray(SD)).to_event(1))


def test_sgld_in_mcmc_recovers_gaussian_mean_and_variance():
    step = 4e-3  # Euler-Maruyama variance bias is η/(2σ²) ≤ 2.2% here, far below 5 SE
    mcmc = MCMC(
        SGLD(gaussian_model, step_size=step),
        num_warmup=2000,
        num_samples=40000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(random.PRNGKey(0))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)  # (4, 40000, 2)
    ess = effective_sample_size(x)
    flat = x.reshape(-1, 2)
    se_mean = flat.std(axis=0) / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(flat.mean(axis=0) - MEAN), 5 * se_mean)
    # SE of a variance estimate from ESS effective draws: σ² √(2/ESS) (Gaussian draws).
    var = flat.var(axis=0)
    np.testing.assert_array_less(np.abs(var - SD**2), 5 * SD**2 * np.sqrt(2 / ess))
    assert np.all(ess > 500)


def test_sgld_with_potential_fn_and_schedule():
    def potential(z):
        return 0.5 * jnp.sum(((z - MEAN) / SD) ** 2)

    kernel = SGLD(potential_fn=potential, step_size=lambda t: 2e-3 / (1.0 + t / 5000.0) ** 0.55)
    mcmc = MCMC(kernel, num_warmup=1000, num_samples=20000, progress_bar=False)
    mcmc.run(random.PRNGKey(1), init_params=jnp.zeros(2))
    x = np.asarray(mcmc.get_samples(), np.float64)
    ess = effective_sample_size(x[None])
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - MEAN), 5 * x.std(axis=0) / np.sqrt(ess))


def test_sgld_subsamples_a_fresh_batch_every_step():
    """With a subsampled plate the mini-batch potential changes from step to step."""
    data = random.normal(random.PRNGKey(2), (100,)) + 3.0

    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("data", 100, subsample_size=10) as idx:
            numpyro.sample("obs", dist.Normal(mu, 1.0), obs=data[idx])

    kernel = SGLD(model, step_size=1e-4)
    state = kernel.init(random.PRNGKey(0), 0, {"mu": jnp.array(3.0)}, (data,), {})
    energies = []
    for _ in range(5):
        state = kernel.sample(state, (data,), {})
        energies.append(float(state.potential_energy))
    assert len(set(np.round(energies, 4))) == 5


def test_sgld_curvature_step_is_half_the_inverse_top_eigenvalue_and_samples_the_mean():
    """On N(MEAN, diag(SD²)) the Hessian's top eigenvalue is 1/min(SD)²: the step is
    0.5 · 0.3² = 0.045; the mean is exact for a Gaussian, the variance inflated by O(η)."""
    kernel = SGLD(gaussian_model, step_size="curvature")
    mcmc = MCMC(kernel, num_warmup=500, num_samples=20000, num_chains=2,
                chain_method="vectorized", progress_bar=False)  # fmt: skip
    mcmc.run(random.PRNGKey(4))
    state = mcmc.last_state
    np.testing.assert_allclose(np.asarray(state.step_size), 0.5 * SD.min() ** 2, rtol=1e-3)
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    ess = effective_sample_size(x)
    flat = x.reshape(-1, 2)
    se_mean = flat.std(axis=0) / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(flat.mean(axis=0) - MEAN), 5 * se_mean)
