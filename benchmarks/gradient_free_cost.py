"""Cost per forward evaluation: local entropy by pCN against evosax's strategies.

At equal forward evaluations per update (le-pcn's 2 chains × 81 = 162, the strategies'
population), each method's update is built by the benchmark's own trainers
(``vi-entropy benchmark``'s ``le-pcn``, ``le-slice``, ``es-openes``, ``es-snes``,
``es-pgpe``, ``es-sep-cma``), compiled and warmed up, then timed in turn (A, B, C, ...,
repeated) over ``--updates`` updates on the same network and mini-batch size.  Reported
per method: seconds per forward evaluation (wall and process CPU time) and the ratio to
le-pcn's, the median of the per-repeat ratios.  The networks are the benchmark's dense
784-64-10 and its CNN (``--network cnn``), on the ``mnist5k`` images.

    python benchmarks/gradient_free_cost.py            # both networks, 3 repeats
    python benchmarks/gradient_free_cost.py --quick    # digits, tiny (seconds)
"""

from __future__ import annotations

from typing import Any

from _common import block, interleaved, median, parser, print_table, ratio_median, write_json

METHODS = ("le-pcn", "le-slice", "es-openes", "es-snes", "es-pgpe", "es-sep-cma")


def _updates(trainer: Any, state: Any, updates: int, X: Any, y: Any) -> Any:
    """A call that runs ``updates`` more updates of ``trainer`` from where it stopped."""
    box = [state]

    def run() -> Any:
        for _ in range(updates):
            box[0], _ = trainer.step(box[0], X, y)
        return box[0]

    return run


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--networks", nargs="+", default=None, help="dense cnn")
    p.add_argument("--updates", type=int, default=None, help="updates a timed call (5)")
    a = p.parse_args(argv)

    import jax.numpy as jnp
    from jax import random

    from vi_entropy.data import load_dataset
    from vi_entropy.experiment.benchmark import BenchmarkConfig, network
    from vi_entropy.experiment.methods import get_benchmark_method, resolve_point

    dataset = "digits" if a.quick else "mnist5k"
    networks = a.networks or (["dense"] if a.quick else ["dense", "cnn"])
    updates = a.updates or (2 if a.quick else 5)
    repeats = a.repeats or (2 if a.quick else 3)
    batch = 32 if a.quick else 128
    data = load_dataset(dataset)
    X, y = jnp.asarray(data.X_train), jnp.asarray(data.y_train)
    rows: list[dict[str, Any]] = []
    for name in networks:
        config = BenchmarkConfig(dataset=dataset, network=name, hidden=(16,) if a.quick else (64,))
        model = network(config, data)
        init = model.init(random.PRNGKey(0))
        fns, evals = {}, {}
        for method in METHODS:
            record = get_benchmark_method(method)
            # The grid's first point: the timing does not depend on the search's knobs.
            tau, settings = resolve_point(method, record.grid[0], 500, smoke=a.quick)
            trainer = record.build(model, tau, dict(settings), batch)
            state = block(trainer.init(random.PRNGKey(1), init, X, y))
            state, counts = trainer.step(state, X, y)  # compiles
            block(state)
            evals[method] = counts["forward_evals"]

            fns[method] = _updates(trainer, state, updates, X, y)
        cpu: dict[str, list[float]] = {}
        wall = interleaved(fns, repeats, cpu)
        per = {m: [t / (updates * evals[m]) for t in wall[m]] for m in METHODS}
        per_cpu = {m: [t / (updates * evals[m]) for t in cpu[m]] for m in METHODS}
        for method in METHODS:
            rows.append(
                {
                    "network": name,
                    "method": method,
                    "forward_evals_per_update": evals[method],
                    "us_per_eval": 1e6 * median(per[method]),
                    "cpu_us_per_eval": 1e6 * median(per_cpu[method]),
                    "ratio_to_le_pcn": ratio_median(per[method], per["le-pcn"]),
                    "cpu_ratio_to_le_pcn": ratio_median(per_cpu[method], per_cpu["le-pcn"]),
                }
            )
    print_table(rows)
    write_json(
        "gradient_free_cost",
        {
            "dataset": dataset,
            "batch_size": batch,
            "updates_per_call": updates,
            "repeats": repeats,
            "rows": rows,
        },
        a.out,
        a.quick,
    )


if __name__ == "__main__":
    main()
