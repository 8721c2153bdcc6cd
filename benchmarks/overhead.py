"""Overhead: time per outer step over the time of the same evaluations done raw.

For each scheme the cost floor of one outer step is the potential (or gradient)
evaluations it must make: ``chains × inner steps`` gradients for SGLD, the actual
leapfrog steps for NUTS, ``J`` forward passes for importance sampling, ``chains ×
transitions`` forward passes for SA, ``chains × (transitions + 1)`` forward passes for
pCN, ``1 +`` shrinks per transition and chain for elliptical slice, ``inner steps ×
particles`` gradients for HR-SVI.
The *raw* reference evaluates the same model's potential (``numpyro.infer.util.
potential_energy``, the same mini-batching) with the same vector width in one jitted
``lax.scan`` of ``vmap``-ed (value-and-)gradient calls and nothing else.

    overhead = (seconds per outer step / evaluations per outer step)
               / (seconds per raw evaluation)

in wall-clock (``overhead``) and in process CPU time (``overhead_cpu``, robust when other
processes share the cores), each the median of ratios of interleaved repeats.  For
SGLD and importance sampling the reference with the random numbers they must draw
(``raw+noise``: a fresh normal vector per evaluation) is reported as well.

Elliptical slice is also reported against its *executed* count
(``info["num_potential_evals_executed"]``): vectorized chains run the shrinking loop in
lockstep, each as many times as the slowest chain needs.

NUTS is also reported against its *lockstep* count: vectorized chains run each
transition for as many leapfrog steps as the longest chain needs, so
``chains × Σ_t max_c n_steps`` gradients are computed, of which only ``Σ n_steps`` are
counted by ``info["num_grad_evals"]``.

Network: the dense softmax network of ``vi_entropy.models`` on scikit-learn's digits
(1,437 training rows), ``β = 1/N`` so that ``f`` is the mean loss.

    python benchmarks/overhead.py            # ~10k and ~100k parameters
    python benchmarks/overhead.py --quick    # tiny, seconds
    python benchmarks/overhead.py --untracked   # the samplers alone: no tracking of f(x_k),
                                                # no draws kept (nor their R-hat/ESS)
"""

from __future__ import annotations

import time
from typing import Any

from _common import (
    digits_problem,
    hidden_for,
    interleaved,
    median,
    parser,
    print_table,
    ratio_median,
    write_json,
)


def make_schemes(beta: float, tau: float, quick: bool) -> dict[str, Any]:
    import numpyro.optim

    from vi_entropy import HeatRegularization, LocalEntropy

    common = {"beta": beta, "progress_bar": False}
    n = 4 if quick else 25
    return {
        "LE-SGLD": lambda m: LocalEntropy(
            m,
            tau,
            sampler="sgld",
            num_chains=4,
            num_samples=n,
            num_warmup=0,
            sampler_kwargs={"step_size": 0.1 * tau},
            **common,
        ),
        "LE-IS": lambda m: LocalEntropy(
            m, tau, sampler="importance", num_samples=8 if quick else 128, **common
        ),
        "LE-NUTS": lambda m: LocalEntropy(
            m,
            tau,
            sampler="nuts",
            num_chains=4,
            num_samples=2 if quick else 5,
            num_warmup=4 if quick else 30,
            sampler_kwargs={"max_tree_depth": 3 if quick else 5},
            **common,
        ),
        "LE-SA": lambda m: LocalEntropy(
            m, tau, sampler="sa", num_chains=4, num_samples=n, num_warmup=0, **common
        ),
        "LE-pCN": lambda m: LocalEntropy(
            m, tau, sampler="pcn", num_chains=4, num_samples=n, num_warmup=n, **common
        ),
        "LE-slice": lambda m: LocalEntropy(
            m, tau, sampler="elliptical_slice", num_chains=4, num_samples=n, num_warmup=0, **common
        ),
        "HR-SVI": lambda m: HeatRegularization(
            m,
            tau,
            optim=numpyro.optim.Adam(1e-3),
            num_inner_steps=n,
            num_particles=4,
            **common,
        ),
    }


def raw_evaluations(
    tilted: Any, args: tuple, kwargs: dict, width: int, length: int, grad: bool, noise: bool = False
):
    """``length`` sequential rounds of ``width`` vectorized potential (or gradient) calls.

    Each round feeds the next (``u ← u − 1e-6 g``), so XLA can hoist nothing out of the
    loop; mini-batched models draw a fresh batch per round, as SGLD does.  With ``noise``
    each round first adds a fresh standard normal vector to every point: the random
    numbers that SGLD (Langevin noise) and importance sampling (proposals) cannot avoid.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax, random

    from vi_entropy.model_args import merge_args, partition_args

    subsample = tilted.subsamples
    # Arrays traced, the rest (a mini-batch size) static, as the schemes' own steps do.
    dynamic, static = partition_args(args, kwargs)

    def f(u, key, dynamic):
        args, kwargs = merge_args(dynamic, static)
        return tilted.potential(u, args, kwargs, key if subsample else None)

    one = jax.value_and_grad(f) if grad else f
    batched = jax.vmap(one, in_axes=(0, None, None))

    @jax.jit
    def run(u, key, dynamic):
        def body(u, k):
            if noise:
                k, k_noise = random.split(k)
                u = u + 1e-3 * random.normal(k_noise, u.shape, u.dtype)
            out = batched(u, k, dynamic)
            if grad:
                v, g = out
                return u - 1e-6 * g, v
            return u + 1e-6 * out[:, None], out

        return lax.scan(body, u, random.split(key, length))

    d = tilted.dim
    u0 = 0.01 * random.normal(random.PRNGKey(0), (width, d), jnp.float32)
    key = random.PRNGKey(1)
    return lambda: run(u0, key, dynamic)


def measure(
    name: str, make: Any, problem: tuple, steps: int, repeats: int, untracked: bool = False
) -> dict[str, Any]:
    import jax
    import numpy as np

    model, args, kwargs, beta, _, num_params = problem
    scheme = make(model)
    # The driver's per-run work (tracking f(x_k), keeping draws and their R-hat/ESS) is
    # left out with --untracked, which times the outer step alone.
    run_kw = {"track_every": 0, "keep_draws": None} if untracked else {}
    t0 = time.perf_counter()
    state = scheme.init(jax.random.PRNGKey(0), *args, **kwargs)
    warm = scheme.run(None, steps, *args, init_state=state, **run_kw, **kwargs)
    jax.block_until_ready(warm.state)
    compile_s = time.perf_counter() - t0

    info = warm.info
    grad = int(np.sum(info["num_grad_evals"])) > 0
    evals = int(np.sum(info["num_grad_evals" if grad else "num_potential_evals"])) / steps
    if name == "LE-IS":
        width, length = scheme.num_samples, 1
    elif name == "HR-SVI":
        width, length = scheme.num_particles, scheme.num_inner_steps
    else:
        width, length = scheme.num_chains, max(scheme.num_samples, 8)
    fns = {"raw": raw_evaluations(scheme.tilted, args, kwargs, width, length, grad)}
    if name in ("LE-SGLD", "LE-IS"):
        fns["raw+noise"] = raw_evaluations(scheme.tilted, args, kwargs, width, length, grad, True)
    for fn in fns.values():
        jax.block_until_ready(fn())
    raw_evals = width * length

    def ours():
        return scheme.run(None, steps, *args, init_state=state, **run_kw, **kwargs).state

    cpu: dict[str, list[float]] = {}
    times = interleaved({"ours": ours, **fns}, repeats, cpu)

    def overhead(t: dict[str, list[float]], ref: str) -> float:
        # Per evaluation, ours over the reference, paired repeat by repeat.
        return ratio_median([x / steps / evals for x in t["ours"]], [x / raw_evals for x in t[ref]])

    row = {
        "scheme": name,
        "params": num_params,
        "evals/step": round(evals, 1),
        "kind": "grad" if grad else "potential",
        "step_s": median(times["ours"]) / steps,
        "raw_s": median(times["raw"]) / raw_evals * evals,
        "overhead": overhead(times, "raw"),
        "overhead_cpu": overhead(cpu, "raw"),
        "first_run_s": compile_s,
        "wall_s": times,
        "cpu_s": cpu,
    }
    if "raw+noise" in times:
        # The floor with the random numbers the method must draw (Langevin noise, proposals).
        row["overhead_vs_raw+noise"] = overhead(times, "raw+noise")
        row["overhead_cpu_vs_raw+noise"] = overhead(cpu, "raw+noise")
    if "num_potential_evals_executed" in info:
        # Lockstep cost of vectorized elliptical slice: every chain waits for the slowest.
        executed = float(np.sum(info["num_potential_evals_executed"])) / steps
        row["executed_evals/step"] = round(executed, 1)
        row["overhead_vs_executed"] = row["overhead"] * evals / executed
        row["overhead_cpu_vs_executed"] = row["overhead_cpu"] * evals / executed
    if name == "LE-NUTS" and warm.draws:
        # Lockstep cost of vectorized NUTS: every chain waits for the longest tree.
        n_steps = np.asarray(next(iter(warm.draws.values())).stats["n_steps"])  # (chains, draws)
        last = float(np.sum(info["num_grad_evals"][-1]))
        lockstep = n_steps.shape[0] * n_steps.max(axis=0).sum() + n_steps.shape[0]
        row["lockstep_evals/step"] = float(lockstep)
        row["overhead_vs_lockstep"] = row["overhead"] * last / lockstep
        row["overhead_cpu_vs_lockstep"] = row["overhead_cpu"] * last / lockstep
    return row


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="parameter counts")
    p.add_argument("--schemes", nargs="*", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch rows (default: all)")
    p.add_argument("--steps", type=int, default=None, help="outer steps per timed call")
    p.add_argument("--tau", type=float, default=1e-3)
    p.add_argument("--untracked", action="store_true", help="time the outer steps alone")
    a = p.parse_args(argv)
    sizes = a.sizes or ([200] if a.quick else [10_000, 100_000])
    repeats = a.repeats or (2 if a.quick else 5)
    steps = a.steps or (2 if a.quick else 3)

    settings = {"batch_size": a.batch_size, "steps_per_call": steps, "repeats": repeats,
                "tau": a.tau, "untracked": a.untracked}  # fmt: skip
    rows = []
    for size in sizes:
        hidden = hidden_for(size)
        problem = digits_problem((hidden,), a.batch_size)
        schemes = make_schemes(problem[3], a.tau, a.quick)
        # --quick: one MCMC sampler, the gradient-free ones, importance sampling (seconds).
        quick = ["LE-SGLD", "LE-pCN", "LE-slice", "LE-IS"]
        names = a.schemes or (quick if a.quick else list(schemes))
        for name in names:
            row = measure(name, schemes[name], problem, steps, repeats, a.untracked)
            row["hidden"] = hidden
            rows.append(row)
            print(
                f"{name:8s} d={row['params']:>7d} step {row['step_s'] * 1e3:8.1f} ms  "
                f"overhead {row['overhead']:.3f} (CPU time {row['overhead_cpu']:.3f})",
                flush=True,
            )
            # Written after every row, so that a run cut short keeps what it measured.
            write_json("overhead", {"settings": settings, "rows": rows, "complete": False},
                       a.out, a.quick, quiet=True)  # fmt: skip
    print()
    columns = ["scheme", "params", "kind", "evals/step", "step_s", "raw_s", "overhead",
               "overhead_cpu", "overhead_cpu_vs_raw+noise", "overhead_cpu_vs_lockstep",
               "overhead_cpu_vs_executed"]  # fmt: skip
    table = print_table(rows, columns)
    write_json(
        "overhead",
        {"settings": settings, "rows": rows, "complete": True, "table": table},
        a.out,
        a.quick,
    )


if __name__ == "__main__":
    main()
