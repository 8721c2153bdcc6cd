"""Small runs shared by the diagnostics, ArviZ and plot tests (each compiled once)."""

from __future__ import annotations

from functools import cache

from jax import random

from tests.conftest import linreg_data, linreg_model
from vi_entropy import HeatRegularization, LocalEntropy

NUM_STEPS = 8


@cache
def le_nuts_run():
    """LE-NUTS on the linear regression: 8 steps, every step's draws kept, tracked."""
    X, y = linreg_data()
    le = LocalEntropy(
        linreg_model,
        0.01,
        sampler="nuts",
        num_chains=4,
        num_samples=50,
        num_warmup=50,
        progress_bar=False,
    )
    result = le.run(random.PRNGKey(0), NUM_STEPS, X, y, keep_draws="all", track_every=2)
    return le, result, (X, y)


@cache
def hr_svi_run():
    """HR-SVI on the linear regression: 8 steps, tracked."""
    X, y = linreg_data()
    hr = HeatRegularization(
        linreg_model, 0.01, num_inner_steps=30, num_particles=2, progress_bar=False
    )
    result = hr.run(random.PRNGKey(0), NUM_STEPS, X, y, track_every=4)
    return hr, result, (X, y)
