"""Naive baseline: a fresh ``numpyro.infer.MCMC(...).run`` per outer step, against ours.

The obvious NumPyro user code for local entropy: at every outer step build
``MCMC(kernel(tilt_model(model)), num_warmup, num_samples, num_chains,
chain_method="vectorized")``, run it with the centre and ``τ`` passed as the tilted
model's keyword arguments ``_vi_centre`` / ``_vi_tau`` (started from the centre), and
move the centre to the mean of the draws.  Every step re-traces, re-compiles and
re-adapts.  Ours (``LocalEntropy``) compiles once, adapts once and warm-starts the
chains.  Same kernel settings (chains, warm-up, draws per step), same number of outer
steps.

A third row, "NumPyro, reused": one ``MCMC`` object with ``jit_model_args=True`` run
again per step, which compiles once but still re-adapts every step: it separates the
two sources of the speed-up.

Reported: wall-clock for ``K`` outer steps including every compilation (ours: ``init`` +
``run``), and the steady per-step time (ours: a second ``run`` continuing the first),
and the XLA compilations.  Each code runs in a fresh Python process (imports excluded),
as a user would, so that none profits from another's compilations.

    python benchmarks/naive.py            # NUTS and SGLD, ~1k parameters, K = 10
    python benchmarks/naive.py --quick    # SGLD, tiny, K = 2
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

from _common import (
    compile_stats,
    digits_problem,
    hidden_for,
    in_subprocess,
    parser,
    print_table,
    write_json,
)


def kernel_for(name: str, tau: float, tree_depth: int):
    from functools import partial

    from numpyro.infer import NUTS

    from vi_entropy import SGLD

    if name == "nuts":
        return partial(NUTS, max_tree_depth=tree_depth), {"max_tree_depth": tree_depth}
    return partial(SGLD, step_size=0.1 * tau), {"step_size": 0.1 * tau}


def naive_run(problem, sampler: str, settings: dict, steps: int, reuse: bool) -> dict[str, Any]:
    """``steps`` outer steps of the obvious NumPyro code; returns time and the centre."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC

    from vi_entropy import TiltedPosterior
    from vi_entropy.tilted import CENTRE, TAU

    model, args, kwargs, beta, _, _ = problem
    tau, chains = settings["tau"], settings["num_chains"]
    make_kernel, _ = kernel_for(sampler, tau, settings["max_tree_depth"])
    t0 = time.perf_counter()
    tilted = TiltedPosterior(model, beta)
    tilted.setup(jax.random.PRNGKey(0), args, kwargs)
    centre = jnp.zeros(tilted.dim)
    key = jax.random.PRNGKey(1)
    mcmc = None
    for _ in range(steps):
        key, sub = jax.random.split(key)
        if mcmc is None or not reuse:
            mcmc = MCMC(
                make_kernel(tilted.tilted_model),
                num_warmup=settings["num_warmup"],
                num_samples=settings["num_samples"],
                num_chains=chains,
                chain_method="vectorized",
                progress_bar=False,
                jit_model_args=reuse,
            )
        start = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (chains, *x.shape)), tilted.unravel(centre)
        )
        mcmc.run(
            sub,
            *args,
            init_params=start,
            **{**kwargs, CENTRE: tilted.unravel(centre), TAU: tau},
        )
        draws = mcmc.get_samples()
        centre = tilted.ravel({k: jnp.mean(draws[k], axis=0) for k in tilted.sites})
    jax.block_until_ready(centre)
    return {"total_s": time.perf_counter() - t0}


def ours_run(problem, sampler: str, settings: dict, steps: int) -> dict[str, Any]:
    import jax

    from vi_entropy import LocalEntropy

    model, args, kwargs, beta, _, _ = problem
    _, kernel_kwargs = kernel_for(sampler, settings["tau"], settings["max_tree_depth"])
    t0 = time.perf_counter()
    le = LocalEntropy(
        model,
        settings["tau"],
        sampler=sampler,
        num_chains=settings["num_chains"],
        num_samples=settings["num_samples"],
        num_warmup=settings["num_warmup"],
        sampler_kwargs=kernel_kwargs,
        beta=beta,
        progress_bar=False,
    )
    state = le.init(jax.random.PRNGKey(1), *args, **kwargs)
    result = le.run(None, steps, *args, init_state=state, **kwargs)
    jax.block_until_ready(result.state)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    jax.block_until_ready(le.run(None, steps, *args, init_state=result.state, **kwargs).state)
    return {"total_s": total, "step_s": (time.perf_counter() - t1) / steps}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    problem = digits_problem((spec["hidden"],))
    with compile_stats() as stats:
        if spec["code"] == "ours":
            out = ours_run(problem, spec["sampler"], spec["settings"], spec["steps"])
        else:
            reuse = spec["code"] == "NumPyro, reused"
            out = naive_run(problem, spec["sampler"], spec["settings"], spec["steps"], reuse)
    out["compilations"] = stats["compilations"]
    out["params"] = problem[5]
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--child", default=None, help=__import__("argparse").SUPPRESS)
    p.add_argument("--size", type=int, default=None, help="parameters of the network")
    p.add_argument("--steps", type=int, default=None, help="outer steps K")
    p.add_argument("--samplers", nargs="*", default=None, choices=["nuts", "sgld"])
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    size = a.size or (200 if a.quick else 1_000)
    steps = a.steps or (2 if a.quick else 10)
    samplers = a.samplers or (["sgld"] if a.quick else ["nuts", "sgld"])
    settings = {
        "tau": 1e-3,
        "num_chains": 2 if a.quick else 4,
        "num_warmup": 5 if a.quick else 50,
        "num_samples": 5 if a.quick else 20,
        "max_tree_depth": 5,
    }
    rows = []
    codes = ("ours", "NumPyro, fresh MCMC") + (() if a.quick else ("NumPyro, reused",))
    # --quick measures in this process (seconds): the first code then pays for the eager
    # compilations both share, so its totals are not comparable.
    run = child if a.quick else partial(in_subprocess, __file__)
    for sampler in samplers:
        spec = {
            "sampler": sampler,
            "settings": settings,
            "steps": steps,
            "hidden": hidden_for(size),
        }
        results = {code: run({**spec, "code": code}) for code in codes}
        ours = results["ours"]
        for code, r in results.items():
            per_step = r.get("step_s", r["total_s"] / steps)
            rows.append(
                {
                    "sampler": sampler,
                    "code": code,
                    "params": r["params"],
                    "outer_steps": steps,
                    "compilations": r["compilations"],
                    "total_s": r["total_s"],
                    "per_step_s": per_step,
                    "speedup_total": r["total_s"] / ours["total_s"],
                    "speedup_per_step": per_step / ours["step_s"],
                }
            )
            print(rows[-1], flush=True)
    print()
    table = print_table(rows)
    print(
        "\nspeedup_* = time of that code / time of ours (ours = 1); total includes "
        "compilation, per step is the steady state (naive: total / steps)."
    )
    write_json("naive", {"settings": settings, "rows": rows, "table": table}, a.out, a.quick)


if __name__ == "__main__":
    main()
