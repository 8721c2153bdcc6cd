"""The SA kernel's initial population: at the scale of the Gaussian factor in a tilt."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jax import random

from tests.conftest import linreg_data, linreg_model
from vi_entropy import SA, LocalEntropy

POPULATION = 300
# A standard deviation estimated from n Gaussian values has a relative SE of 1/sqrt(2n);
# the tests pool chains x coordinates x POPULATION values and allow 5 SE.


def population_sd(zs: np.ndarray) -> tuple[float, float]:
    """Pooled within-population sd of ``zs`` (..., population, d) and its relative SE."""
    zs = np.asarray(zs, np.float64)
    groups = zs.size // zs.shape[-2]
    sd = float(np.sqrt(np.mean(np.var(zs, axis=-2, ddof=1))))
    return sd, 1 / np.sqrt(2 * groups * (zs.shape[-2] - 1))


@pytest.mark.parametrize(("init_scale", "expected"), [(None, 0.1), (0.5, 0.5)])
def test_local_entropy_population_starts_at_sqrt_tau(init_scale, expected):
    X, y = linreg_data(n=40, d=3)
    kwargs = {"adapt_state_size": POPULATION}
    if init_scale is not None:
        kwargs["init_scale"] = init_scale
    le = LocalEntropy(
        linreg_model,
        0.01,  # sqrt(tau) = 0.1
        sampler="sa",
        num_chains=2,
        num_samples=5,
        num_warmup=5,
        sampler_kwargs=kwargs,
        progress_bar=False,
    )
    state = le.init(random.PRNGKey(0), X, y)
    sd, rel_se = population_sd(state.inner.adapt_state.zs)
    assert abs(sd / expected - 1) < 5 * rel_se


def test_plain_mcmc_keeps_numpyros_unit_scale():
    X, y = linreg_data(n=40, d=3)
    kernel = SA(linreg_model, adapt_state_size=POPULATION, dense_mass=False)
    state = kernel.init(random.PRNGKey(0), 5, {"w": jnp.zeros(3)}, (X, y), {})
    sd, rel_se = population_sd(state.adapt_state.zs)
    assert abs(sd - 1) < 5 * rel_se


@pytest.mark.parametrize(
    "bad, error",
    [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("wide", TypeError)],
)
def test_bad_init_scale_is_named(bad, error):
    with pytest.raises(error, match="init_scale: expected a"):
        SA(linreg_model, init_scale=bad)
