"""Accuracy per cost: test accuracy versus gradient evaluations on ``mnist5k``.

Four trainers of the same NumPyro model (``vi_entropy.models.dense_network`` with
mini-batches, inverse temperature ``β``, default 1: ``f`` is the model's potential, the
negative log posterior), from the same Glorot initialization, each given the same budget
of mini-batch gradient evaluations:

* **Adam** (``optax.adam``) on ``f_B``, one gradient per step;
* **SAM** (``optax.contrib.sam`` around Adam, adversarial step normalized SGD of radius
  ``ρ``), two gradients per step, both on the same mini-batch;
* **LE-SGLD** (``LocalEntropy(sampler="sgld")``): ``chains × inner steps`` gradients per
  outer step, as counted by ``info["num_grad_evals"]``;
* **HR-SVI** (``HeatRegularization(method="svi")``): ``inner steps × particles``
  gradients per outer step.

Adam and SAM minimize the same potential through ``numpyro.infer.util.potential_energy``
(seeded so that the plate draws a fresh mini-batch).  For LE and HR, ``τ`` is set from an
SGD-equivalent learning rate ``η``: ``τ = η / (β N)``, since for small ``τ`` one outer step
moves the centre by ``τ ∇f = η ∇(mean loss)`` (the paper compares with SGD of learning
rate ``τ`` in its own scaling).  Settings are the command-line defaults below, not tuned
per method beyond a sanity check that each trains; cost is counted in gradient
evaluations, never in outer steps.  The training loop is written
here; a reproduction command of the package can call :func:`train` with its own
settings.

    python benchmarks/accuracy_per_cost.py           # 80k-parameter net, 6,000 gradients
    python benchmarks/accuracy_per_cost.py --quick   # tiny
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _common import RESULTS, parser, print_table, write_json


def potential_loss(model: Callable, beta: float, args: tuple, kwargs: dict) -> Callable:
    """``(params, key) -> β U_B(params)``: the model's potential on a fresh mini-batch."""
    from numpyro import handlers
    from numpyro.infer.util import potential_energy

    def loss(params: Any, key: Any) -> Any:
        return beta * potential_energy(handlers.seed(model, key), args, kwargs, params)

    return loss


def optax_trainer(optimizer: Any, loss: Callable, grads_per_step: int) -> tuple[Callable, Callable]:
    """``init(params)`` and ``advance(state, key, n)``: ``n`` gradient evaluations."""
    import jax
    import optax
    from jax import lax, random

    def init(params: Any) -> tuple[Any, Any, Any]:
        return params, optimizer.init(params), jax.numpy.zeros((), jax.numpy.int32)

    def one(carry: tuple, key: Any) -> tuple[tuple, None]:
        params, opt_state, i = carry
        # SAM's adversarial and outer gradients share a mini-batch.
        g = jax.grad(loss)(params, random.fold_in(key, i // grads_per_step))
        updates, opt_state = optimizer.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, i + 1), None

    def advance(state: tuple, key: Any, n: int) -> tuple:
        def body(carry: tuple, _: Any) -> tuple[tuple, None]:
            return one(carry, key)

        return lax.scan(body, state, None, length=n)[0]

    return init, jax.jit(advance, static_argnums=2)


def train(
    method: str,
    problem: dict[str, Any],
    budget: int,
    num_checkpoints: int,
    settings: dict[str, Any],
) -> list[dict[str, float]]:
    """Train with ``method`` for ``budget`` gradient evaluations; accuracy at checkpoints."""
    import jax
    import optax

    from vi_entropy import HeatRegularization, LocalEntropy
    from vi_entropy.models import accuracy

    model, beta = problem["model"], problem["beta"]
    args, kwargs = problem["args"], problem["kwargs"]
    X_test, y_test = problem["test"]
    init_params = problem["init_params"]
    key = jax.random.PRNGKey(settings["seed"])
    curve = []
    t0 = time.perf_counter()

    def record(grads: int, params: Any) -> None:
        acc = accuracy(params, X_test, y_test)
        curve.append({"grad_evals": int(grads), "test_accuracy": acc,
                      "seconds": time.perf_counter() - t0})  # fmt: skip

    if method in ("Adam", "SAM"):
        adam = optax.adam(settings["lr"])
        if method == "SAM":
            adv = optax.chain(optax.contrib.normalize(), optax.sgd(settings["sam_rho"]))
            opt, per_step = optax.contrib.sam(adam, adv, sync_period=2), 2
        else:
            opt, per_step = adam, 1
        loss = potential_loss(model, beta, args, kwargs)
        init, advance = optax_trainer(opt, loss, per_step)
        state = init(init_params)
        chunk = max(per_step, (budget // num_checkpoints) // per_step * per_step)
        done = 0
        record(0, state[0])
        while done < budget:
            n = min(chunk, budget - done)
            state = advance(state, key, n)
            done += n
            record(done, state[0])  # even counts: SAM's true (not perturbed) parameters
        return curve

    if method == "LE-SGLD":
        tau = settings["le_lr"] / (beta * problem["num_train"])
        scheme = LocalEntropy(
            model,
            tau,
            sampler="sgld",
            num_chains=settings["le_chains"],
            num_samples=settings["le_inner"],
            num_warmup=0,
            sampler_kwargs={"step_size": settings["le_step"] * tau},
            averaging="exponential",
            beta=beta,
            progress_bar=False,
        )
    elif method == "HR-SVI":
        import numpyro.optim

        scheme = HeatRegularization(
            model,
            settings["hr_lr"] / (beta * problem["num_train"]),
            optim=numpyro.optim.Adam(settings["lr"]),
            num_inner_steps=settings["hr_inner"],
            num_particles=settings["hr_particles"],
            beta=beta,
            progress_bar=False,
        )
    else:
        raise ValueError(f"method: unknown {method!r}")
    state = scheme.init(key, *args, init_params=init_params, **kwargs)
    record(0, scheme.get_params(state))
    done = 0
    per_outer = None
    while done < budget:
        if per_outer is None:
            result = scheme.run(None, 1, *args, init_state=state, keep_draws=None, **kwargs)
            per_outer = int(result.info["num_grad_evals"][0])
            steps = 1
        else:
            steps = max(1, min(budget // num_checkpoints, budget - done) // per_outer)
            result = scheme.run(None, steps, *args, init_state=state, keep_draws=None, **kwargs)
        state = result.state
        done += int(result.info["num_grad_evals"].sum())
        record(done, scheme.get_params(state))
    return curve


def load_problem(hidden: int, batch_size: int, seed: int, beta: float) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from vi_entropy.data import load_mnist5k
    from vi_entropy.models import dense_network, init_network, model_sizes, num_parameters

    data = load_mnist5k(seed=seed)
    model = dense_network(data.num_features, hidden=(hidden,), num_classes=data.num_classes)
    sizes = model_sizes(model)
    return {
        "model": model,
        "beta": beta,
        "args": (jnp.asarray(data.X_train), jnp.asarray(data.y_train)),
        "kwargs": {"batch_size": batch_size},
        "test": (jnp.asarray(data.X_test), jnp.asarray(data.y_test)),
        "init_params": init_network(jax.random.PRNGKey(seed), sizes),
        "num_params": num_parameters(sizes),
        "num_train": len(data.y_train),
    }


def plot(curves: dict[str, list[dict]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([c["grad_evals"] for c in curve], [c["test_accuracy"] for c in curve],
                marker="o", ms=3, label=name)  # fmt: skip
    ax.set_xlabel("mini-batch gradient evaluations")
    ax.set_ylabel("test accuracy (mnist5k)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--budget", type=int, default=None, help="gradient evaluations per method")
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--checkpoints", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam (also SAM's and HR's)")
    p.add_argument("--sam-rho", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature of f")
    p.add_argument("--le-lr", type=float, default=0.1, help="LE: τ β N")
    p.add_argument("--le-step", type=float, default=0.1, help="SGLD step size / tau")
    p.add_argument("--le-chains", type=int, default=1)
    p.add_argument("--le-inner", type=int, default=5)
    p.add_argument("--hr-lr", type=float, default=0.1, help="HR: τ β N")
    p.add_argument("--hr-inner", type=int, default=5)
    p.add_argument("--hr-particles", type=int, default=1)
    p.add_argument("--methods", nargs="*", default=["Adam", "SAM", "LE-SGLD", "HR-SVI"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    budget = a.budget or (40 if a.quick else 6_000)
    hidden = a.hidden or (4 if a.quick else 100)
    checkpoints = a.checkpoints or (2 if a.quick else 20)
    settings = {k: v for k, v in vars(a).items() if k not in ("out", "quick", "methods")}
    settings.update(budget=budget, hidden=hidden, checkpoints=checkpoints)
    problem = load_problem(hidden, a.batch_size, a.seed, a.beta)
    curves, rows = {}, []
    for method in a.methods:
        t0 = time.perf_counter()
        curve = train(method, problem, budget, checkpoints, settings)
        curves[method] = curve
        rows.append(
            {
                "method": method,
                "params": problem["num_params"],
                "grad_evals": curve[-1]["grad_evals"],
                "final_test_acc": curve[-1]["test_accuracy"],
                "best_test_acc": max(c["test_accuracy"] for c in curve),
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
    print()
    table = print_table(rows)
    png = a.out.with_suffix(".png") if a.out else RESULTS / "accuracy_per_cost.png"
    if not a.quick:
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(curves, png)
    write_json(
        "accuracy_per_cost",
        {"settings": settings, "num_train": problem["num_train"], "rows": rows,
         "curves": curves, "table": table},
        a.out,
        a.quick,
    )  # fmt: skip


if __name__ == "__main__":
    main()
