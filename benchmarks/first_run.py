"""First run: time and XLA compilations of a fresh process's first ``run``, against NumPyro.

A user's first call pays for every compilation, so each measurement runs in a fresh
Python process (cold JAX caches, imports and data excluded from the timing):

(a) ``LocalEntropy(model, tau, sampler="nuts", num_chains=2, num_samples=100,
    num_warmup=100)``: ``init`` + ``run`` of one outer step, on a Bayesian linear
    regression (10 coefficients, 100 rows);
(b) NumPyro's first ``MCMC(NUTS(model), num_warmup=100, num_samples=100, num_chains=2,
    chain_method="vectorized").run`` of the same model (the same work as one outer step);
(c) 20 outer steps of (a) against the naive loop of ``naive.py`` (a fresh ``MCMC`` per
    outer step, each re-traced, re-compiled and re-adapted), both from a cold process;
(d) ``LocalEntropy(model, tau, sampler="sgld")`` as a user first writes it (its
    defaults: one chain, 20 draws, no warm-up, the curvature step): ``init`` + ``run`` of
    one outer step, against NumPyro's first ``MCMC(SGLD(model, step_size="curvature"),
    num_warmup=0, num_samples=20).run`` with the same kernel;
(e) ``HeatRegularization(model, tau)`` (its defaults: SVI, 100 inner steps of 8
    particles, Adam at ``0.1 √τ``): ``init`` + ``run`` of one outer step, against
    NumPyro's first ``SVI(model, AutoNormal(model), Adam(0.1 √τ),
    Trace_ELBO(8)).run`` of the same 100 steps.

``jax.monitoring`` listeners count backend compilations (as ``compilation.py`` does).
The persistent compilation cache is switched off in the children, so that nothing is
read from disk.  ``--quick`` runs every case in the one process of the script instead (a
smoke run: its figures mean nothing).

    python benchmarks/first_run.py           # the sizes above, 3 repeats (median)
    python benchmarks/first_run.py --quick   # 20 draws, 3 outer steps (seconds)
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from typing import Any

from _common import compile_stats, in_subprocess, parser, print_table, write_json

TAU = 1e-2


def linreg_problem(rows: int, coefs: int) -> tuple:
    """A Bayesian linear regression (noise scale 0.5): ``(model, (X, y))``, data on the
    device."""
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, coefs)).astype(np.float32)
    y = (X @ rng.normal(size=coefs) + 0.5 * rng.normal(size=rows)).astype(np.float32)

    # Known noise scale: every latent site is real, so the naive loop may start its
    # chains at the centre given as unconstrained values (as naive.py does).
    def model(X: Any, y: Any = None) -> None:
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)

    return model, (jnp.asarray(X), jnp.asarray(y))


def ours(problem: tuple, settings: dict, steps: int) -> None:
    import jax

    from vi_entropy import LocalEntropy

    model, args = problem
    le = LocalEntropy(
        model,
        TAU,
        sampler="nuts",
        num_chains=settings["num_chains"],
        num_samples=settings["num_samples"],
        num_warmup=settings["num_warmup"],
        progress_bar=False,
    )
    state = le.init(jax.random.PRNGKey(1), *args)
    jax.block_until_ready(le.run(None, steps, *args, init_state=state).state)


def ours_sgld(problem: tuple) -> None:
    import jax

    from vi_entropy import LocalEntropy

    model, args = problem
    le = LocalEntropy(model, TAU, sampler="sgld", progress_bar=False)
    state = le.init(jax.random.PRNGKey(1), *args)
    jax.block_until_ready(le.run(None, 1, *args, init_state=state).state)


def numpyro_sgld(problem: tuple) -> None:
    import jax
    from numpyro.infer import MCMC

    from vi_entropy import SGLD

    model, args = problem
    mcmc = MCMC(
        SGLD(model, step_size="curvature"), num_warmup=0, num_samples=20, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(1), *args)
    jax.block_until_ready(mcmc.get_samples())


def ours_heat(problem: tuple) -> None:
    import jax

    from vi_entropy import HeatRegularization

    model, args = problem
    hr = HeatRegularization(model, TAU, progress_bar=False)
    state = hr.init(jax.random.PRNGKey(1), *args)
    jax.block_until_ready(hr.run(None, 1, *args, init_state=state).state)


def numpyro_svi(problem: tuple) -> None:
    import jax
    import numpy as np
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    model, args = problem
    svi = SVI(model, AutoNormal(model), Adam(0.1 * np.sqrt(TAU)), Trace_ELBO(num_particles=8))
    result = svi.run(jax.random.PRNGKey(1), 100, *args, progress_bar=False)
    jax.block_until_ready(result.params)


#: The other entry points' first runs: code name -> function of the problem.
OTHERS = {
    "ours: LocalEntropy sgld": ours_sgld,
    "NumPyro MCMC(SGLD).run": numpyro_sgld,
    "ours: HeatRegularization": ours_heat,
    "NumPyro SVI.run": numpyro_svi,
}


def numpyro_mcmc(problem: tuple, settings: dict) -> None:
    import jax
    from numpyro.infer import MCMC, NUTS

    model, args = problem
    mcmc = MCMC(
        NUTS(model),
        num_warmup=settings["num_warmup"],
        num_samples=settings["num_samples"],
        num_chains=settings["num_chains"],
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), *args)
    jax.block_until_ready(mcmc.get_samples())


def naive(problem: tuple, settings: dict, steps: int) -> None:
    """The naive loop of ``naive.py``, on this model."""
    from naive import naive_run

    model, args = problem
    full = {**settings, "tau": TAU, "max_tree_depth": 10}  # NUTS's default depth
    naive_run((model, args, {}, 1.0, None, None), "nuts", full, steps, reuse=False)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    import jax

    if spec["cold"]:  # nothing from disk (--quick may share the tests' cache)
        jax.config.update("jax_enable_compilation_cache", False)
    problem = linreg_problem(spec["rows"], spec["coefs"])
    settings, steps = spec["settings"], spec["steps"]
    # Imports are not timed (as the docstring says): both sides' modules are loaded here.
    import numpyro.infer  # noqa: F401

    import vi_entropy  # noqa: F401

    jax.block_until_ready(problem[1])
    t0, c0 = time.perf_counter(), time.process_time()
    with compile_stats() as stats:
        if spec["code"] == "ours":
            ours(problem, settings, steps)
        elif spec["code"] == "NumPyro MCMC.run":
            numpyro_mcmc(problem, settings)
        elif spec["code"] in OTHERS:
            OTHERS[spec["code"]](problem)
        else:
            naive(problem, settings, steps)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "compilations": stats["compilations"],
        "compile_s": stats["trace_s"] + stats["lower_s"] + stats["backend_s"],
    }


def _median_row(case: tuple, results: list[dict]) -> dict:
    """The row of a case: its median run by wall time (of an even number, the lower
    middle one), with every repeat's wall time."""
    what, code, k = case
    ordered = sorted(results, key=lambda r: r["wall_s"])
    median = ordered[(len(ordered) - 1) // 2]
    walls = [r["wall_s"] for r in results]
    return {"case": what, "code": code, "outer_steps": k, **median, "wall_s_all": walls}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--child", default=None, help=__import__("argparse").SUPPRESS)
    p.add_argument("--steps", type=int, default=None, help="outer steps of (c)")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    draws = 20 if a.quick else 100
    settings = {"num_chains": 2, "num_warmup": draws, "num_samples": draws}
    steps = a.steps or (3 if a.quick else 20)
    repeats = a.repeats or (1 if a.quick else 3)
    base = {"rows": 100, "coefs": 10, "settings": settings, "cold": not a.quick}
    cases = [
        ("first run", "ours", 1),
        ("first run", "NumPyro MCMC.run", 1),
        (f"{steps} outer steps", "ours", steps),
        (f"{steps} outer steps", "naive: MCMC per step", steps),
        *(("first run, other entry points", code, 1) for code in OTHERS),
    ]
    script = os.path.abspath(__file__)
    # --quick measures in this process (seconds, as naive.py and scaling.py do): the
    # first case then pays for the compilations later ones share, so its figures are
    # not comparable; a full run gives each measurement a fresh interpreter.
    measure = child if a.quick else partial(in_subprocess, script)
    recorded = {**base, "steps": steps}
    # Cases interleaved: every repeat runs each case once, in a fresh process, so that a
    # change of the machine's load touches every case alike; each row is the run of the
    # median wall time, and keeps every repeat's.
    runs: dict[int, list[dict]] = {i: [] for i in range(len(cases))}
    for r in range(repeats):
        for i, (_what, code, k) in enumerate(cases):
            runs[i].append(measure({**base, "code": code, "steps": k}))
            print(f"repeat {r + 1}/{repeats}: {code}, {k} step(s): {runs[i][-1]}", flush=True)
        rows = [_median_row(cases[i], runs[i]) for i in runs if runs[i]]
        # Written after every repeat, so that a run cut short keeps what it measured.
        write_json("first_run", {"settings": recorded, "rows": rows, "complete": False},
                   a.out, a.quick, quiet=True)  # fmt: skip
    by = {(r["case"], r["code"]): r for r in rows}
    first = by[("first run", "ours")]["wall_s"] / by[("first run", "NumPyro MCMC.run")]["wall_s"]
    many = (
        by[(f"{steps} outer steps", "naive: MCMC per step")]["wall_s"]
        / by[(f"{steps} outer steps", "ours")]["wall_s"]
    )
    other = "first run, other entry points"
    sgld = (
        by[(other, "ours: LocalEntropy sgld")]["wall_s"]
        / by[(other, "NumPyro MCMC(SGLD).run")]["wall_s"]
    )
    heat = (
        by[(other, "ours: HeatRegularization")]["wall_s"] / by[(other, "NumPyro SVI.run")]["wall_s"]
    )
    summary = {
        "sgld_ours_over_numpyro": sgld,
        "heat_ours_over_numpyro_svi": heat,
        "first_run_ours_over_numpyro": first,
        "first_run_compilations": by[("first run", "ours")]["compilations"],
        "naive_over_ours": many,
    }
    print()
    table = print_table(
        rows, ["case", "code", "outer_steps", "compilations", "compile_s", "wall_s", "cpu_s"]
    )
    print(
        f"\nfirst run, ours / NumPyro: {first:.2f} (target <= 1); compilations: "
        f"{summary['first_run_compilations']} (target <= 6); {steps} steps, naive / ours: "
        f"{many:.1f} (target >= 10); LE-SGLD / MCMC(SGLD): {sgld:.2f}, HR-SVI / SVI.run: "
        f"{heat:.2f} (target <= 1.2)"
    )
    write_json(
        "first_run",
        {"settings": recorded, "rows": rows, "summary": summary, "complete": True, "table": table},
        a.out,
        a.quick,
    )


if __name__ == "__main__":
    main()
