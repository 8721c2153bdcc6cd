"""A short real example: a Bayesian dense network on scikit-learn's digits.

Trains the same NumPyro model from the same initialization with local entropy (NUTS,
SGLD, importance sampling) and heat regularization (SVI), then prints test accuracy,
time per outer step and the gradient/forward evaluations each scheme spent.

Run with ``python -m vi_entropy.demo`` (``--steps`` and ``--hidden`` change the size).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpyro.optim

from vi_entropy import HeatRegularization, LocalEntropy
from vi_entropy.data import load_digits
from vi_entropy.models import accuracy, dense_network, init_network, model_sizes, num_parameters


def schemes(model: object, tau: float, beta: float) -> dict[str, object]:
    """The schemes the demo compares (small sizes: it must run in a minute or two)."""
    common = {"beta": beta, "progress_bar": False}
    return {
        "LE-NUTS": LocalEntropy(
            model,
            tau,
            sampler="nuts",
            num_chains=2,
            num_samples=10,
            num_warmup=50,
            sampler_kwargs={"max_tree_depth": 4},
            **common,
        ),
        "LE-SGLD": LocalEntropy(
            model,
            tau,
            sampler="sgld",
            num_chains=4,
            num_samples=20,
            num_warmup=0,
            sampler_kwargs={"step_size": 0.1 * tau},
            **common,
        ),
        "LE-importance": LocalEntropy(model, tau, sampler="importance", num_samples=512, **common),
        "HR-SVI": HeatRegularization(
            model,
            tau,
            optim=numpyro.optim.Adam(3e-2),
            num_inner_steps=20,
            num_particles=4,
            **common,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="outer steps per scheme (30)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units (32)")
    parser.add_argument("--tau", type=float, default=0.05, help="variance tau (0.05)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)

    data = load_digits(seed=args.seed)
    model = dense_network(data.num_features, (args.hidden,), data.num_classes)
    sizes = model_sizes(model)
    init = init_network(jax.random.PRNGKey(args.seed), sizes)
    n = len(data.y_train)
    print(
        f"digits: {n} train / {len(data.y_test)} test images, network {sizes} "
        f"({num_parameters(sizes)} parameters), tau={args.tau}, {args.steps} outer steps; "
        f"loss f = potential / {n} (beta = 1/N)"
    )
    print(f"initial test accuracy {accuracy(init, data.X_test, data.y_test):.3f}")
    print(f"{'scheme':<15}{'test acc':>9}{'s/step':>9}{'grad evals':>12}{'fwd evals':>11}")
    for name, scheme in schemes(model, args.tau, 1.0 / n).items():
        key = jax.random.PRNGKey(args.seed + 1)
        state = scheme.init(key, data.X_train, data.y_train, init_params=init)
        state, _ = scheme.update(state, data.X_train, data.y_train)  # compile
        jax.block_until_ready(state.centre)
        start = time.perf_counter()
        result = scheme.run(
            key, args.steps - 1, data.X_train, data.y_train, init_state=state, keep_draws=None
        )
        jax.block_until_ready(result.state.centre)
        per_step = (time.perf_counter() - start) / max(args.steps - 1, 1)
        acc = accuracy(result.params, data.X_test, data.y_test)
        grads = int(result.info["num_grad_evals"].sum())
        fwd = int(result.info["num_potential_evals"].sum())
        print(f"{name:<15}{acc:>9.3f}{per_step:>9.3f}{grads:>12d}{fwd:>11d}")


if __name__ == "__main__":
    main()
