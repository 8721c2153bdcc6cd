"""Plots render to PNG and hold the expected lines and panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests._runs import hr_svi_run, le_nuts_run  # noqa: E402
from vi_entropy import RunResult, plot_sampler_health, plot_trajectory  # noqa: E402

# One group with the other users of tests._runs: its runs are made once, on one worker.
pytestmark = pytest.mark.xdist_group("shared-runs")

PNG = b"\x89PNG\r\n\x1a\n"


def saved(fig, path):
    fig.savefig(path, format="png")
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG
    plt.close(fig)


def test_trajectory_plot(tmp_path):
    _, result, _ = le_nuts_run()
    ax = plot_trajectory(result)
    assert len(ax.get_lines()) == 2  # regularized loss, f(x_k)
    assert len(ax.collections) == 1  # the ±2 SE band
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), result.trace["step"])
    saved(ax.figure, tmp_path / "trajectory.png")


def test_trajectory_plot_marks_rises(tmp_path):
    trace = {
        "step": np.array([0, 1, 2]),
        "loss": np.array([3.0, 2.0, 2.5]),
        "regularized_loss": np.array([4.0, 3.0, 3.8]),
        "regularized_loss_se": np.full(3, 0.1),
        "tau": np.full(3, 0.1),
    }
    fig, ax = plt.subplots()
    out = plot_trajectory(RunResult({}, None, {}, {}, trace), ax=ax)
    assert out is ax
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_array_equal(lines[2].get_xdata(), [2])
    saved(fig, tmp_path / "rise.png")


def test_sampler_health_plot_mcmc(tmp_path):
    _, result, _ = le_nuts_run()
    axes = plot_sampler_health(result)
    assert [ax.get_title() for ax in axes] == [
        "acceptance rate",
        "divergent transitions",
        "max split R-hat",
        "min bulk ESS",
    ]
    assert [len(ax.get_lines()) for ax in axes] == [1, 1, 2, 1]  # R-hat has its 1.01 line
    saved(axes[0].figure, tmp_path / "health.png")


def test_sampler_health_plot_heat_regularization(tmp_path):
    _, result, _ = hr_svi_run()
    fig, axes = plt.subplots(1, 2)
    out = plot_sampler_health(result, axes=axes)
    assert len(out) == 1 and out[0] is axes[0]
    assert "ELBO" in out[0].get_title()
    saved(fig, tmp_path / "health_hr.png")


def test_plots_need_their_data():
    with pytest.raises(ValueError, match="tracking"):
        plot_trajectory(RunResult({}, None, {}, {}, {}))
    with pytest.raises(ValueError, match="none of"):
        plot_sampler_health(RunResult({}, None, {"tau": np.ones(2)}, {}))
