"""The experiment's figures: one colour per method, one panel per family, in one place.

Every figure of the demo (``vi-entropy reproduce``) and of the benchmark's results page
(``vi-entropy results``) is drawn here, so a method has the same colour everywhere
(:data:`COLOURS`), gradient-free methods are dashed, and each family of methods has its
own panel with the cost unit that fits it on the x-axis: gradient evaluations for the
gradient-based panels, forward evaluations for the gradient-free one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["COLOURS", "FAMILIES", "Curve", "colour", "family_of", "plot_family_panels"]

#: Every method's colour (the same in every figure and every run).
COLOURS: dict[str, str] = {
    # first-order: greys, blues and a brown
    "sgd": "#7f7f7f",
    "sgd-nesterov": "#1f77b4",
    "adam": "#17becf",
    "sam": "#8c564b",
    "sam-sgdm": "#8c564b",
    "sam-adam": "#c49c94",
    "swa": "#393b79",
    # local entropy: greens, oranges, reds
    "le-sgld": "#2ca02c",
    "le-sgld-adam": "#98df8a",
    "entropy-sgd": "#637939",
    "le-nuts": "#d62728",
    "le-is": "#ff7f0e",
    "le-sa": "#8c6d31",
    "le-pcn": "#e377c2",
    "le-pcn-adam": "#f7b6d2",
    "le-pcn-antithetic": "#ad494a",
    "le-slice": "#9467bd",
    # heat regularization: purples and olive
    "hr-svi": "#7b4173",
    "hr-svi-adam": "#ce6dbd",
    "hr-rm": "#bcbd22",
    # evolution strategies
    "es-openes": "#000000",
    "es-snes": "#843c39",
    "es-pgpe": "#e7969c",
    "es-sep-cma": "#5254a3",
}
_FALLBACK = ("#aec7e8", "#ff9896", "#c5b0d5", "#c7c7c7", "#dbdb8d", "#9edae5")

#: The panels, in order: family name -> x-axis label.
FAMILIES: dict[str, str] = {
    "first-order": "gradient evaluations",
    "first-order, 20× gradients": "gradient evaluations",
    "local entropy": "gradient evaluations",
    "heat regularization": "gradient evaluations",
    "gradient-free": "forward evaluations",
}


def colour(method: str) -> str:
    """The colour of ``method`` (a fixed one for unknown names, from the name's letters).

    Example
    -------
    >>> colour("adam"), colour("adam-20x") == colour("adam")
    ('#17becf', True)
    """
    if method in COLOURS:
        return COLOURS[method]
    if method.endswith("-20x"):  # a baseline run longer: its own panel, its base's colour
        return colour(method.removesuffix("-20x"))
    return _FALLBACK[sum(map(ord, method)) % len(_FALLBACK)]


def family_of(method: str, gradient_free: bool = False) -> str:
    """The panel of ``method``: by its prefix, ``gradient-free`` when it uses no gradient.

    Example
    -------
    >>> family_of("hr-rm"), family_of("le-pcn", gradient_free=True), family_of("entropy-sgd")
    ('heat regularization', 'gradient-free', 'local entropy')
    """
    if gradient_free or method.startswith("es-"):
        return "gradient-free"
    if method.endswith("-20x"):
        return "first-order, 20× gradients"
    if method.startswith("le-") or method == "entropy-sgd":
        return "local entropy"
    if method.startswith("hr-"):
        return "heat regularization"
    return "first-order"


class Curve:
    """A method's accuracy against its cost: ``x``, the mean ``y`` and a band ``sd``."""

    def __init__(
        self,
        method: str,
        x: Sequence[float],
        y: Sequence[float],
        sd: Sequence[float] | None,
        family: str,
        gradient_free: bool = False,
    ) -> None:
        self.method = method
        self.x = np.asarray(x, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.sd = None if sd is None else np.asarray(sd, dtype=float)
        self.family = family
        self.gradient_free = gradient_free


def plot_family_panels(
    curves: Sequence[Curve] | Mapping[str, Sequence[Curve]],
    path: Any,
    title: str | None = None,
    ylabel: str = "test accuracy",
    reference: Mapping[str, float] | None = None,
    xlabel: str | None = None,
    log_x: bool = True,
) -> str:
    """One panel per family present, sharing the accuracy axis; saved as a PNG.

    Each curve is drawn in its method's :func:`colour`, dashed when gradient-free, with a
    shaded ±sd band when it has one; the x-axis is the family's cost unit (log scale)
    unless ``xlabel`` names another (e.g. updates), and each panel's legend sits below
    it, outside the data.  The gradient-based panels share their x-range.

    Parameters
    ----------
    curves : sequence of Curve, or dict of row title -> sequence of Curve
        One row of panels, or one row per entry (e.g. per ``τ``).
    path : str or path
        The PNG file.
    title : str, optional
        The figure's title.
    ylabel : str, default "test accuracy"
    reference : dict, optional
        ``label -> y``: horizontal dotted lines drawn in every panel (e.g. the best
        first-order method's final accuracy).
    xlabel : str, optional
        One x-label for every panel instead of the families' cost units.
    log_x : bool, default True

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile, os
    >>> curves = [Curve("adam", [0, 1, 2], [0.1, 0.5, 0.6], None, "first-order"),
    ...           Curve("le-pcn", [0, 50, 100], [0.1, 0.3, 0.4], [0, 0.1, 0.1],
    ...                 "gradient-free", gradient_free=True)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_family_panels(curves, os.path.join(tmp, "f.png"))
    ...     os.path.getsize(path) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(curves) if isinstance(curves, Mapping) else {"": list(curves)}
    everything = [c for row in rows.values() for c in row]
    families = [f for f in FAMILIES if any(c.family == f for c in everything)]
    families += sorted({c.family for c in everything} - set(families))
    n = len(families)
    fig, axes = plt.subplots(
        len(rows), n, figsize=(4.2 * n, 4.6 * len(rows)), squeeze=False, sharey=True
    )
    for row_axes, (row_title, row) in zip(axes, rows.items(), strict=True):
        for ax, family in zip(row_axes, families, strict=True):
            _panel(ax, [c for c in row if c.family == family], reference, log_x)
            ax.set_title(f"{family}, {row_title}" if row_title else family)
            ax.set_xlabel(xlabel or FAMILIES.get(family, "evaluations"))
        row_axes[0].set_ylabel(ylabel)
    if log_x and xlabel is None:
        # The gradient-based panels share one cost axis, so that their curves compare.
        counted = [c for c in everything if FAMILIES.get(c.family) == "gradient evaluations"]
        xs = np.concatenate([c.x[c.x > 0] for c in counted]) if counted else np.array([])
        if xs.size:
            for row_axes in axes:
                for ax, family in zip(row_axes, families, strict=True):
                    if FAMILIES.get(family) == "gradient evaluations":
                        ax.set_xlim(xs.min() / 1.2, xs.max() * 1.2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def _panel(
    ax: Any, curves: Sequence[Curve], reference: Mapping[str, float] | None, log_x: bool
) -> None:
    for c in curves:
        keep = c.x > 0 if log_x else np.ones_like(c.x, dtype=bool)  # no zero on a log axis
        style = "--" if c.gradient_free else "-"
        ax.plot(c.x[keep], c.y[keep], style, color=colour(c.method), label=c.method, lw=1.6)
        if c.sd is not None:
            ax.fill_between(
                c.x[keep],
                (c.y - c.sd)[keep],
                (c.y + c.sd)[keep],
                color=colour(c.method),
                alpha=0.2,
                lw=0,
            )
    for label, value in (reference or {}).items():
        ax.axhline(value, color="0.3", ls=":", lw=1)
        ax.annotate(
            label,
            (0.02, value),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="0.3",
            va="bottom",
        )
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(
            fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False
        )
