"""ArviZ export: groups, dims and names; ArviZ's own functions on it; netcdf round trip."""

from __future__ import annotations

import arviz as az
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from jax import random

from tests._runs import NUM_STEPS, hr_svi_run, le_nuts_run
from vi_entropy import LocalEntropy, to_inference_data

matplotlib.use("Agg")

pytestmark = [
    # ArviZ 0.23's own plotting code trips a deprecation of matplotlib 3.11.
    pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning"),
    # One group with the other users of tests._runs: its runs are made once, on one worker.
    pytest.mark.xdist_group("shared-runs"),
]

STAT_NAMES = {"acceptance_rate", "diverging", "n_steps", "step_size", "lp", "energy"}
# ArviZ >= 1 (Python >= 3.12) exports a DataTree; ArviZ 0.x an InferenceData.
ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


def groups(idata) -> set[str]:
    """The group names of an InferenceData or of a DataTree."""
    return set(idata.groups()) if callable(idata.groups) else set(idata.children)


def dataset(group):
    """A group as an xarray Dataset (a DataTree node's, or the InferenceData's group)."""
    return group.to_dataset() if hasattr(group, "to_dataset") else group


@pytest.fixture(scope="module")
def nuts():
    le, result, args = le_nuts_run()
    return le, result, args, to_inference_data(result, le, model_args=args)


def test_groups_dims_and_names(nuts):
    le, result, (X, y), idata = nuts
    assert groups(idata) == {
        "posterior",
        "sample_stats",
        "observed_data",
        "centres",
        "trajectory",
        "step_stats",
    }
    last = NUM_STEPS - 1
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "w_dim_0")
    assert w.shape == (4, 50, 5)
    assert int(idata.posterior["outer_step"]) == last
    assert "tilted posterior" in idata.posterior.attrs["draws_of"]
    # The draws themselves (w is unconstrained already).
    np.testing.assert_array_equal(w.values, np.asarray(result.draws[last].values))
    assert STAT_NAMES <= set(idata.sample_stats.data_vars)
    assert idata.sample_stats["diverging"].dtype == bool
    np.testing.assert_array_equal(
        idata.sample_stats["lp"].values,
        -np.asarray(result.draws[last].stats["potential_energy"]),
    )
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(y))
    centres = idata.centres
    np.testing.assert_array_equal(centres["outer_step"].values, [0, 2, 4, 6, 8])
    assert centres["w"].dims == ("outer_step", "w_dim_0")
    np.testing.assert_array_equal(centres["w"].values, np.asarray(result.trace["centre"]))
    traj = idata.trajectory
    np.testing.assert_array_equal(traj["outer_step"].values, [0, 2, 4, 6, 8])
    assert "w" not in traj  # site centres live in their own group
    for name in ("loss", "regularized_loss", "regularized_loss_se", "tau"):
        assert traj[name].dims == ("outer_step",)
    assert traj.attrs["regularized_loss"] == "local_entropy"
    stats = idata.step_stats
    np.testing.assert_array_equal(stats["outer_step"].values, np.arange(NUM_STEPS))
    for name in ("acceptance_rate", "num_divergent", "max_rhat", "min_ess", "num_grad_evals"):
        assert stats[name].dims == ("outer_step",)


def test_several_steps_get_a_step_dimension(nuts):
    le, result, args, _ = nuts
    idata = to_inference_data(result, le, steps=[2, 5], model_args=args)
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "outer_step", "w_dim_0")
    np.testing.assert_array_equal(w["outer_step"].values, [2, 5])
    np.testing.assert_array_equal(w.sel(outer_step=5).values, np.asarray(result.draws[5].values))
    assert idata.sample_stats["acceptance_rate"].dims == ("chain", "draw", "outer_step")
    every = to_inference_data(result, le, steps="all", model_args=args)
    assert every.posterior.sizes["outer_step"] == NUM_STEPS
    with pytest.raises(ValueError, match="keep_draws"):
        to_inference_data(result, le, steps=[NUM_STEPS + 3], model_args=args)


def test_arviz_functions_work_on_it(nuts):
    _, _, _, idata = nuts
    summary = az.summary(idata)
    assert {"r_hat", "ess_bulk"} <= set(summary.columns)
    assert list(summary.index) == [f"w[{i}]" for i in range(5)]
    assert np.all(summary["r_hat"] < 1.1)
    assert az.ess(idata)["w"].shape == (5,)
    assert az.rhat(idata)["w"].shape == (5,)
    axes = az.plot_trace(idata)
    if ARVIZ_1:  # a PlotCollection of one variable
        assert type(axes).__name__ == "PlotCollection"
    else:
        assert axes.shape == (1, 2)
    matplotlib.pyplot.close("all")


def test_netcdf_round_trip(nuts, tmp_path):
    _, _, _, idata = nuts
    path = tmp_path / "run.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert groups(back) == groups(idata)
    for group in groups(idata):
        xr.testing.assert_equal(dataset(back[group]), dataset(idata[group]))


def test_heat_regularization_gets_draws_of_the_fitted_gaussian():
    """No inner draws: the posterior holds draws of N(x_k, τI) at the final centre."""
    hr, result, args = hr_svi_run()
    idata = to_inference_data(result, hr, model_args=args, num_chains=2, num_draws=400)
    assert groups(idata) == {
        "posterior",
        "observed_data",
        "centres",
        "trajectory",
        "step_stats",
    }
    assert "fitted Gaussian" in idata.posterior.attrs["draws_of"]
    assert int(idata.posterior["outer_step"]) == NUM_STEPS
    w = idata.posterior["w"].values  # w is unconstrained: draws of N(x_k, τ) per coordinate
    assert w.shape == (2, 400, 5)
    centre = np.asarray(result.params["w"])
    se = np.sqrt(0.01 / 800)
    np.testing.assert_array_less(np.abs(w.mean(axis=(0, 1)) - centre), 5 * se)
    assert np.std(w, axis=(0, 1)) == pytest.approx(np.full(5, 0.1), rel=0.15)
    assert idata.trajectory.attrs["regularized_loss"] == "heat_loss"
    assert "elbo_loss" in idata.step_stats
    summary = az.summary(idata)
    assert list(summary.index) == [f"w[{i}]" for i in range(5)]


def scale_model(X, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


def test_importance_draws_are_constrained_and_resampled(linreg):
    """σ > 0 in the posterior; resampling keeps the weighted mean up to its MC error."""
    X, y, _, _ = linreg
    le = LocalEntropy(
        scale_model, 0.002, sampler="importance", num_samples=2000, progress_bar=False
    )
    start = {"w": jnp.asarray(np.linalg.lstsq(X, y, rcond=None)[0]), "sigma": jnp.array(0.5)}
    result = le.run(random.PRNGKey(0), 2, X, y, init_params=start, track_every=0)
    idata = to_inference_data(result, le, model_args=(X, y))
    sigma = idata.posterior["sigma"].values
    assert sigma.shape == (1, 2000)
    assert np.all(sigma > 0)
    draws = result.draws[1]
    lw = np.asarray(draws.log_weights, np.float64).ravel()
    w = np.exp(lw - lw.max())
    w /= w.sum()
    log_sigma = np.asarray(draws.values)[0, :, -1]  # the unconstrained σ is last
    weighted = w @ log_sigma
    se = np.sqrt(w**2 @ (log_sigma - weighted) ** 2)
    assert abs(np.log(sigma).mean() - weighted) < 5 * se
    assert "trajectory" not in groups(idata) and "centres" not in groups(idata)


def test_datatree_branch_for_arviz_1(nuts, tmp_path, monkeypatch):
    """ArviZ >= 1 returns a DataTree built with arviz_base; run where arviz_base installs."""
    arviz_base = pytest.importorskip("arviz_base")
    import vi_entropy.arviz as module

    le, result, args, idata = nuts
    monkeypatch.setattr(module, "ARVIZ_1", True)
    monkeypatch.setattr(module, "_dict_to_dataset", arviz_base.dict_to_dataset)
    tree = to_inference_data(result, le, model_args=args)
    assert isinstance(tree, xr.DataTree)
    path = tmp_path / "tree.nc"
    tree.to_netcdf(str(path))
    back = xr.open_datatree(str(path))
    for group in groups(idata):
        xr.testing.assert_equal(back[group].to_dataset(), dataset(idata[group]))
