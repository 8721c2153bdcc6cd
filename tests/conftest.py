"""Shared models and helpers: small sizes, so that compiled functions are few and fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

# The suite's run time is mostly XLA compilation of tiny programs (about 80 % of a test
# worker's time), so the suite sets how XLA compiles them on CPU:
# - its cheaper optimization level;
# - its elemental emitters instead of the fusion emitters (about half the compile time
#   again);
# - one LLVM module per program instead of several compiled in parallel (the two test
#   workers already keep both cores busy; about 10-20 % less CPU).
# What they compute differs from XLA's defaults in the last bits only. Every process of
# the suite uses the same flags, so comparisons between processes and runs hold, and no
# test times anything. The last two flags are used only where this jaxlib's XLA has them:
# it aborts the process on a flag it does not know (jaxlib 0.12 dropped the emitters'),
# so they are tried in a child process first. Read when JAX first uses a device, so
# setting them here is in time; the first process decides, and the workers, subprocesses
# and notebook kernels inherit them. VI_ENTROPY_TEST_XLA_OPT=1 keeps XLA's defaults.
if os.environ.get("VI_ENTROPY_TEST_XLA_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in _flags:
        _optional = [
            "--xla_cpu_use_fusion_emitters=false",
            "--xla_cpu_parallel_codegen_split_count=1",
        ]
        _accepted: list[str] = []
        # All at once first (one child process where all are known), then one by one.
        for _try in [_optional, *([f] for f in _optional)]:
            _probe = subprocess.run(
                [sys.executable, "-c", "import jax; jax.devices()"],
                env={**os.environ, "XLA_FLAGS": " ".join(_try), "JAX_PLATFORMS": "cpu"},
                capture_output=True,
                timeout=300,
            )
            if _probe.returncode == 0:
                _accepted += _try
                if _try is _optional:
                    break
        os.environ["XLA_FLAGS"] = " ".join(
            [
                _flags,
                "--xla_backend_optimization_level=0",
                "--xla_llvm_disable_expensive_passes=true",
                *_accepted,
            ]
        ).strip()

# One persistent compilation cache for the session: its test processes (xdist workers,
# subprocesses, notebook kernels) compile many of the same programs (the same small
# models and schemes, in different tests), and a program compiled once is loaded after.
# Made here by the first process (pytest's, before it starts the workers, which inherit
# it) and removed at its end; a cache the caller names (JAX_COMPILATION_CACHE_DIR) is
# used as it is, and VI_ENTROPY_TEST_CACHE=0 switches it off. Tests that time or count
# compilations in fresh processes give those processes their own (test_cli,
# test_benchmark, test_benchmarks); counting in this process is unchanged (JAX reports a
# program loaded from the cache as a backend compilation too).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get("VI_ENTROPY_TEST_CACHE") != "0":
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vi_entropy-test-jax-")
    os.environ["VI_ENTROPY_TEST_CACHE_OWNER"] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")

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


def pytest_addoption(parser):
    parser.addoption(
        "--require-x64",
        action="store_true",
        help="fail the session unless JAX runs in float64 (JAX_ENABLE_X64=1)",
    )


def pytest_configure(config):
    if config.getoption("--require-x64") and jnp.asarray(1.0).dtype != jnp.float64:
        raise pytest.UsageError(
            "--require-x64: JAX is not in float64 mode (set JAX_ENABLE_X64=1); "
            f"jax.config.jax_enable_x64 = {jax.config.jax_enable_x64}."
        )


def pytest_unconfigure(config):
    if os.environ.get("VI_ENTROPY_TEST_CACHE_OWNER") == str(os.getpid()):  # made it
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The longest tests, first: `make test` hands tests to its two workers in collection order
# (--no-loadscope-reorder), so that they start early and the workers end together
# instead of one finishing a long test alone at the end.
_LONGEST_FIRST = (
    "tests/test_cli.py",  # its group's fixture runs the CLI's smoke job (~1 min)
    "tests/test_notebooks.py::test_notebook_executes",
    "tests/test_benchmarks.py",  # its group's fixture runs every script's quick run
    "tests/test_benchmark.py",
    "tests/test_sharding.py",
)


def _longest_first(items):
    def rank(item):
        found = [i for i, p in enumerate(_LONGEST_FIRST) if item.nodeid.startswith(p)]
        return found[0] if found else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the collection order within each rank


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Order the tests longest first (:data:`_LONGEST_FIRST`); keep ``xdist_group`` tests
    on one worker under pytest >= 9.2.

    pytest-xdist's ``--dist loadgroup`` appends ``@group`` to each marked item's
    ``_nodeid``; pytest 9.2 keeps the id in ``_id`` instead, so the suffix is lost and the
    groups' shared runs (module fixtures) are made once per worker.  Where xdist's own
    suffix is missing, it is added here, as xdist would.
    """
    _longest_first(items)
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: xdist's own suffix works
        return
    for item in items:
        names = sorted(
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        )
        if names and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(set(names)))}")


@pytest.fixture(scope="session")
def float_dtype():
    """JAX's default float dtype in this session: float64 under JAX_ENABLE_X64."""
    return jnp.asarray(1.0).dtype


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
        # JAX's default float: float64 under JAX_ENABLE_X64, like the centre.
        self.prec = jnp.asarray(prec)
        self.prec_mean = jnp.asarray(prec_mean)
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


def poisoned_linreg(X, y=None, poison=0.0):
    """:func:`linreg_model` plus ``poison · Σw`` in the log density.  Passed as an array,
    ``poison`` is traced data: ``nan`` makes the potential and its gradient NaN
    everywhere without recompiling (a numerical fault on demand), ``0`` changes nothing.
    """
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    numpyro.factor("poison", poison * jnp.sum(w))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, NOISE), obs=y)


OK = jnp.asarray(0.0)
NAN = jnp.asarray(jnp.nan)


def _reliability_schemes():
    from functools import partial

    from vi_entropy import HeatRegularization, LocalEntropy

    mcmc = dict(num_chains=2, num_samples=4, num_warmup=4)
    return {
        "le-nuts": partial(LocalEntropy, sampler="nuts", **mcmc),
        "le-hmc": partial(
            LocalEntropy,
            sampler="hmc",
            sampler_kwargs={"num_steps": 3, "trajectory_length": None},
            **mcmc,
        ),
        "le-sa": partial(LocalEntropy, sampler="sa", **mcmc),
        "le-sgld": partial(
            LocalEntropy, sampler="sgld", sampler_kwargs={"step_size": 1e-3}, **mcmc
        ),
        "le-pcn": partial(LocalEntropy, sampler="pcn", **mcmc),
        "le-elliptical_slice": partial(LocalEntropy, sampler="elliptical_slice", **mcmc),
        "le-importance": partial(
            LocalEntropy, sampler="importance", num_samples=32, ess_threshold=None
        ),
        "hr-svi": partial(HeatRegularization, method="svi", num_inner_steps=4, num_particles=2),
        "hr-robbins_monro": partial(
            HeatRegularization, method="robbins_monro", num_inner_steps=4, num_particles=2
        ),
    }


# Tests parametrized over these share one compiled scheme per sampler: an xdist group
# per sampler keeps them in one worker under `pytest -n 2 --dist loadgroup`.
RELIABILITY_SCHEMES = [
    pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in _reliability_schemes()
]


@pytest.fixture(scope="session")
def reliability_scheme():
    """``get(name)``: one tiny scheme per sampler/method on :func:`poisoned_linreg`,
    built once per session so that the tests sharing it compile it once."""
    makers = _reliability_schemes()
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = makers[name](poisoned_linreg, 0.01, progress_bar=False)
        return cache[name]

    return get
