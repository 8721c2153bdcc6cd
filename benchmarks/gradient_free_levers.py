"""Levers on gradient-free local entropy: what each one does to LE-pCN at a fixed budget.

Every variant is ``le-pcn`` of the benchmark (``vi-entropy benchmark``) with one knob
changed, trained by the benchmark's own run (same data split, network, metrics and
seeds), at the same forward evaluations per update (162, the evolution strategies'
population) unless the variant is about the budget:

* **chains**: the 162 evaluations spent as 2 × 80, 6 × 26, 18 × 8 or 54 × 2
  (chains × transitions; the chains' states carry over from one outer step to the next);
* **outer momentum**: SGD with Nesterov momentum 0.9 on the LE direction ``(x_k − m_k)/τ``
  at learning rate ``c·τ`` (``c = 1`` is plain LE when the momentum is 0);
* **τ schedule**: ``τ`` decaying geometrically from its first value to a tenth;
* **τ**: the base at another ``τ``;
* **antithetic pairs**: ``PCN(antithetic=True)``, one pair of mirrored chains (its
  midpoint as the draw) × 80 transitions, 2 evaluations each;
* **acceptance**: pCN's ``ρ`` adapted to a target acceptance of 0.1 or 0.5 instead of
  0.25 (bolder or more cautious moves per transition);
* **adapted reference**: ``PCN(adapt_reference=a)``, the proposal preconditioned by a
  diagonal reference covariance that moves a fraction ``a`` of the way to each chain's
  draws' spread per coordinate at every outer step.

Each variant runs with ``--seeds`` seeds; the JSON holds every run and the mean and
standard deviation of the test and validation accuracy per variant.

    python benchmarks/gradient_free_levers.py              # mnist5k, 500 updates, 3 seeds
    python benchmarks/gradient_free_levers.py --quick      # digits, tiny (seconds)
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from _common import RESULTS, parser, print_table, write_json

#: name -> the knobs of ``le-pcn`` (a grid point of the benchmark).
VARIANTS: dict[str, dict[str, Any]] = {
    "base 2x80": {"tau": 1e-4},
    "chains 6x26": {"tau": 1e-4, "num_chains": 6, "num_samples": 26},
    "chains 18x8": {"tau": 1e-4, "num_chains": 18, "num_samples": 8},
    "chains 54x2": {"tau": 1e-4, "num_chains": 54, "num_samples": 2},
    "momentum 0.9, lr tau": {
        "tau": 1e-4,
        "outer_optimizer": "sgd",
        "outer_learning_rate_per_tau": 1.0,
        "outer_momentum": 0.9,
    },
    "momentum 0.9, lr 0.3 tau": {
        "tau": 1e-4,
        "outer_optimizer": "sgd",
        "outer_learning_rate_per_tau": 0.3,
        "outer_momentum": 0.9,
    },
    "tau 3e-4": {"tau": 3e-4},
    "tau 3e-4 to 3e-5": {"tau": 3e-4, "tau_final": 3e-5},
    "accept 0.1": {"tau": 1e-4, "target_accept_prob": 0.1},
    "accept 0.5": {"tau": 1e-4, "target_accept_prob": 0.5},
    "antithetic 1x80": {"tau": 1e-4, "num_chains": 1, "antithetic": True},
    "adapted reference 0.1": {"tau": 1e-4, "adapt_reference": 0.1},
    "adapted reference 0.5": {"tau": 1e-4, "adapt_reference": 0.5},
}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", default=None, help="mnist5k (--quick: digits)")
    p.add_argument("--variants", nargs="+", default=None, help=f"of {list(VARIANTS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (1 2 3)")
    p.add_argument("--updates", type=int, default=None, help="updates a run (500)")
    a = p.parse_args(argv)

    from jax import numpy as jnp

    from vi_entropy.data import load_dataset, validation_split
    from vi_entropy.experiment.benchmark import BenchmarkConfig, _Evaluator, _train, quick_config
    from vi_entropy.models import dense_network

    if a.quick:
        config = quick_config(methods=("le-pcn",))
    else:
        config = BenchmarkConfig(
            dataset=a.dataset or "mnist5k",
            methods=("le-pcn",),
            updates=a.updates or 500,
            num_validation=1000,
        )
    variants = a.variants or (list(VARIANTS)[:2] if a.quick else list(VARIANTS))
    seeds = a.seeds or ([1] if a.quick else [1, 2, 3])
    out = a.out or RESULTS / f"gradient_free_levers{'-quick' if a.quick else ''}.json"
    runs: list[dict[str, Any]] = []
    if out.exists() and not a.quick:  # resume: keep the runs already measured
        runs = json.loads(out.read_text())["runs"]
    done = {(r["variant"], r["seed"]) for r in runs}

    data = load_dataset(config.dataset)
    train, validation = validation_split(data, config.num_validation, seed=0)
    model = dense_network(train.num_features, config.hidden, train.num_classes)
    evaluator = _Evaluator(config, train, validation)
    arrays = (jnp.asarray(train.X_train), jnp.asarray(train.y_train))
    for name in variants:
        for seed in seeds:
            if (name, seed) in done:
                continue
            run = _train("le-pcn", VARIANTS[name], seed, config, arrays, model, evaluator)
            row = {
                "variant": name,
                "seed": seed,
                **{k: run[k] for k in ("setting", "settings", "tau", "updates")},
                **{
                    k: run[k]
                    for k in (
                        "validation_accuracy",
                        "test_accuracy",
                        "train_loss",
                        "forward_evals",
                        "wall_s",
                        "stopped_early",
                        "warnings",
                    )
                },
            }
            runs.append(row)
            print(
                f"{name} seed {seed}: validation {row['validation_accuracy']:.3f}, "
                f"test {row['test_accuracy']:.3f} ({row['wall_s']:.0f} s)",
                flush=True,
            )
            _write(out, config, runs, a.quick, quiet=True)
    rows = _write(out, config, runs, a.quick)
    print_table(rows)


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        row: dict[str, Any] = {"variant": name, "seeds": len(mine)}
        for metric in ("validation_accuracy", "test_accuracy", "train_loss"):
            values = [r[metric] for r in mine]
            row[metric] = statistics.fmean(values)
            row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["forward_evals"] = mine[0]["forward_evals"]
        row["wall_s"] = statistics.fmean(r["wall_s"] for r in mine)
        rows.append(row)
    return rows


def _write(
    out: Any, config: Any, runs: list[dict[str, Any]], quick: bool, quiet: bool = False
) -> list[dict[str, Any]]:
    rows = _summary(runs)
    write_json(
        "gradient_free_levers",
        {
            "dataset": config.dataset,
            "hidden": list(config.hidden),
            "updates": config.updates,
            "num_validation": config.num_validation,
            "rows": rows,
            "runs": runs,
        },
        out,
        quick,
        quiet,
    )
    return rows


if __name__ == "__main__":
    main()
