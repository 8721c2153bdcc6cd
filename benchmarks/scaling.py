"""Scaling: time per outer step and memory versus parameters and versus chains.

Local entropy on the dense digits network (``β = 1/N``), with SGLD (default), pCN or NUTS
(``--sampler``), two sweeps (``--sweeps``): the parameter count at a fixed number of
chains, and the number of chains at a fixed parameter count.  Each configuration runs in
its own Python process so that its peak memory is its own:

* ``step_s``: median seconds per outer step (``run`` of several steps, after a warm run);
* ``evals_per_s``: the evaluations the sampler counts (``info``: gradients for SGLD and
  NUTS, ``eval_kind`` "grad"; potentials for pCN, "potential") per second;
* ``peak_rss_mb``: the process's peak resident memory (``resource.getrusage``), and
  ``rss_over_base_mb`` that peak minus the resident memory after imports and data;
* ``live_mb_start`` / ``live_mb_end``: bytes of all live JAX arrays after 2 outer steps
  and after many more, with ``keep_draws=None``, to show there is no per-step growth;
* ``state_mb``: the scheme's state (centre and chains);
* ``xla_mb``: XLA's own accounting of the compiled outer step
  (``compiled.memory_analysis()``: arguments + outputs + temporaries, aliases counted
  once), the memory one step needs whatever the allocator keeps around;
* on GPUs, ``device_peak_mb`` from ``device.memory_stats()``.

A log-log plot goes to ``benchmarks/results/scaling.png`` (or next to ``--out``).

    python benchmarks/scaling.py            # 1k-300k parameters; 1-32 chains
    python benchmarks/scaling.py --quick    # tiny, in this process
    python benchmarks/scaling.py --sampler nuts --sweeps chains --chains 2 8 32 128 256
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

from _common import RESULTS, digits_problem, hidden_for, in_subprocess, median, parser, print_table

BYTES_PER_MB = 2**20
SAMPLERS = ("sgld", "pcn", "nuts")


def sampler_options(sampler: str, tau: float, inner: int, quick: bool) -> dict[str, Any]:
    """``LocalEntropy`` options of each sampler: ``inner`` draws (transitions) per chain.

    pCN and NUTS adapt their step once, in the first outer step (warm starts reuse it), so
    their warm-up is outside the timed steps; NUTS's trees are capped at depth 5 (3 with
    ``--quick``) so that one outer step costs at most ``inner × 31`` gradients per chain.
    """
    if sampler == "sgld":
        return {"num_warmup": 0, "sampler_kwargs": {"step_size": 0.1 * tau}}
    if sampler == "pcn":
        return {"num_warmup": inner}
    return {"num_warmup": 2 * inner, "sampler_kwargs": {"max_tree_depth": 3 if quick else 5}}


def rss_mb() -> float:
    """Current resident memory of this process (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / BYTES_PER_MB
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def live_mb() -> float:
    import jax

    return sum(x.nbytes for x in jax.live_arrays()) / BYTES_PER_MB


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this process."""
    import jax
    import numpy as np

    from vi_entropy import LocalEntropy

    problem = digits_problem((spec["hidden"],), spec.get("batch_size"))
    model, args, kwargs, beta, _, num_params = problem
    jax.block_until_ready(args)
    base = rss_mb()
    tau = 1e-3
    sampler = spec.get("sampler", "sgld")
    le = LocalEntropy(
        model,
        tau,
        sampler=sampler,
        num_chains=spec["chains"],
        num_samples=spec["inner"],
        beta=beta,
        progress_bar=False,
        **sampler_options(sampler, tau, spec["inner"], spec.get("quick", False)),
    )
    state = le.init(jax.random.PRNGKey(0), *args, **kwargs)
    state = le.run(None, 2, *args, init_state=state, keep_draws=None, **kwargs).state
    jax.block_until_ready(state)
    live_start = live_mb()
    steps, times = spec["steps"], []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        result = le.run(None, steps, *args, init_state=state, keep_draws=None, **kwargs)
        state = jax.block_until_ready(result.state)
        times.append((time.perf_counter() - t0) / steps)
    live_end = live_mb()
    # The sampler's own count of the last timed steps (NUTS's varies with its trees).
    grads = int(np.sum(result.info["num_grad_evals"]))
    evals = grads if grads > 0 else int(np.sum(result.info["num_potential_evals"]))
    # What the compiled step itself needs, from XLA (one more compilation, not timed).
    from vi_entropy.driver import partition_args

    dynamic, static = partition_args(args, kwargs)
    mem = (
        le._step_jit.lower(state, dynamic, static=static, with_draws=False)
        .compile()
        .memory_analysis()
    )
    xla = {}
    if mem is not None:
        xla = {
            "xla_temp_mb": mem.temp_size_in_bytes / BYTES_PER_MB,
            "xla_mb": (
                mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes
            )
            / BYTES_PER_MB,
        }
    out = {
        "sampler": sampler,
        "params": num_params,
        "chains": spec["chains"],
        "inner_steps": spec["inner"],
        "chains_x_params": spec["chains"] * num_params,
        "step_s": median(times),
        "eval_kind": "grad" if grads > 0 else "potential",
        "evals_per_step": evals / steps,
        "evals_per_s": evals / steps / median(times),
        "state_mb": sum(x.nbytes for x in jax.tree.leaves(state)) / BYTES_PER_MB,
        "live_mb_start": live_start,
        "live_mb_end": live_end,
        "outer_steps_between": steps * spec["repeats"],
        **xla,
        "rss_end_over_base_mb": rss_mb() - base,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_over_base_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base,
    }
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / BYTES_PER_MB
    return out


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, sweep, x, label in (
        (axes[0], "params", "params", "parameters"),
        (axes[1], "chains", "chains", "chains"),
    ):
        pts = sorted((r[x], r["step_s"]) for r in rows if r["sweep"] == sweep)
        if pts:
            ax.loglog(*zip(*pts, strict=True), marker="o")
            ax.set_xlabel(label)
            ax.set_ylabel("seconds per outer step")
            ax.grid(alpha=0.3, which="both")
    for key, style, label in (
        ("xla_mb", "o", "one compiled step (XLA)"),
        ("state_mb", "s", "state"),
        ("rss_over_base_mb", "^", "peak RSS over base"),
    ):
        pts = sorted((r["chains_x_params"], r[key]) for r in rows if key in r)
        if pts:
            axes[2].loglog(*zip(*pts, strict=True), style, label=label)
    axes[2].set_xlabel("chains × parameters")
    axes[2].set_ylabel("MB")
    axes[2].grid(alpha=0.3, which="both")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    from _common import write_json

    p = parser(__doc__)
    p.add_argument("--child", default=None, help=__import__("argparse").SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--chains", type=int, nargs="*", default=None)
    p.add_argument("--fixed-size", type=int, default=10_000)
    p.add_argument("--fixed-chains", type=int, default=4)
    p.add_argument("--sampler", choices=SAMPLERS, default="sgld", help="local entropy's sampler")
    p.add_argument(
        "--sweeps", nargs="+", choices=("params", "chains"), default=["params", "chains"],
        help="which sweeps to run (both by default)",
    )  # fmt: skip
    p.add_argument("--inner", type=int, default=None, help="draws per chain per outer step")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(json.loads(a.child))))
        return
    sizes = a.sizes or ([100] if a.quick else [1_000, 3_000, 10_000, 30_000, 100_000, 300_000])
    chains = a.chains or ([2] if a.quick else [1, 2, 4, 8, 16, 32])
    common = {
        "inner": a.inner or (2 if a.quick else 10),
        "steps": 2 if a.quick else 3,
        "repeats": a.repeats or (1 if a.quick else 3),
        "batch_size": a.batch_size,
        "sampler": a.sampler,
        "quick": a.quick,
    }
    fixed_size = sizes[0] if a.quick else a.fixed_size
    configs = []
    if "params" in a.sweeps:
        configs += [("params", {"hidden": hidden_for(s), "chains": a.fixed_chains}) for s in sizes]
    if "chains" in a.sweeps:
        configs += [("chains", {"hidden": hidden_for(fixed_size), "chains": c}) for c in chains]
    rows = []
    for sweep, cfg in configs:
        spec = {**common, **cfg}
        # --quick measures in this process: seconds matter more than separate peaks.
        row = measure(spec) if a.quick else in_subprocess(__file__, spec)
        row["sweep"] = sweep
        rows.append(row)
        print(
            f"{a.sampler} {sweep:6s} params={row['params']:>7d} chains={row['chains']:>3d} "
            f"step {row['step_s'] * 1e3:9.2f} ms  peak RSS {row['peak_rss_mb']:8.1f} MB",
            flush=True,
        )
        # Written after every row, so that a run cut short keeps what it measured.
        write_json("scaling", {"rows": rows, "complete": False}, a.out, a.quick, quiet=True)
    print()
    table = print_table(
        rows,
        ["sampler", "sweep", "params", "chains", "step_s", "evals_per_s", "state_mb", "xla_mb",
         "live_mb_start", "live_mb_end", "rss_over_base_mb", "peak_rss_mb"],
    )  # fmt: skip
    png = a.out.with_suffix(".png") if a.out else RESULTS / "scaling.png"
    if not a.no_plot and not a.quick:
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(rows, png)
    write_json(
        "scaling",
        {"settings": {**common, "sweeps": a.sweeps, "sizes": sizes, "chains": chains, "fixed_size": fixed_size,
                      "fixed_chains": a.fixed_chains, "in_subprocess": not a.quick},
         "rows": rows, "complete": True, "table": table},
        a.out,
        a.quick,
    )  # fmt: skip


if __name__ == "__main__":
    main()
