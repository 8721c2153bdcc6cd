"""Compile once: 50 outer steps compile no more than 5 do, for every sampler and scheme."""

from __future__ import annotations

import contextlib
from functools import partial

import jax
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random

from tests._zoo import ZOO
from tests.conftest import linreg_data, linreg_model
from vi_entropy import HeatRegularization, LocalEntropy, TiltedPosterior

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
    """Count XLA backend compilations (every jit cache miss ends in one)."""
    counter = {"n": 0}

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            counter["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


SCHEMES = {
    "le-nuts": partial(LocalEntropy, sampler="nuts", num_chains=2, num_samples=3, num_warmup=3),
    "le-hmc": partial(LocalEntropy, sampler="hmc", num_chains=2, num_samples=3, num_warmup=3),
    "le-sa": partial(LocalEntropy, sampler="sa", num_chains=2, num_samples=3, num_warmup=3),
    "le-sgld": partial(LocalEntropy, sampler="sgld", num_chains=2, num_samples=3, num_warmup=3),
    "le-pcn": partial(LocalEntropy, sampler="pcn", num_chains=2, num_samples=3, num_warmup=3),
    "le-elliptical_slice": partial(
        LocalEntropy, sampler="elliptical_slice", num_chains=2, num_samples=3, num_warmup=3
    ),
    # Eight proposals from far away: degenerate weights, which is not what this tests.
    "le-importance": partial(LocalEntropy, sampler="importance", num_samples=8, ess_threshold=None),
    "le-nuts-readapt": partial(
        LocalEntropy, sampler="nuts", num_chains=2, num_samples=3, num_warmup=3, readapt=True
    ),
    "hr-svi": partial(HeatRegularization, method="svi", num_inner_steps=3, num_particles=2),
    "hr-robbins_monro": partial(
        HeatRegularization, method="robbins_monro", num_inner_steps=3, num_particles=2
    ),
}


# Rejected steps (see _sgld) and HR-SVI's 3-step inner fits warn; this is about compilation.
@pytest.mark.filterwarnings("ignore::vi_entropy.VIEntropyWarning")
@pytest.mark.parametrize("name", list(SCHEMES))
def test_fifty_steps_compile_no_more_than_five(name):
    X, y = linreg_data(n=20, d=3)
    # A τ schedule makes τ traced data that changes every step.
    tau = lambda step: 0.01 / (1.0 + step)  # noqa: E731
    make = partial(SCHEMES[name], linreg_model, tau, progress_bar=False, **_sgld(name))
    # A fresh scheme's 5 steps compile its functions (and JAX's process-wide eager ops).
    first = make()
    with count_compilations() as short_run:
        result = first.run(random.PRNGKey(0), 5, X, y)
    assert short_run["n"] > 0  # the counter sees compilations at all
    # Continuing to 50 steps compiles nothing: neither the step nor num_steps is static.
    with count_compilations() as more:
        first.run(None, 45, X, y, init_state=result.state)
    assert more["n"] == 0
    # A fresh scheme compiles only its own functions: 50 steps no more than 5.
    with count_compilations() as long_run:
        make().run(random.PRNGKey(1), 50, X, y)
    assert long_run["n"] <= short_run["n"]


def _sgld(name):
    # With 3 warm-up steps and τ shrinking 50-fold, NUTS/HMC chains get stuck (every
    # transition diverges) and the driver rejects those steps; rejected or not, a step
    # runs the same compiled code, so let the run go on.
    options = {"max_rejections": 100}
    if name == "le-sgld":
        options["sampler_kwargs"] = {"step_size": 1e-3}
    return options


def _fresh_regression(X, y=None):
    # Defined here so that no other test has compiled anything of this model.
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("rows", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, s), obs=y)


def _first_run_case(name):
    if name == "regression":
        return _fresh_regression, linreg_data(n=20, d=3), {}
    case = ZOO[name]
    return case.model, case.args, case.kwargs


# The regression, and two models of others' kind: plates, LocScaleReparam, a vector latent
# with a batch dimension, constrained scales, deterministic sites, sites named ``tau``.
@pytest.mark.filterwarnings("ignore::vi_entropy.VIEntropyWarning")
@pytest.mark.parametrize("name", ["regression", "hierarchical", "change_point"])
def test_a_first_run_compiles_four_programs(name):
    """init, the tracking estimator, the step and get_params; the model's prototype
    trace compiles nothing (it is abstract)."""
    model, args, kwargs = _first_run_case(name)
    key = random.PRNGKey(0)
    tilted = TiltedPosterior(model)
    with count_compilations() as setup:
        tilted.setup(key, args, kwargs)
    assert setup["n"] == 0
    le = LocalEntropy(model, 0.01, num_chains=2, num_samples=3, num_warmup=3, progress_bar=False)
    with count_compilations() as first:
        le.run(key, 1, *args, **kwargs)
    assert first["n"] == 4


def test_the_tracking_estimator_compiles_on_a_worker_thread_once_and_bitwise():
    """A first run traces the estimator on the calling thread and compiles it on the
    worker thread while the step compiles; that executable is the one the jit would
    have compiled (the same estimates, bit for bit) and is reused at later steps."""
    import threading

    import numpy as np

    X, y = linreg_data(n=20, d=3)
    le = LocalEntropy(linreg_model, 0.01, num_chains=2, num_samples=3, num_warmup=3,
                      progress_bar=False)  # fmt: skip
    state = le.init(random.PRNGKey(0), X, y)
    threads = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            threads.append(threading.current_thread().name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = le.run(None, 3, X, y, init_state=state, track_every=1)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert sum(name.startswith("vi_entropy-compile") for name in threads) == 1, threads
    assert le._track_jit.jit._cache_size() == 0  # the jit itself compiled nothing
    dynamic, static = le._partition((X, y), {})
    by_jit = le._track_jit.jit(state, dynamic, static=static, num_samples=256)
    for name in ("loss", "regularized_loss", "regularized_loss_se"):
        np.testing.assert_array_equal(result.trace[name][0], by_jit[name])
    assert result.trace["step"].tolist() == [0, 1, 2, 3]


def test_background_jit_falls_back_to_the_jit_for_other_arguments():
    import jax.numpy as jnp

    from vi_entropy._compile import BackgroundJit

    power = BackgroundJit(lambda x, p: x**p, static_argnames=("p",))
    power.prepare(jnp.arange(3.0), p=2)
    assert power(jnp.arange(3.0), p=2).tolist() == [0.0, 1.0, 4.0]  # the prepared one
    assert power.jit._cache_size() == 0
    assert power(jnp.arange(4.0), p=2).tolist() == [0.0, 1.0, 4.0, 9.0]  # another shape
    assert power(jnp.arange(3.0), p=3).tolist() == [0.0, 1.0, 8.0]  # another static value
    assert power.jit._cache_size() == 2
    power.prepare(jnp.arange(4.0), p=2)  # compiled by the jit already: nothing to do
    assert len(power._compiled) == 1


@pytest.mark.x64  # float64 draws too, in the float64 pass
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_flat_draws_are_jax_random_draws_bit_for_bit(impl):
    # The schemes draw their Gaussian blocks with `_compile.normal`, the bundled networks
    # their initial weights with `_compile.uniform` (one flat vector, reshaped: it
    # compiles in a third of the time); the draws must not change.
    import numpy as np

    from vi_entropy._compile import normal, uniform

    for seed, shape, dtype in [
        (0, (256, 10), "float32"),
        (1, (2, 3, 5), "float32"),
        (2, (1, 7), "float16"),
        (3, (7, 1), "bfloat16"),
        (4, (0, 3), "float32"),
        (5, (4,), "float32"),
        (6, (), "float32"),
        *([(8, (5, 6), "float64")] if jax.config.jax_enable_x64 else []),
    ]:
        key = random.key(seed, impl=impl)
        bounds = {"minval": -0.25, "maxval": 2.0}
        for got, want in [
            (normal(key, shape, dtype), random.normal(key, shape, dtype)),
            (uniform(key, shape, dtype, **bounds), random.uniform(key, shape, dtype, **bounds)),
        ]:
            assert got.shape == want.shape and got.dtype == want.dtype
            assert np.array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))
    # And inside a compiled program, with an old-style raw key.
    raw = random.PRNGKey(7)
    assert np.array_equal(
        jax.jit(normal, static_argnums=1)(raw, (3, 4)), random.normal(raw, (3, 4))
    )
