"""Compilation: XLA compilations and compile seconds versus the number of outer steps.

For each scheme a fresh instance runs ``K`` outer steps (``init`` + ``run``) for several
``K``; ``jax.monitoring`` listeners (as in ``tests/test_compile.py``) count backend
compilations and add up tracing, lowering and backend-compile seconds.  A throwaway
instance first fills JAX's process-wide caches of eager operations, so every ``K``
sees the same starting point.  For contrast, the naive NumPyro code (a fresh ``MCMC``
per outer step, see ``naive.py``) is counted the same way.

    python benchmarks/compilation.py           # K = 1, 10, 100
    python benchmarks/compilation.py --quick   # K = 1, 2; LE-IS and the naive loop
"""

from __future__ import annotations

import time
from typing import Any

from _common import compile_stats, digits_problem, hidden_for, parser, print_table, write_json


def schemes(beta: float, tau: float, quick: bool) -> dict[str, Any]:
    import numpyro.optim

    from vi_entropy import HeatRegularization, LocalEntropy

    c = {"beta": beta, "progress_bar": False}
    mcmc = {"num_chains": 2, "num_samples": 3, "num_warmup": 3, **c}
    out = {
        "LE-IS": lambda m: LocalEntropy(m, tau, sampler="importance", num_samples=16, **c),
    }
    if not quick:
        out["HR-SVI"] = lambda m: HeatRegularization(
            m, tau, optim=numpyro.optim.Adam(1e-3), num_inner_steps=3, num_particles=2, **c
        )
        out["LE-SGLD"] = lambda m: LocalEntropy(
            m, tau, sampler="sgld", sampler_kwargs={"step_size": 0.1 * tau}, **mcmc
        )
        out["LE-NUTS"] = lambda m: LocalEntropy(
            m, tau, sampler="nuts", sampler_kwargs={"max_tree_depth": 4}, **mcmc
        )
        out["LE-SA"] = lambda m: LocalEntropy(m, tau, sampler="sa", **mcmc)
        out["HR-RM"] = lambda m: HeatRegularization(
            m, tau, method="robbins_monro", num_inner_steps=3, num_particles=2, **c
        )
    return out


def naive_sgld(problem: tuple, tau: float, steps: int) -> None:
    """The naive NumPyro loop of ``naive.py`` (a fresh MCMC per outer step), SGLD."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC

    from vi_entropy import SGLD, TiltedPosterior
    from vi_entropy.tilted import CENTRE, TAU

    model, args, kwargs, beta, _, _ = problem
    tilted = TiltedPosterior(model, beta)
    tilted.setup(jax.random.PRNGKey(0), args, kwargs)
    centre = jnp.zeros(tilted.dim)
    for k in range(steps):
        mcmc = MCMC(
            SGLD(tilted.tilted_model, step_size=0.1 * tau),
            num_warmup=3,
            num_samples=3,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
        start = jax.tree.map(lambda x: jnp.broadcast_to(x, (2, *x.shape)), tilted.unravel(centre))
        mcmc.run(
            jax.random.PRNGKey(k),
            *args,
            init_params=start,
            **{**kwargs, CENTRE: tilted.unravel(centre), TAU: tau},
        )
        draws = mcmc.get_samples()
        centre = tilted.ravel({s: jnp.mean(draws[s], axis=0) for s in tilted.sites})
    jax.block_until_ready(centre)


def main(argv: list[str] | None = None) -> None:
    import jax

    p = parser(__doc__)
    p.add_argument("--steps", type=int, nargs="*", default=None, help="values of K")
    p.add_argument("--size", type=int, default=None, help="parameters of the network")
    a = p.parse_args(argv)
    ks = a.steps or ([1, 2] if a.quick else [1, 10, 100])
    size = a.size or (200 if a.quick else 10_000)
    tau = 1e-3
    problem = digits_problem((hidden_for(size),))
    model, args, kwargs, beta, _, num_params = problem
    rows = []
    for name, make in schemes(beta, tau, a.quick).items():
        make(model).run(jax.random.PRNGKey(0), 1, *args, **kwargs)  # fill eager caches
        for k in ks:
            t0 = time.perf_counter()
            with compile_stats() as st:
                result = make(model).run(jax.random.PRNGKey(1), k, *args, **kwargs)
                jax.block_until_ready(result.state)
            rows.append(
                {
                    "scheme": name,
                    "params": num_params,
                    "outer_steps": k,
                    **st,
                    "compile_s": st["trace_s"] + st["lower_s"] + st["backend_s"],
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print(rows[-1], flush=True)
    naive_ks = ks[:2]  # linear in K: two points show it
    if not a.quick:
        naive_sgld(problem, tau, 1)  # fill eager caches
    for k in naive_ks:
        t0 = time.perf_counter()
        with compile_stats() as st:
            naive_sgld(problem, tau, k)
        rows.append(
            {
                "scheme": "naive NumPyro SGLD",
                "params": num_params,
                "outer_steps": k,
                **st,
                "compile_s": st["trace_s"] + st["lower_s"] + st["backend_s"],
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
    print()
    table = print_table(
        rows, ["scheme", "params", "outer_steps", "compilations", "compile_s", "wall_s"]
    )
    independent = {}
    for name in {r["scheme"] for r in rows}:
        counts = [r["compilations"] for r in rows if r["scheme"] == name]
        independent[name] = len(set(counts)) == 1
    print("\ncompilations independent of K:", independent)
    write_json(
        "compilation",
        {"steps": ks, "rows": rows, "independent_of_steps": independent, "table": table},
        a.out,
        a.quick,
    )


if __name__ == "__main__":
    main()
