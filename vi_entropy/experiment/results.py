"""The benchmark's results page, generated from its committed ``runs.jsonl`` and ``summary.json``.

``vi-entropy results DIR [DIR ...] --page docs/results.md --figures docs/_static`` reads
each benchmark directory (written by ``vi-entropy benchmark``) and writes one Markdown
page: per benchmark the protocol and its cost, a plain reading generated from the
figures (which method to pick, where local entropy or heat regularization earns its cost
and where it does not), a table of mean ± sd over the final seeds for every metric, the
figure of test accuracy against evaluations with seed bands, and every method's search.
Nothing on the page is typed by hand but a directory's ``notes.md``, committed beside
its runs for what the files alone do not say (measurements made outside the protocol,
what was tried); rerun the command after the benchmark.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vi_entropy.experiment.figures import Curve, family_of, plot_family_panels

__all__ = [
    "benchmark_command",
    "grid_edges",
    "load_benchmark",
    "plain_reading",
    "render_page",
    "verdict",
    "write_page",
]

# Columns of the table: summary key, heading, format.
_COLUMNS = (
    ("test_accuracy", "test accuracy", ".3f"),
    ("test_nll", "test NLL", ".3f"),
    ("test_ece", "test ECE", ".3f"),
    ("hessian_top_eig", "Hessian top eig.", ".2f"),
    ("f_tau_gap", "f_τ − f", ".3f"),
    ("train_loss", "train loss", ".3f"),
    ("grad_evals", "gradient evals", ",.0f"),
    ("forward_evals", "forward evals", ",.0f"),
    ("wall_s", "wall s", ".0f"),
)


def load_benchmark(directory: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(runs, summary)`` of a benchmark directory."""
    directory = Path(directory)
    runs = [
        json.loads(line)
        for line in (directory / "runs.jsonl").read_text().splitlines()
        if line.strip()
    ]
    summary = json.loads((directory / "summary.json").read_text())
    return runs, summary


def _se(entry: Mapping[str, Any], metric: str, n: int) -> float:
    return entry[metric]["sd"] / math.sqrt(max(n, 1))


def _pm(entry: Mapping[str, Any], metric: str, fmt: str) -> str:
    m = entry[metric]
    if m["sd"] == 0 and metric in ("grad_evals", "forward_evals"):
        return format(m["mean"], fmt)
    return f"{format(m['mean'], fmt)} ± {format(m['sd'], fmt)}"


def _setting(setting: Mapping[str, Any]) -> str:
    return (
        ", ".join(
            f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in setting.items()
        )
        or "(none)"
    )


def _best(methods: Mapping[str, Any], names: Sequence[str]) -> str | None:
    names = [n for n in names if n in methods]
    return max(names, key=lambda n: methods[n]["test_accuracy"]["mean"]) if names else None


def _significant(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> tuple[float, float]:
    """``(Δ, se)``: the difference of the means of ``metric``, ``a − b``, and its standard
    error (each side's sd over seeds / √n).

    Example
    -------
    >>> a = {"test_accuracy": {"mean": 0.9, "sd": 0.01}, "seeds": [1, 2, 3, 4]}
    >>> b = {"test_accuracy": {"mean": 0.8, "sd": 0.02}, "seeds": [1, 2, 3, 4]}
    >>> [round(x, 4) for x in _significant(a, b, "test_accuracy")]
    [0.1, 0.0112]
    """
    diff = a[metric]["mean"] - b[metric]["mean"]
    se = math.hypot(_se(a, metric, len(a["seeds"])), _se(b, metric, len(b["seeds"])))
    return diff, se


def verdict(diff: float, se: float) -> str:
    """``ahead of``/``behind`` when a difference exceeds two standard errors, else
    ``level with`` (the results page's and the demo's readings).

    Example
    -------
    >>> verdict(0.03, 0.01), verdict(-0.01, 0.01)
    ('ahead of', 'level with')
    """
    if diff > 2 * se:
        return "ahead of"
    if diff < -2 * se:
        return "behind"
    return "level with"


def _lower(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> str:
    """``"lower"``/``"higher"`` when ``a``'s mean differs from ``b``'s by over 2 SE, else
    ``"level"``."""
    diff, se = _significant(a, b, metric)
    return "lower" if diff < -2 * se else "higher" if diff > 2 * se else "level"


def plain_reading(summary: Mapping[str, Any], target_ratio: float = 20.0) -> list[str]:
    """Sentences that read the benchmark: the best method, LE/HR against the baselines.

    A difference of means counts when it exceeds two standard errors of the difference
    (each side's sd over seeds / √n); otherwise the two are *level*.  Each local-entropy
    and heat-regularization method is compared (1) at equal updates with the best
    first-order method, and (2) at about equal gradient evaluations with the first-order
    methods given 20× the updates (``adam-20x``).  The target of the benchmark - level
    with the best tuned Adam or SAM in test accuracy, within ``target_ratio`` × its
    gradient evaluations, with a lower NLL or ECE and a lower top Hessian eigenvalue - is
    judged on those same rules.

    Parameters
    ----------
    summary : dict
        ``summary.json`` of a benchmark.
    target_ratio : float, default 20

    Returns
    -------
    list of str
        Markdown bullet texts.
    """
    methods = summary["methods"]
    top = max(methods, key=lambda n: methods[n]["test_accuracy"]["mean"])
    cost = (
        f"{_forwards(methods, top)} forward evaluations and no gradient"
        if methods[top].get("gradient_free")
        else f"{_grads(methods, top)} gradient evaluations"
    )
    out = [
        f"**Best mean test accuracy: `{top}`**, {_acc(methods, top)} over "
        f"{len(methods[top]['seeds'])} seeds, at {cost} "
        f"({methods[top]['wall_s']['mean']:.0f} s of training a run)."
    ]
    equal_updates = [n for n in methods if methods[n]["family"] == "first-order"]
    long = [n for n in methods if methods[n]["family"] == "first-order, 20× gradients"]
    base = _best(methods, equal_updates)
    base_long = _best(methods, long)
    target = _best(methods, [n for n in equal_updates if n.startswith(("adam", "sam"))])
    if base is not None:
        out.append(
            f"Best first-order method at the benchmark's updates: `{base}`, "
            f"{_acc(methods, base)} at {_grads(methods, base)} gradient evaluations"
            + (
                f"; the best Adam or SAM: `{target}`, {_acc(methods, target)}"
                if target not in (None, base)
                else ""
            )
            + (
                f". Given the LE/HR methods' gradient evaluations, `{base_long}` reaches "
                f"{_acc(methods, base_long)} ({_grads(methods, base_long)})."
                if base_long
                else "."
            )
        )
    ours = [n for n in methods if methods[n]["family"] in ("local entropy", "heat regularization")]
    ours.sort(key=lambda n: -methods[n]["test_accuracy"]["mean"])
    out += [_standing(methods, name, base, base_long) for name in ours]
    if target is not None and ours:
        out += _target_reading(methods, ours, target, target_ratio)
    edges = [f"`{n}` ({why})" for n in methods for why in grid_edges(methods[n])]
    if edges:
        out.append(
            "Chosen at the end of a searched range of three or more values, so the best "
            "setting may lie beyond it: " + "; ".join(edges) + "."
        )
    free = [n for n in methods if methods[n]["family"] == "gradient-free"]
    if free:
        best_free = _best(methods, free)
        out.append(
            f"Best gradient-free method: `{best_free}`, {_acc(methods, best_free)}, at "
            f"{_forwards(methods, best_free)} forward evaluations."
        )
        out += _gradient_free_reading(methods, free)
    return out


def _forwards(methods: Mapping[str, Any], name: str) -> str:
    return f"{methods[name]['forward_evals']['mean']:,.0f}"


def _gradient_free_reading(methods: Mapping[str, Any], free: Sequence[str]) -> list[str]:
    """The best local-entropy method without gradients against the best evolution
    strategy, at their forward evaluations."""
    le = _best(methods, [n for n in free if n.startswith("le-")])
    es = _best(methods, [n for n in free if n.startswith("es-")])
    if le is None or es is None:
        return []
    a, b = methods[le], methods[es]
    diff, se = _significant(a, b, "test_accuracy")
    ratio = a["forward_evals"]["mean"] / max(b["forward_evals"]["mean"], 1.0)
    return [
        f"Local entropy without gradients against the evolution strategies: `{le}` "
        f"({_acc(methods, le)}) is {verdict(diff, se)} `{es}` ({_acc(methods, es)}), "
        f"{diff:+.3f} ± {se:.3f}, at {ratio:.2f}× its forward evaluations and "
        f"{a['wall_s']['mean'] / max(b['wall_s']['mean'], 1e-9):.1f}× its time."
    ]


def _acc(methods: Mapping[str, Any], name: str) -> str:
    return _pm(methods[name], "test_accuracy", ".3f")


def _grads(methods: Mapping[str, Any], name: str) -> str:
    return f"{methods[name]['grad_evals']['mean']:,.0f}"


def _standing(
    methods: Mapping[str, Any], name: str, base: str | None, base_long: str | None
) -> str:
    """Where an LE/HR method stands: at equal updates against ``base``, at equal gradient
    evaluations against ``base_long`` (accuracy, NLL, ECE, flatness)."""
    m = methods[name]
    parts = [f"`{name}` {m['test_accuracy']['mean']:.3f}"]
    if base is not None:
        b = methods[base]
        diff, se = _significant(m, b, "test_accuracy")
        ratio = m["grad_evals"]["mean"] / max(b["grad_evals"]["mean"], 1.0)
        parts.append(
            f"{verdict(diff, se)} `{base}` at equal updates ({diff:+.3f} ± {se:.3f}) "
            f"for {ratio:.0f}× its gradient evaluations and "
            f"{m['wall_s']['mean'] / max(b['wall_s']['mean'], 1e-9):.0f}× its time"
        )
    if base_long is not None:
        b = methods[base_long]
        diff, se = _significant(m, b, "test_accuracy")
        parts.append(
            f"{verdict(diff, se)} `{base_long}` at "
            f"{m['grad_evals']['mean'] / max(b['grad_evals']['mean'], 1.0):.1f}× its "
            f"gradient evaluations ({diff:+.3f} ± {se:.3f}); against it NLL "
            f"{m['test_nll']['mean']:.3f} vs {b['test_nll']['mean']:.3f} "
            f"({_lower(m, b, 'test_nll')}), ECE {m['test_ece']['mean']:.3f} vs "
            f"{b['test_ece']['mean']:.3f} ({_lower(m, b, 'test_ece')}), top Hessian "
            f"eigenvalue {m['hessian_top_eig']['mean']:.2f} vs "
            f"{b['hessian_top_eig']['mean']:.2f} ({_lower(m, b, 'hessian_top_eig')})"
        )
    return "; ".join(parts) + "."


def _shortfalls(m: Mapping[str, Any], t: Mapping[str, Any], target_ratio: float) -> list[str]:
    """What keeps method ``m`` from the target against ``t`` (empty: the target is met)."""
    diff, se = _significant(m, t, "test_accuracy")
    shortfalls = []
    if verdict(diff, se) == "behind":
        shortfalls.append(f"accuracy {diff:+.3f} ± {se:.3f}")
    if m["grad_evals"]["mean"] > target_ratio * t["grad_evals"]["mean"]:
        shortfalls.append("more gradient evaluations")
    if "lower" not in (_lower(m, t, "test_nll"), _lower(m, t, "test_ece")):
        shortfalls.append("NLL and ECE not lower")
    if _lower(m, t, "hessian_top_eig") != "lower":
        shortfalls.append(
            f"top Hessian eigenvalue {m['hessian_top_eig']['mean']:.2f} not below "
            f"{t['hessian_top_eig']['mean']:.2f}"
        )
    return shortfalls


def _target_reading(
    methods: Mapping[str, Any], ours: Sequence[str], target: str, target_ratio: float
) -> list[str]:
    """The target's verdict, with each method's shortfalls named."""
    missed = [(n, _shortfalls(methods[n], methods[target], target_ratio)) for n in ours]
    met = [n for n, why in missed if not why]
    missed = [(n, why) for n, why in missed if why]
    out = []
    if met:
        out.append(
            f"**Target met** by {', '.join(f'`{n}`' for n in met)}: level with or ahead of "
            f"`{target}` (the best tuned Adam or SAM) in test accuracy, within "
            f"{target_ratio:.0f}× its gradient evaluations, with a lower NLL or ECE and a "
            "lower top Hessian eigenvalue."
        )
    if missed:
        out.append(
            f"**Target {'also ' if met else ''}not met** against `{target}` by: "
            + "; ".join(f"`{n}` ({', '.join(why)})" for n, why in missed)
            + "."
        )
    return out


def grid_edges(entry: Mapping[str, Any]) -> list[str]:
    """The knobs of a method's chosen setting that sit at an end of a searched range of
    three or more values.

    Example
    -------
    >>> search = [{"setting": {"lr": v}} for v in (1, 2, 4)]
    >>> grid_edges({"chosen": {"lr": 4}, "search": search})
    ['lr = 4, the largest of 3']
    >>> grid_edges({"chosen": {"lr": 2}, "search": search})
    []
    """
    out = []
    for knob, value in entry["chosen"].items():
        values = sorted({row["setting"][knob] for row in entry["search"] if knob in row["setting"]})
        if len(values) < 3 or not isinstance(value, (int, float)):
            continue
        if value in (values[0], values[-1]):
            end = "largest" if value == values[-1] else "smallest"
            out.append(f"{knob} = {value:g}, the {end} of {len(values)}")
    return out


def _curves(runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[Curve]:
    """Mean and sd over the final seeds of each method's test-accuracy curve."""
    curves = []
    for name, entry in summary["methods"].items():
        finals = [r for r in runs if r["method"] == name and r["phase"] == "final"]
        arrays = [np.asarray(r["curve"], dtype=float) for r in finals if r.get("curve")]
        if not arrays:
            continue
        length = min(len(a) for a in arrays)
        stack = np.stack([a[:length] for a in arrays])
        free = bool(entry.get("gradient_free"))
        x = stack[0, :, 2 if free else 1]  # forward or gradient evaluations
        y = stack[:, :, 3]
        curves.append(
            Curve(
                name,
                x,
                y.mean(0),
                y.std(0, ddof=1) if len(y) > 1 else None,
                family_of(name, free),
                free,
            )
        )
    return curves


def _search_table(summary: Mapping[str, Any]) -> list[str]:
    lines = ["| method | setting | validation accuracy | |", "|---|---|---|---|"]
    for name, entry in summary["methods"].items():
        for row in entry["search"]:
            chosen = row["setting"] == entry["chosen"]
            note = "chosen" if chosen else ""
            if row.get("stopped_early"):
                note = (note + "; " if note else "") + "stopped early"
            lines.append(
                f"| {name} | {_setting(row['setting'])} | "
                f"{'**' if chosen else ''}{row['validation_accuracy']:.3f}"
                f"{'**' if chosen else ''} | {note} |"
            )
    return lines


def _figure(runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: Path) -> None:
    """The figure: accuracy curves by family, with the best first-order methods' finals."""
    methods = summary["methods"]
    references = {}
    for family in ("first-order", "first-order, 20× gradients"):
        best = _best(methods, [n for n in methods if methods[n]["family"] == family])
        if best is not None:
            references[f"{best} (final)"] = methods[best]["test_accuracy"]["mean"]
    plot_family_panels(
        _curves(runs, summary),
        path,
        title=f"{summary['data']['name']}: test accuracy, mean ± sd over seeds",
        reference=references,
    )


def _table_order(methods: Mapping[str, Any]) -> list[str]:
    """By family, then by mean test accuracy."""

    def key(n: str) -> tuple[int, float]:
        family = methods[n]["family"]
        rank = _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER)
        return rank, -methods[n]["test_accuracy"]["mean"]

    return sorted(methods, key=key)


def _table_rows(methods: Mapping[str, Any], order: Sequence[str]) -> list[str]:
    rows = []
    for n in order:
        e = methods[n]
        cells = [_pm(e, key, fmt) for key, _, fmt in _COLUMNS]
        stopped = f" ({e['stopped_early']} stopped early)" if e.get("stopped_early") else ""
        rows.append(f"| `{n}`{stopped} | {_setting(e['chosen'])} | " + " | ".join(cells) + " |")
    return rows


def _notes(directory: Path) -> list[str]:
    """``notes.md`` of a benchmark directory (committed beside its runs: what the files
    alone do not say, such as measurements made outside the protocol), as a section."""
    path = directory / "notes.md"
    if not path.is_file():
        return []
    return ["### Notes", "", path.read_text().strip(), ""]


def render_benchmark(
    directory: str | Path, figures: str | Path, link: str, command: str | None = None
) -> str:
    """The Markdown section of one benchmark; its figure is written into ``figures``."""
    runs, summary = load_benchmark(directory)
    data, config, methods = summary["data"], summary["config"], summary["methods"]
    name = Path(directory).name
    figure = Path(figures) / f"{name}_accuracy.png"
    _figure(runs, summary, figure)
    seeds = sorted({len(e["seeds"]) for e in methods.values()})
    machine = summary.get("machine", {})
    if config.get("network", "dense") == "cnn":
        network = (
            "convolutional (two 5 × 5 convolutions of 8 and 16 channels, ReLU and 2 × 2 "
            "max pooling each, a dense head)"
        )
    else:
        network = f"dense {config['hidden']} hidden tanh units"
    lines = [
        f"## {name}",
        "",
        f"Data: {data['name']}, {data['train']:,} training, {data['validation']:,} validation "
        f"(held out of the training images, seed 0) and {data['test']:,} test images. "
        f"Network: {network}, softmax likelihood, N(0, 1) priors; "
        f"{config['updates']} updates of mini-batches of {config['batch_size']}. Each method "
        f"searched {len(next(iter(methods.values()))['search'])} settings by validation "
        f"accuracy (seed {config['search_seed']}), then ran the chosen one with "
        f"{'/'.join(map(str, seeds))} fresh seeds (seeds {', '.join(map(str, next(iter(methods.values()))['seeds']))}).",
        "",
    ]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [
        f"{summary.get('runs', len(runs))} runs, {summary.get('elapsed_s', 0) / 60:.0f} minutes "
        f"in all on {machine.get('cpu', 'an unrecorded machine')} ({machine.get('cores', '?')} "
        f"cores, {', '.join(machine.get('devices', [])) or 'CPU'}; jax {machine.get('jax', '?')}). "
        f"Files: [`runs.jsonl`]({link}/runs.jsonl), [`summary.json`]({link}/summary.json).",
        "",
        "### Plain reading",
        "",
        *[f"- {s}" for s in plain_reading(summary)],
        "",
        *_notes(Path(directory)),
        "### Table",
        "",
        "Mean ± sd over the final seeds. NLL and ECE (15 bins) on the test set; the top "
        "eigenvalue of the Hessian of the training loss (mean cross-entropy on a fixed "
        f"{config['metric_train_size']:,}-image training subset, {config['hessian_iters']} "
        "power iterations) and `f_τ − f`, the rise of that loss under Gaussian perturbations "
        f"of variance τ = {config['flatness_tau']:g} ({config['flatness_samples']} draws), "
        "measure flatness: lower is flatter. Wall seconds: the training alone.",
        "",
        "| method | chosen setting | " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
        "|---|---|" + "---|" * len(_COLUMNS),
    ]
    order = _table_order(methods)
    lines += _table_rows(methods, order)
    lines += [
        "",
        f"![test accuracy against evaluations]({FIGURES}/{figure.name})",
        "",
        "Test accuracy against cumulative gradient evaluations (forward evaluations in the "
        "gradient-free panel), one panel per family, mean over the final seeds with a ±sd "
        "band; the dotted lines, where there are first-order methods, are the final "
        "accuracies of the best one at the benchmark's updates and at 20× its gradients.",
        "",
        "### Methods",
        "",
        *[f"- `{n}`: {methods[n].get('about', '')}" for n in order],
        "",
        "### Searches",
        "",
        "Validation accuracy of every setting searched (one run each, search seed); the "
        "chosen setting in bold. The grids are in `vi_entropy/experiment/methods.py`, beside "
        "the methods.",
        "",
        *_search_table(summary),
        "",
    ]
    return "\n".join(lines)


#: Where the figures go, relative to the page (generated, not committed).
FIGURES = "_static/generated"
_FAMILY_ORDER = (
    "first-order",
    "first-order, 20× gradients",
    "local entropy",
    "heat regularization",
    "gradient-free",
)

_INTRO = """\
# Results: a tuned, seeded benchmark

Generated by `vi-entropy results` from the benchmark files under `docs/results/`; do not
edit by hand. The benchmark (`vi-entropy benchmark`) tunes every method on a validation
split with the same number of settings, then reruns the chosen setting with fresh seeds,
and measures accuracy, calibration (negative log-likelihood, 15-bin expected calibration
error), flatness (top Hessian eigenvalue, the rise of the loss under perturbations) and
cost (gradient and forward evaluations, wall time). Its protocol is in
{doc}`benchmarks <benchmarks>` and in `vi_entropy/experiment/benchmark.py`.

**How Entropy-SGD maps onto the package** (`entropy-sgd` below): Chaudhari et al. run
L = 20 Langevin steps `x' ← x' − η'(∇f̄(x') + γ(x' − x)) + √η' ε ξ` on the mean loss `f̄`,
an exponential average `μ ← αμ + (1 − α)x'` (α = 0.75), then the outer step
`x ← x − η γ (x − μ)` with Nesterov momentum, and grow γ by `γ_k = γ_0 (1 + γ_1)^k`
(scoping). Here the loss is the summed potential `f = N f̄` (plus the prior), so:
`LocalEntropy(model, tau, sampler="sgld", num_samples=20, averaging="exponential",
ema_decay=0.75, sampler_kwargs={"step_size": η'/N, "noise_scale": ε'},
outer_optim=optax.sgd(lr, momentum=0.9, nesterov=True))` with γ = 1/(Nτ), scoping as the
τ schedule `τ_k = τ_0 (1 + γ_1)^(−k)` (`optax.exponential_decay`), and the outer step
`lr (x − μ)/τ`, i.e. `lr = η/N`. The thermal noise is small (`noise_scale` 0.01 here,
against 1 for the tilted posterior itself in `le-sgld`).

The mnist5k reproduction of the paper's own experiment is on {doc}`its own page
<results_mnist5k>`.
"""


def benchmark_command(config: Mapping[str, Any], out: str) -> str:
    """The ``vi-entropy benchmark`` command that reruns (or resumes) a benchmark.

    Example
    -------
    >>> from vi_entropy.experiment.benchmark import BenchmarkConfig
    >>> from dataclasses import asdict
    >>> benchmark_command(asdict(BenchmarkConfig(dataset="mnist5k", num_validation=1000,
    ...     methods=("le-pcn", "es-snes"))), "docs/results/x")
    'vi-entropy benchmark --dataset mnist5k --validation 1000 --methods le-pcn,es-snes --seeds 3 --out docs/results/x'
    """
    from vi_entropy.experiment.benchmark import BenchmarkConfig
    from vi_entropy.experiment.methods import BENCHMARK_METHODS

    default = BenchmarkConfig()
    parts = ["vi-entropy benchmark", f"--dataset {config['dataset']}"]
    if config.get("network", "dense") != "dense":
        parts.append(f"--network {config['network']}")
    if tuple(config["hidden"]) != default.hidden and config.get("network", "dense") == "dense":
        parts.append("--hidden " + " ".join(map(str, config["hidden"])))
    for key, flag in (("updates", "--updates"), ("batch_size", "--batch-size"),
                      ("num_validation", "--validation")):  # fmt: skip
        if config[key] != getattr(default, key):
            parts.append(f"{flag} {config[key]}")
    if tuple(config["methods"]) != BENCHMARK_METHODS:
        parts.append("--methods " + ",".join(config["methods"]))
    parts += [f"--seeds {config['num_seeds']}", f"--out {out}"]
    return " ".join(parts)


def render_page(
    directories: Sequence[str | Path], figures: str | Path, root: str | Path = "docs"
) -> str:
    """The whole results page for these benchmark directories."""
    sections = [_INTRO]
    for d in directories:
        link = Path(os.path.relpath(Path(d).resolve(), Path(root).resolve())).as_posix()
        out = f"{Path(root).resolve().name}/{link}"
        config = load_benchmark(d)[1]["config"]
        sections.append(render_benchmark(d, figures, link, command=benchmark_command(config, out)))
    return "\n".join(sections)


def write_page(
    directories: Sequence[str | Path], page: str | Path, figures: str | Path | None = None
) -> str:
    """Write :func:`render_page` to ``page``; its figures go to ``figures`` (default
    ``_static/generated`` beside the page, which the docs build also fills)."""
    page = Path(page)
    figures = Path(figures) if figures is not None else page.parent / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    text = render_page(directories, figures, root=page.parent)
    page.write_text(text)
    return str(page)
