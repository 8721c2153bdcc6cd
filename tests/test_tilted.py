"""Tier 1: exact identities of the tilted posterior (no Monte Carlo)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.infer.util import potential_energy

from tests.conftest import linreg_model, tilted_gaussian
from vi_entropy.tilted import TiltedPosterior, tilt_model


def test_tilted_linear_gaussian_matches_closed_form(linreg):
    X, y, prec, prec_mean = linreg
    tp = TiltedPosterior(linreg_model)
    tp.setup(random.PRNGKey(0), (X, y), {})
    centre = jnp.array([0.3, -1.0, 2.0, 0.0, 0.5])
    tau = 0.2

    def pot(u):
        return tp.tilted_potential(u, centre, tau, (X, y), {})

    hessian = np.asarray(jax.hessian(pot)(jnp.zeros(5)), np.float64)
    tilted_prec, tilted_mean = tilted_gaussian(prec, prec_mean, centre, tau)
    np.testing.assert_allclose(hessian, tilted_prec, rtol=1e-4, atol=1e-3)
    # A quadratic's minimizer is one Newton step from anywhere.
    u0 = jnp.zeros(5)
    mode = np.asarray(u0) - np.linalg.solve(hessian, np.asarray(jax.grad(pot)(u0), np.float64))
    np.testing.assert_allclose(mode, tilted_mean, rtol=1e-4, atol=1e-4)


def constrained_model(y=None):
    loc = numpyro.sample("loc", dist.Normal(0.0, 2.0))
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    probs = numpyro.sample("probs", dist.Dirichlet(jnp.ones(3)))
    with numpyro.plate("data", 6):
        numpyro.sample("y", dist.Normal(loc + probs[0], scale), obs=y)


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_tilted_model_potential_equals_flat_potential(beta):
    """The NumPyro model used by kernels and the flat potential agree, constraints included."""
    y = jnp.linspace(-1.0, 2.0, 6)
    tp = TiltedPosterior(constrained_model, beta=beta)
    tp.setup(random.PRNGKey(0), (y,), {})
    assert tp.dim == 1 + 1 + 2  # the simplex has 2 unconstrained coordinates
    u = jnp.array([0.4, -0.3, 0.2, 0.7])
    centre = jnp.array([0.1, 0.2, -0.5, 0.0])
    tau = 0.3
    flat = tp.tilted_potential(u, centre, tau, (y,), {})
    kw = tp.model_kwargs({}, centre, tau)
    via_model = potential_energy(tp.tilted_model, (y,), kw, tp.unravel(u))
    np.testing.assert_allclose(float(via_model), float(flat), rtol=1e-5)
    base = potential_energy(constrained_model, (y,), {}, tp.unravel(u))
    expected = beta * base + 0.5 * jnp.sum((u - centre) ** 2) / tau
    np.testing.assert_allclose(float(flat), float(expected), rtol=1e-5)


def test_tilt_reads_constrained_values_when_not_under_potential_energy():
    """Under SVI or Predictive the tilt maps constrained values back (Jacobian included)."""
    y = jnp.linspace(-1.0, 2.0, 6)
    beta = 0.5
    tp = TiltedPosterior(constrained_model, beta=beta)
    tp.setup(random.PRNGKey(0), (y,), {})
    u = jnp.array([0.4, -0.3, 0.2, 0.7])
    centre = jnp.zeros(4)
    values = tp.constrain(u)
    kw = tp.model_kwargs({}, centre, 0.3)
    tilted = tilt_model(constrained_model, beta)
    log_joint, trace = numpyro.infer.util.log_density(tilted, (y,), kw, values)
    # log p_tilted(values) + log|J| must equal -(beta U(u) + tilt): the unconstrained target.
    log_det = 0.0
    for name, site in tp.sites.items():
        t = site.transform
        u_site = tp.unravel(u)[name]
        log_det += jnp.sum(t.log_abs_det_jacobian(u_site, t(u_site)))
    expected = -tp.tilted_potential(u, centre, 0.3, (y,), {})
    np.testing.assert_allclose(float(log_joint + log_det), float(expected), rtol=1e-5)


def test_constrain_unconstrain_round_trip():
    y = jnp.linspace(-1.0, 2.0, 6)
    tp = TiltedPosterior(constrained_model)
    tp.setup(random.PRNGKey(0), (y,), {})
    params = {"loc": jnp.array(0.5), "scale": jnp.array(2.0), "probs": jnp.array([0.2, 0.3, 0.5])}
    back = tp.constrain(tp.unconstrain(params))
    for k in params:
        np.testing.assert_allclose(back[k], params[k], rtol=1e-5)


def _with_data_support(y):
    numpyro.sample("low", dist.Uniform(0.0, y.max()))
    numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def _with_numpy_on_data(y):
    k = len(np.unique(np.asarray(y)))  # needs concrete data
    numpyro.sample("w", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
    numpyro.sample("s", dist.Exponential(1.0))


@pytest.mark.parametrize(
    ("model", "abstract", "dim"),
    [(_with_data_support, False, 3), (_with_numpy_on_data, False, 5), (linreg_model, True, None)],
)
def test_the_prototype_trace_is_abstract_unless_the_model_needs_data(model, abstract, dim):
    y = jnp.array([0.5, 1.0, 1.0, 2.0, 3.0])
    args = (jnp.ones((5, 3)), y) if model is linreg_model else (y,)
    tp = TiltedPosterior(model)
    tp.setup(random.PRNGKey(0), args, {})
    values = [tp.prototype_trace[name]["value"] for name in tp.sites]
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in values) == abstract
    assert all(isinstance(v, jax.Array) for v in values) == (not abstract)
    assert tp.dim == (dim or 3)
    # Either way the flat layout works: f is finite at the zero vector.
    u = jnp.zeros(tp.dim)
    assert np.isfinite(float(tp.potential(u, args, {})))
