"""Shared models and helpers: small sizes, so that compiled functions are few and fast."""

from __future__ import annotations

from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from vi_entropy.tilted import CENTRE, TAU

NOISE = 0.5


def linreg_model(X, y=None):
    """Bayesian linear regression with known noise: a Gaussian posterior in closed form."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, NOISE), obs=y)


def linreg_data(n=40, d=5, seed=0):
    k1, k2, k3 = random.split(random.PRNGKey(seed), 3)
    X = random.normal(k1, (n, d))
    w_true = random.normal(k2, (d,))
    y = X @ w_true + NOISE * random.normal(k3, (n,))
    return X, y


def linreg_posterior(X, y):
    """Posterior precision ``P`` and ``P μ`` of :func:`linreg_model`."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    prec = X.T @ X / NOISE**2 + np.eye(X.shape[1])
    return prec, X.T @ y / NOISE**2


def tilted_gaussian(prec, prec_mean, centre, tau):
    """Closed-form tilted posterior of ``N(μ, P⁻¹)``: precision ``P + I/τ`` and its mean."""
    tilted_prec = prec + np.eye(prec.shape[0]) / tau
    mean = np.linalg.solve(tilted_prec, prec_mean + np.asarray(centre, np.float64) / tau)
    return tilted_prec, mean


@pytest.fixture(scope="session")
def linreg():
    X, y = linreg_data()
    prec, prec_mean = linreg_posterior(X, y)
    return X, y, prec, prec_mean


ExactState = namedtuple("ExactState", ["z", "rng_key"])


class ExactGaussianKernel(MCMCKernel):
    """I.i.d. draws from the tilted posterior of a Gaussian-posterior model (one site "w").

    It reads the centre and τ from the tilted model's keyword arguments, so it exercises
    the driver exactly as a real kernel does, with a sampler whose only error is Monte
    Carlo error.
    """

    sample_field = "z"

    def __init__(self, model, prec, prec_mean, site="w"):
        self._model = model
        self.prec = jnp.asarray(prec, jnp.float32)
        self.prec_mean = jnp.asarray(prec_mean, jnp.float32)
        self.site = site

    @property
    def model(self):
        return self._model

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        return ExactState(init_params, rng_key)

    def _one(self, state, model_kwargs):
        key, key_draw = random.split(state.rng_key)
        tau = model_kwargs[TAU]
        centre = model_kwargs[CENTRE][self.site]
        tilted_prec = self.prec + jnp.eye(self.prec.shape[0]) / tau
        cov = jnp.linalg.inv(tilted_prec)
        mean = cov @ (self.prec_mean + centre / tau)
        z = mean + jnp.linalg.cholesky(cov) @ random.normal(key_draw, mean.shape)
        return ExactState({self.site: z}, key)

    def sample(self, state, model_args, model_kwargs):
        if is_prng_key(state.rng_key):
            return self._one(state, model_kwargs)
        return jax.vmap(self._one, in_axes=(0, None))(state, model_kwargs)

    def refresh(self, state, model_args, model_kwargs):
        return state
