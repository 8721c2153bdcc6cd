"""Ordinary NumPyro models, written the way users write them (not like ``dense_network``).

Each entry of :data:`ZOO` is a :class:`Case`: the model, its arguments (small data, made
here with a fixed seed) and what a user expects back: the latent sites with their
shapes, the deterministic sites and the observed sites that ``Predictive`` returns.
Shapes covered: latents inside plates, vector latents with batch dimensions (no
``.to_event``), constrained scale parameters, simplex latents, deterministic sites,
``LocScaleReparam``, sites named ``tau``, ``loss`` and ``step``, a subsampled plate, and
a model that calls NumPy on its data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.reparam import LocScaleReparam


class Case(NamedTuple):
    """A model, its data and the sites a user expects in the results."""

    model: Callable
    args: tuple
    kwargs: dict[str, Any]
    #: latent site name -> constrained shape
    latent: dict[str, tuple[int, ...]]
    #: deterministic sites (and the original sites of reparameterized ones)
    deterministic: tuple[str, ...]
    #: observed sites
    observed: tuple[str, ...]


_rng = np.random.default_rng(0)

# -- eight schools (centred and non-centred): a latent named `tau`, a plate ---------------
J = 8
SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32)
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32)


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(sigma, y=None):
    with numpyro.handlers.reparam(config={"theta": LocScaleReparam(centered=0)}):
        eight_schools(sigma, y)


# -- logistic regression: vector latent with batch dims, deterministic site ---------------
N_LOGIT, D_LOGIT = 30, 3
X_LOGIT = _rng.normal(size=(N_LOGIT, D_LOGIT)).astype(np.float32)
Y_LOGIT = (_rng.uniform(size=N_LOGIT) < 0.5).astype(np.float32)


def logistic(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0))  # batch dims
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    logits = numpyro.deterministic("logits", X @ w + b)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def logistic_subsampled(X, y=None, batch_size=8):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0))
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        X_batch, y_batch = jnp.asarray(X)[idx], None if y is None else jnp.asarray(y)[idx]
        numpyro.sample("y", dist.Bernoulli(logits=X_batch @ w), obs=y_batch)


# -- partial pooling (baseball-like): Beta latents in a plate, Pareto concentration -------
HITS = np.array([12, 7, 14, 9, 11, 5], np.float32)
AT_BATS = np.full(6, 45.0, np.float32)


def partial_pooling(at_bats, hits=None):
    phi = numpyro.sample("phi", dist.Uniform(0.0, 1.0))
    kappa = numpyro.sample("kappa", dist.Pareto(1.0, 1.5))
    with numpyro.plate("players", at_bats.shape[0]):
        theta = numpyro.sample("theta", dist.Beta(phi * kappa, (1 - phi) * kappa))
        numpyro.sample("hits", dist.Binomial(at_bats, probs=theta), obs=hits)


# -- UCB admissions: calls NumPy on its data ------------------------------------------------
DEPT = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
MALE = np.array([1, 0, 1, 0, 1, 0, 1, 0], np.float32)
APPLICATIONS = np.array([825, 108, 560, 25, 325, 593, 417, 375], np.float32)
ADMIT = np.array([512, 89, 353, 17, 120, 202, 138, 131], np.float32)


def ucbadmit(dept, male, applications, admit=None):
    num_depts = len(np.unique(dept))  # needs concrete data, as NumPyro's example does
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    a = numpyro.sample("a", dist.Normal(0.0, 4.0))
    with numpyro.plate("dept", num_depts):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    logits = a + z[dept] * sigma + b * male
    with numpyro.plate("data", dept.shape[0]):
        numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)


# -- sites named like our own outputs: `loss`, `step`, `tau`; a simplex latent --------------
COUNTS = np.array([3.0, 7.0, 2.0, 8.0], np.float32)


def named_like_ours(counts=None):
    step = numpyro.sample("step", dist.Normal(0.0, 1.0))
    loss = numpyro.sample("loss", dist.LogNormal(0.0, 1.0))
    probs = numpyro.sample("probs", dist.Dirichlet(jnp.ones(4)))
    numpyro.deterministic("regularized_loss", loss + step)
    numpyro.sample("counts", dist.Multinomial(20, probs), obs=counts)
    numpyro.sample("noise", dist.Normal(step, loss), obs=0.5)


# -- change point: `tau` on (0, 1), two rates ------------------------------------------------
COUNTS_CP = np.concatenate([_rng.poisson(2.0, 10), _rng.poisson(6.0, 10)]).astype(np.float32)


def change_point(counts):
    T = counts.shape[0]
    lambda1 = numpyro.sample("lambda1", dist.Exponential(1.0 / counts.mean()))
    lambda2 = numpyro.sample("lambda2", dist.Exponential(1.0 / counts.mean()))
    tau = numpyro.sample("tau", dist.Uniform(0.0, 1.0))
    rate = numpyro.deterministic("rate", jnp.where(T * tau > jnp.arange(T), lambda1, lambda2))
    with numpyro.plate("time", T):
        numpyro.sample("counts", dist.Poisson(rate), obs=counts)


# -- all of it in one model: the smoke test of every sampler and both heat methods --------
G, N_H, D_H = 3, 24, 2
GROUP_H = np.arange(N_H, dtype=np.int32) % G
X_H = _rng.normal(size=(N_H, D_H)).astype(np.float32)
Y_H = (X_H @ np.array([1.0, -0.5]) + np.array([-1.0, 0.0, 1.0])[GROUP_H]).astype(np.float32)
Y_H += 0.3 * _rng.normal(size=N_H).astype(np.float32)


def hierarchical(X, group, y=None):
    """Group intercepts (non-centred), a vector slope with batch dims, two scales."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("groups", G), numpyro.handlers.reparam(config={"alpha": LocScaleReparam(0)}):
        alpha = numpyro.sample("alpha", dist.Normal(mu, tau))
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    mean = numpyro.deterministic("mean", alpha[group] + X @ w)
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(mean, sigma), obs=y)


ZOO: dict[str, Case] = {
    "eight_schools": Case(
        eight_schools,
        (SCHOOLS_SIGMA,),
        {"y": SCHOOLS_Y},
        {"mu": (), "tau": (), "theta": (J,)},
        (),
        ("obs",),
    ),
    "eight_schools_noncentered": Case(
        eight_schools_noncentered,
        (SCHOOLS_SIGMA,),
        {"y": SCHOOLS_Y},
        {"mu": (), "tau": (), "theta_decentered": (J,)},
        ("theta",),
        ("obs",),
    ),
    "logistic": Case(
        logistic,
        (X_LOGIT,),
        {"y": Y_LOGIT},
        {"w": (D_LOGIT,), "b": ()},
        ("logits",),
        ("y",),
    ),
    "logistic_subsampled": Case(
        logistic_subsampled,
        (X_LOGIT,),
        {"y": Y_LOGIT},
        {"w": (D_LOGIT,)},
        (),
        ("y",),
    ),
    "partial_pooling": Case(
        partial_pooling,
        (AT_BATS,),
        {"hits": HITS},
        {"phi": (), "kappa": (), "theta": (6,)},
        (),
        ("hits",),
    ),
    "ucbadmit": Case(
        ucbadmit,
        (DEPT, MALE, APPLICATIONS),
        {"admit": ADMIT},
        {"sigma": (), "a": (), "z": (4,), "b": ()},
        (),
        ("admit",),
    ),
    "named_like_ours": Case(
        named_like_ours,
        (),
        {"counts": COUNTS},
        {"step": (), "loss": (), "probs": (4,)},
        ("regularized_loss",),
        ("counts", "noise"),
    ),
    "change_point": Case(
        change_point,
        (COUNTS_CP,),
        {},
        {"lambda1": (), "lambda2": (), "tau": ()},
        ("rate",),
        ("counts",),
    ),
    "hierarchical": Case(
        hierarchical,
        (X_H, GROUP_H),
        {"y": Y_H},
        {"mu": (), "tau": (), "alpha_decentered": (G,), "w": (D_H,), "sigma": ()},
        ("alpha", "mean"),
        ("y",),
    ),
}
