"""Reporting the experiment: a Table-1-like summary, Figure-4-like plots, ArviZ files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from vi_entropy.experiment.figures import Curve, family_of, plot_family_panels
from vi_entropy.experiment.methods import GRADIENT_FREE, tau_key
from vi_entropy.experiment.results import verdict
from vi_entropy.experiment.run import Config, MethodRun
from vi_entropy.local_entropy import LocalEntropy

__all__ = [
    "as_float_array",
    "config_dict",
    "markdown_table",
    "plain_reading",
    "save_draws",
    "save_figures",
    "summary_rows",
]


def summary_rows(runs: Sequence[MethodRun]) -> list[dict[str, Any]]:
    """Table-1-like rows: final and best test accuracy, evaluations, time per method/τ.

    Parameters
    ----------
    runs : sequence of MethodRun

    Returns
    -------
    list of dict
        Per run: ``method``, ``tau``, ``final_accuracy``, ``best_accuracy`` (over the
        updates, not the initialization), ``final_train_loss``, ``grad_evals``,
        ``forward_evals``, ``wall_time`` and ``seconds_per_update``.

    Example
    -------
    >>> recs = [{"update": u, "test_accuracy": a, "train_loss": 2.0 - u, "grad_evals": u,
    ...          "forward_evals": u, "wall_time": 0.5 * u} for u, a in enumerate([0.1, 0.6, 0.5])]
    >>> row = summary_rows([MethodRun("sgd", 5e-4, recs)])[0]
    >>> row["final_accuracy"], row["best_accuracy"], row["seconds_per_update"]
    (0.5, 0.6, 0.5)
    """
    rows = []
    for r in runs:
        last = r.records[-1]
        rows.append(
            {
                "method": r.method,
                "tau": r.tau,
                "final_accuracy": last["test_accuracy"],
                "best_accuracy": max(x["test_accuracy"] for x in r.records[1:]),
                "final_train_loss": last["train_loss"],
                "grad_evals": last["grad_evals"],
                "forward_evals": last["forward_evals"],
                "wall_time": last["wall_time"],
                "seconds_per_update": last["wall_time"] / last["update"],
            }
        )
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`summary_rows` as a Markdown table (``table.md``).

    Example
    -------
    >>> row = {"method": "sgd", "tau": 5e-4, "final_accuracy": 0.9, "best_accuracy": 0.91,
    ...        "final_train_loss": 0.3, "grad_evals": 100, "forward_evals": 100,
    ...        "wall_time": 1.0, "seconds_per_update": 0.01}
    >>> print(markdown_table([row]).splitlines()[-1])
    | sgd | 0.0005 | 0.900 | 0.910 | 0.300 | 100 | 100 | 1.0 | 0.010 |
    """
    head = (
        "| method | τ | final test acc | best test acc | final train loss | "
        "gradient evals | forward evals | wall time (s) | s / update |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tau']:g} | {r['final_accuracy']:.3f} | "
            f"{r['best_accuracy']:.3f} | {r['final_train_loss']:.3f} | {r['grad_evals']:,} | "
            f"{r['forward_evals']:,} | {r['wall_time']:.1f} | {r['seconds_per_update']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plain_reading(
    rows: Sequence[Mapping[str, Any]], num_test: int, num_classes: int = 10
) -> list[str]:
    """What a run of ``reproduce`` shows, in sentences generated from its rows.

    The best method; the best first-order method (``sgd``, ``adam``, ``sam``) and the best
    evolution strategy; where each local-entropy / heat-regularization method stands
    against them, at what cost (evaluations, time); and the methods that did not train
    (final accuracy within 5 binomial standard errors of chance).  One seed: differences
    within two binomial standard errors of the test accuracy are called *level*.

    Parameters
    ----------
    rows : sequence of dict
        :func:`summary_rows`.
    num_test : int
        Test images (for the binomial standard error).
    num_classes : int, default 10

    Returns
    -------
    list of str

    Example
    -------
    >>> rows = [{"method": m, "tau": 5e-4, "final_accuracy": a, "grad_evals": g,
    ...          "forward_evals": g, "wall_time": 1.0}
    ...         for m, a, g in [("adam", 0.95, 100), ("le-sgld", 0.96, 2000), ("le-sa", 0.1, 0)]]
    >>> for line in plain_reading(rows, 359): print(line)  # doctest: +NORMALIZE_WHITESPACE
    Best: le-sgld (τ = 0.0005), test accuracy 0.960 (one seed, 359 test images: ±0.010).
    Best first-order method: adam, 0.950 at 100 gradient evaluations.
    le-sgld (τ = 0.0005): 0.960, level with adam (+0.010) at 20× its gradient evaluations
      and 1× its time.
    Did not train (within 5 standard errors of chance, 0.100): le-sa (τ = 0.0005) 0.100.
    """
    first_order = {"sgd", "adam", "sam"}

    def label(r: Mapping[str, Any]) -> str:
        return f"{r['method']} (τ = {r['tau']:g})"

    def se(p: float) -> float:
        return (max(p * (1 - p), 1e-12) / num_test) ** 0.5

    def versus(r: Mapping[str, Any], b: Mapping[str, Any], unit: str) -> str:
        diff = r["final_accuracy"] - b["final_accuracy"]
        word = verdict(diff, math.hypot(se(r["final_accuracy"]), se(b["final_accuracy"])))
        ratio = r[unit] / max(b[unit], 1)
        unit_name = "gradient" if unit == "grad_evals" else "forward"
        return (
            f"{word} {b['method']} ({diff:+.3f}) at {ratio:.0f}× its {unit_name} evaluations "
            f"and {r['wall_time'] / max(b['wall_time'], 1e-9):.0f}× its time"
        )

    chance = 1.0 / num_classes
    floor = chance + 5 * se(chance)
    trained = [r for r in rows if r["final_accuracy"] > floor]
    out = []
    if trained:
        top = max(trained, key=lambda r: r["final_accuracy"])
        out.append(
            f"Best: {label(top)}, test accuracy {top['final_accuracy']:.3f} (one seed, "
            f"{num_test} test images: ±{se(top['final_accuracy']):.3f})."
        )
    fo = [r for r in trained if r["method"] in first_order]
    es = [r for r in trained if r["method"].startswith("es-")]
    best_fo = max(fo, key=lambda r: r["final_accuracy"]) if fo else None
    best_es = max(es, key=lambda r: r["final_accuracy"]) if es else None
    if best_fo:
        out.append(
            f"Best first-order method: {best_fo['method']}, {best_fo['final_accuracy']:.3f} at "
            f"{best_fo['grad_evals']:,} gradient evaluations."
        )
    if best_es:
        out.append(
            f"Best evolution strategy: {best_es['method']}, {best_es['final_accuracy']:.3f} at "
            f"{best_es['forward_evals']:,} forward evaluations."
        )
    ours = [r for r in trained if r["method"].startswith(("le-", "hr-"))]
    for r in sorted(ours, key=lambda r: -r["final_accuracy"]):
        parts = []
        if r["grad_evals"] > 0 and best_fo:
            parts.append(versus(r, best_fo, "grad_evals"))
        if r["grad_evals"] == 0 and best_es:
            parts.append(versus(r, best_es, "forward_evals"))
        out.append(
            f"{label(r)}: {r['final_accuracy']:.3f}"
            + (", " if parts else "")
            + "; ".join(parts)
            + "."
        )
    failed = [r for r in rows if r["final_accuracy"] <= floor]
    if failed:
        out.append(
            f"Did not train (within 5 standard errors of chance, {chance:.3f}): "
            + ", ".join(f"{label(r)} {r['final_accuracy']:.3f}" for r in failed)
            + "."
        )
    return out


def config_dict(config: Config) -> dict[str, Any]:
    """``config`` as a JSON-serializable dict (tuples become lists)."""
    d = asdict(config)
    d["hidden"] = list(config.hidden)
    d["methods"] = list(config.methods)
    d["taus"] = list(config.taus)
    return d


def as_float_array(records: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """``records[i][key]`` for every record, as a float array."""
    return np.asarray([r[key] for r in records], dtype=float)


def save_figures(runs: Sequence[MethodRun], out_dir: Any) -> list[str]:
    """Figure-4-like plots: test accuracy against updates and against evaluations.

    Drawn by :func:`~vi_entropy.experiment.figures.plot_family_panels`, as the
    benchmark's figures are: one panel per family of methods (first-order, local entropy,
    heat regularization, gradient-free), one row per ``τ``, one colour per method in every
    figure, gradient-free methods dashed, legends outside the data.  The cost figure's
    x-axis is gradient evaluations for the gradient-based panels and forward evaluations
    for the gradient-free one (log axes that start at the first update).

    Parameters
    ----------
    runs : sequence of MethodRun
    out_dir : str or path
        Existing directory to write the PNG files into.

    Returns
    -------
    list of str
        ``["accuracy_vs_updates.png", "accuracy_vs_evaluations.png"]``.

    Example
    -------
    >>> import tempfile
    >>> recs = [{"update": u, "test_accuracy": 0.1 * u, "grad_evals": u, "forward_evals": u}
    ...         for u in range(3)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_figures([MethodRun("sgd", 5e-4, recs)], tmp)
    ['accuracy_vs_updates.png', 'accuracy_vs_evaluations.png']
    """
    names = ["accuracy_vs_updates.png", "accuracy_vs_evaluations.png"]
    for name, by_cost in zip(names, (False, True), strict=True):
        rows = {
            f"τ = {tau:g}": [_curve(r, by_cost) for r in runs if r.tau == tau]
            for tau in sorted({r.tau for r in runs})
        }
        plot_family_panels(
            rows,
            f"{out_dir}/{name}",
            xlabel=None if by_cost else "update",
            log_x=by_cost,
        )
    return names


def _curve(run: MethodRun, by_cost: bool) -> Curve:
    """Test accuracy against updates, or against the evaluations that count for ``run``."""
    free = run.method in GRADIENT_FREE
    key = "update" if not by_cost else ("forward_evals" if free else "grad_evals")
    x = as_float_array(run.records, key)
    acc = as_float_array(run.records, "test_accuracy")
    return Curve(run.method, x, acc, None, family_of(run.method, free), free)


def save_draws(runs: Sequence[MethodRun], out_dir: Any) -> list[str]:
    """ArviZ netcdf of the last outer step's inner draws of each local-entropy run.

    Parameters
    ----------
    runs : sequence of MethodRun
        Runs of other methods are skipped.
    out_dir : str or path
        Existing directory; files are named ``draws_<method>_tau<τ>.nc``.

    Returns
    -------
    list of str
        The file names written.

    Example
    -------
    >>> import tempfile
    >>> from vi_entropy.data import load_digits
    >>> from vi_entropy.experiment import Config, complete_settings, run_experiment
    >>> config = complete_settings(Config(methods=("sgd", "le-sgld"), hidden=(4,), updates=2))
    >>> runs = run_experiment(config, load_digits(), progress=False, log=lambda line: None)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     save_draws(runs, tmp)
    ['draws_le-sgld_tau0.0005.nc']
    """
    from vi_entropy.arviz import to_inference_data

    names = []
    for r in runs:
        if not isinstance(r.scheme, LocalEntropy) or r.last_result is None:
            continue
        idata = to_inference_data(
            r.last_result, r.scheme, model_args=r.model_args, model_kwargs=r.model_kwargs
        )
        name = f"draws_{r.method}_tau{tau_key(r.tau)}.nc"
        idata.to_netcdf(f"{out_dir}/{name}")
        names.append(name)
    return names
