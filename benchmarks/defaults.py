"""Defaults on a network the user wrote: LE-SGLD and HR-SVI given only the model, τ and
the number of steps, against Adam at its best learning rate, at equal gradient evaluations.

The network is written here as a plain NumPyro model (not the package's
``dense_network``): two ReLU layers, ``Normal(0, 1)`` priors on every weight and bias,
``Categorical(logits=...)`` in a plate over the full batch, Glorot-initialized through
``init_params``.  ``f`` is its potential (the negative log joint, summed over the
training images).  Every method gets the same budget of gradient evaluations ``G``:

* **Adam** (``optax.adam``) on ``f``, one gradient a step, ``G`` steps, at each learning
  rate of a grid; the one with the best mean *validation* accuracy (a split of the
  training images, never the test set) is reported;
* **LE-SGLD**: ``LocalEntropy(model, tau, sampler="sgld")``, nothing else;
* **HR-SVI**: ``HeatRegularization(model, tau)``, nothing else;
* and one lever beyond the defaults, labelled as such: **LE-SGLD cold**, the same with
  ``sampler_kwargs={"noise_scale": 0.1}`` (Entropy-SGD's "thermal noise": the chain
  samples ``exp(−U/0.01)``, a colder tilted posterior), at ``τ = 10⁻³``;

the schemes run ``G // c`` outer steps, ``c`` their gradient evaluations a step as
``info["num_grad_evals"]`` counts them (SGLD's curvature estimate at ``init``, 40, is on
top).  Each (method, setting) runs with ``--seeds`` seeds (the seed draws the Glorot
initialization and the run's key); the JSON holds every run.

    python benchmarks/defaults.py            # digits and mnist5k, 6,000 gradients, 3 seeds
    python benchmarks/defaults.py --quick    # tiny (seconds)
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

from _common import parser, print_table, write_json

ADAM_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
TAUS = (1e-3, 1e-2)
NUM_VALIDATION = {"digits": 300, "mnist5k": 500}


def network(hidden: tuple[int, ...]):
    """The user's network: ``model(X, y=None)`` and its Glorot initializer."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(X, y=None):
        sizes = [X.shape[1], *hidden, 10]
        h = X
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            W = numpyro.sample(f"W{i}", dist.Normal(0.0, 1.0).expand([a, b]).to_event(2))
            c = numpyro.sample(f"b{i}", dist.Normal(0.0, 1.0).expand([b]).to_event(1))
            h = h @ W + c
            if i < len(sizes) - 2:
                h = jax.nn.relu(h)
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=h), obs=y)
        return h

    def glorot(key, num_features):
        sizes = [num_features, *hidden, 10]
        params = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            key, sub = jax.random.split(key)
            params[f"W{i}"] = jax.random.normal(sub, (a, b)) * jnp.sqrt(2.0 / (a + b))
            params[f"b{i}"] = jnp.zeros(b)
        return params

    return model, glorot


def accuracy(model, params, X, y) -> float:
    import jax.numpy as jnp
    from numpyro import handlers

    logits = handlers.seed(handlers.substitute(model, params), 0)(X)
    return float(jnp.mean(jnp.argmax(logits, -1) == y))


def adam_run(model, p0, data, key, *, lr: float, budget: int) -> tuple[dict, int]:
    """``budget`` Adam steps on the model's potential, in one compiled scan."""
    import jax
    import optax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy

    X, y = data
    flat, unravel = ravel_pytree(p0)
    grad = jax.grad(lambda v: potential_energy(model, (X, y), {}, unravel(v)))
    opt = optax.adam(lr)

    @jax.jit
    def run(v):
        def body(carry, _):
            v, state = carry
            updates, state = opt.update(grad(v), state)
            return (optax.apply_updates(v, updates), state), None

        return jax.lax.scan(body, (v, opt.init(v)), None, length=budget)[0][0]

    return unravel(run(flat)), budget


def scheme_run(scheme, p0, data, key, *, budget: int) -> tuple[dict, int]:
    """As many outer steps as fit in ``budget`` gradient evaluations (probed on one)."""
    import numpy as np

    probe = scheme.run(key, 1, *data, init_params=p0, progress_bar=False)
    per_step = int(np.asarray(probe.info["num_grad_evals"])[0])
    steps = max(1, budget // per_step)
    result = scheme.run(key, steps, *data, init_params=p0, progress_bar=False)
    return result.params, int(np.sum(result.info["num_grad_evals"]))


def load(name: str, quick: bool):
    import jax.numpy as jnp

    from vi_entropy.data import load_digits, load_mnist5k, validation_split

    data = load_digits() if name == "digits" else load_mnist5k()
    train, val = validation_split(data, 60 if quick else NUM_VALIDATION[name], seed=0)
    if quick:
        train = train._replace(X_train=train.X_train[:200], y_train=train.y_train[:200])
    arrays = {
        "train": (jnp.asarray(train.X_train), jnp.asarray(train.y_train)),
        "validation": (jnp.asarray(val.X_test), jnp.asarray(val.y_test)),
        "test": (jnp.asarray(data.X_test), jnp.asarray(data.y_test)),
    }
    return arrays, data.num_features


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--datasets", nargs="+", default=None, help="digits mnist5k (--quick: digits)")
    p.add_argument("--budget", type=int, default=None, help="gradient evaluations (6,000)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (3)")
    a = p.parse_args(argv)

    import warnings

    import jax

    from vi_entropy import HeatRegularization, LocalEntropy, VIEntropyWarning

    budget = a.budget or (60 if a.quick else 6_000)
    datasets = a.datasets or (["digits"] if a.quick else ["digits", "mnist5k"])
    seeds = a.seeds or (1 if a.quick else 3)
    hidden = (8, 8) if a.quick else (64, 64)
    model, glorot = network(hidden)
    rates = ADAM_RATES[:1] if a.quick else ADAM_RATES
    taus = TAUS[-1:] if a.quick else TAUS
    runs: list[dict[str, Any]] = []
    for name in datasets:
        arrays, num_features = load(name, a.quick)
        settings: list[tuple[str, dict, Any]] = [
            ("adam", {"learning_rate": lr}, partial(adam_run, model, lr=lr, budget=budget))
            for lr in rates
        ]
        for tau in taus:
            le = LocalEntropy(model, tau, sampler="sgld", progress_bar=False)
            hr = HeatRegularization(model, tau, progress_bar=False)
            settings.append(("le-sgld", {"tau": tau}, partial(scheme_run, le, budget=budget)))
            settings.append(("hr-svi", {"tau": tau}, partial(scheme_run, hr, budget=budget)))
        cold = LocalEntropy(
            model, TAUS[0], sampler="sgld", sampler_kwargs={"noise_scale": 0.1}, progress_bar=False
        )
        settings.append(
            (
                "le-sgld-cold",
                {"tau": TAUS[0], "noise_scale": 0.1},
                partial(scheme_run, cold, budget=budget),
            )
        )
        for method, setting, fit in settings:
            for seed in range(seeds):
                key = jax.random.PRNGKey(seed)
                p0 = glorot(jax.random.fold_in(key, 1), num_features)
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always", VIEntropyWarning)
                    params, grads = jax.block_until_ready(fit(p0, arrays["train"], key))
                said = sorted({str(w.message).split(":")[1][:60].strip() for w in seen})
                row = {
                    "dataset": name,
                    "method": method,
                    "setting": setting,
                    "seed": seed,
                    "grad_evals": grads,
                    "wall_s": round(time.perf_counter() - start, 2),
                    "warnings": said,
                    **{
                        f"{split}_accuracy": accuracy(model, params, *arrays[split])
                        for split in ("train", "validation", "test")
                    },
                }
                runs.append(row)
                print(
                    f"{name} {method} {setting} seed {seed}: test {row['test_accuracy']:.3f} "
                    f"({grads} gradients, {row['wall_s']} s)",
                    flush=True,
                )
    table = summarize(runs)
    print_table(table)
    write_json(
        "defaults",
        {"budget": budget, "hidden": list(hidden), "seeds": seeds, "rows": runs, "table": table},
        a.out,
        a.quick,
    )


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: Adam at the learning rate of best mean validation accuracy, and each
    scheme at each τ, as mean ± sd over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = (r["dataset"], r["method"], tuple(sorted(r["setting"].items())))
        groups.setdefault(key, []).append(r)

    def stat(rows: list[dict], field: str) -> str:
        xs = [r[field] for r in rows]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.fmean(xs):.3f} ± {sd:.3f}"

    table = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        adam = {k: v for k, v in groups.items() if k[0] == dataset and k[1] == "adam"}
        best = max(adam, key=lambda k: statistics.fmean(r["validation_accuracy"] for r in adam[k]))
        chosen = [(best, adam[best])] + [
            (k, v) for k, v in groups.items() if k[0] == dataset and k[1] != "adam"
        ]
        for (_, method, setting), rows in chosen:
            table.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "setting": ", ".join(f"{k}={v:g}" for k, v in setting),
                    "test accuracy": stat(rows, "test_accuracy"),
                    "train accuracy": stat(rows, "train_accuracy"),
                    "gradients": int(statistics.fmean(r["grad_evals"] for r in rows)),
                }
            )
    return table


if __name__ == "__main__":
    main()
