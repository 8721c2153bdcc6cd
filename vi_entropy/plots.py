"""Plots of a run: the regularized-loss trajectory and the inner sampler's health.

Like ArviZ's plot functions, each takes optional axes and returns what it drew on.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from vi_entropy.diagnostics import monotonicity

__all__ = ["plot_sampler_health", "plot_trajectory"]

# Panels of plot_sampler_health, in order, when present in result.info:
# key -> (title, reference line or None)
HEALTH_PANELS = {
    "acceptance_rate": ("acceptance rate", None),
    "num_divergent": ("divergent transitions", None),
    "max_rhat": ("max split R-hat", 1.01),
    "min_ess": ("min bulk ESS", None),
    "importance_ess": ("importance-sampling ESS", None),
    "elbo_loss": ("final SVI loss (−ELBO)", None),
    "rm_grad_norm": ("Robbins-Monro step norm", None),
}


def plot_trajectory(result: Any, ax: Any = None, *, k: float = 3.0, yscale: str = "linear") -> Any:
    """Plot the tracked regularized loss with ±2 SE bands, and ``f(x_k)``.

    The regularized loss is ``F_τ(x_k)`` (local entropy) or ``f_τ(x_k)`` (heat
    regularization) from ``result.trace``; steps where it rose by more than ``k``
    combined standard errors (:func:`~vi_entropy.diagnostics.monotonicity`) are marked
    with red crosses.

    Parameters
    ----------
    result : RunResult
        A run with tracking on (``result.trace`` not empty).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when ``None``.
    k : float, default 3.0
        Threshold for marking rises, in standard errors.
    yscale : str, default "linear"
        Matplotlib scale of the loss axis (``"log"`` or ``"symlog"`` when the first
        steps dwarf the rest).

    Returns
    -------
    matplotlib Axes
        Two lines (regularized loss, ``f(x_k)``), one band, and one more line of
        markers when a rise was flagged.

    Example
    -------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from vi_entropy import RunResult
    >>> trace = {"step": np.arange(3), "loss": np.array([5.0, 3.0, 2.0]),
    ...          "regularized_loss": np.array([6.0, 4.0, 3.0]),
    ...          "regularized_loss_se": np.full(3, 0.1), "tau": np.full(3, 0.1)}
    >>> ax = plot_trajectory(RunResult({}, None, {}, {}, trace))
    >>> len(ax.get_lines())
    2
    """
    trace = result.trace or {}
    if "regularized_loss" not in trace:
        raise ValueError("plot_trajectory: result.trace is empty; run with tracking on.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    step = np.asarray(trace["step"])
    value = np.asarray(trace["regularized_loss"], np.float64)
    se = np.asarray(trace["regularized_loss_se"], np.float64)
    (line,) = ax.plot(step, value, marker="o", ms=3, label="regularized loss ± 2 SE")
    ax.fill_between(step, value - 2 * se, value + 2 * se, color=line.get_color(), alpha=0.25)
    ax.plot(step, np.asarray(trace["loss"]), ls="--", color="0.3", label="f(x_k)")
    rises = monotonicity(trace, k=k).rises
    if rises:
        at = np.isin(step, [r.step_to for r in rises])
        ax.plot(step[at], value[at], "x", color="red", ms=8, label=f"rise > {k:g} SE")
    ax.set_xlabel("outer step k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.set_yscale(yscale)
    ax.legend(fontsize="small")
    return ax


def plot_sampler_health(result: Any, axes: Any = None) -> np.ndarray:
    """Plot the inner sampler's per-step diagnostics from ``result.info``, one panel each.

    Panels, those present in ``result.info``: acceptance rate, divergent transitions,
    max split R-hat (reference line at 1.01), min ESS (MCMC samplers); importance
    ESS (importance sampling); final SVI loss or Robbins-Monro step norm (heat
    regularization).

    Parameters
    ----------
    result : RunResult
        Any run (``result.info`` not empty).
    axes : array of matplotlib Axes, optional
        At least as many axes as panels; a new figure (one row) when ``None``.

    Returns
    -------
    numpy.ndarray of matplotlib Axes
        The panels drawn: one data line each, plus the reference line at 1.01 of the
        R-hat panel.

    Example
    -------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from vi_entropy import RunResult
    >>> info = {"step": np.arange(4), "acceptance_rate": np.full(4, 0.9),
    ...         "num_divergent": np.zeros(4, int), "max_rhat": np.full(4, 1.0),
    ...         "min_ess": np.full(4, 150.0)}
    >>> plot_sampler_health(RunResult({}, None, info, {})).shape
    (4,)
    """
    info = result.info or {}
    keys = [key for key in HEALTH_PANELS if key in info]
    if not keys:
        raise ValueError(f"plot_sampler_health: result.info has none of {sorted(HEALTH_PANELS)}.")
    if axes is None:
        _, axes = plt.subplots(
            1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False, layout="constrained"
        )
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.size < len(keys):
        raise ValueError(f"axes: need at least {len(keys)} axes, got {axes.size}.")
    any_info = next(iter(info.values()))
    step = np.asarray(info.get("step", np.arange(len(any_info))))
    for ax, key in zip(axes, keys, strict=False):
        title, ref = HEALTH_PANELS[key]
        ax.plot(step, np.asarray(info[key], np.float64), marker=".", ms=3)
        if ref is not None:
            ax.axhline(ref, color="0.5", ls=":", lw=1)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("outer step k")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return axes[: len(keys)]
