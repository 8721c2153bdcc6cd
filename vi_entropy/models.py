"""Example NumPyro models: a dense softmax network with Gaussian priors.

The network of the paper's experiment (dense layers, softmax likelihood) as an ordinary
NumPyro model, so that every scheme of this package, and plain NumPyro, can train it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = [
    "accuracy",
    "dense_network",
    "forward",
    "init_network",
    "layer_sizes",
    "model_sizes",
    "num_parameters",
]


def layer_sizes(num_features: int, hidden: Sequence[int], num_classes: int) -> list[int]:
    """Widths of the layers of a dense network, input to output.

    Example
    -------
    >>> layer_sizes(64, (32, 16), 10)
    [64, 32, 16, 10]
    """
    return [int(num_features), *(int(h) for h in hidden), int(num_classes)]


def forward(params: Mapping[str, jax.Array], X: jax.Array) -> jax.Array:
    """Logits of the dense network (tanh hidden layers) for parameters ``W{i}``, ``b{i}``.

    ``h_0 = X``, ``h_{i+1} = tanh(h_i W_i + b_i)``, and the last layer has no ``tanh``.

    Parameters
    ----------
    params : dict
        ``W0, b0, W1, b1, ...`` as sampled by :func:`dense_network`'s model.
    X : jax.Array
        Inputs ``(n, features)``.

    Returns
    -------
    jax.Array
        Logits ``(n, classes)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> params = init_network(jax.random.PRNGKey(0), [4, 3, 2])
    >>> forward(params, jnp.ones((5, 4))).shape
    (5, 2)
    """
    n_layers = sum(1 for k in params if k.startswith("W"))
    h = X
    for i in range(n_layers):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            h = jnp.tanh(h)
    return h


def dense_network(
    num_features: int,
    hidden: Sequence[int] = (32,),
    num_classes: int = 10,
    prior_scale: float = 1.0,
) -> Callable[..., Any]:
    """A Bayesian dense classifier: ``W_i, b_i ~ N(0, prior_scale²)``, softmax likelihood.

    The returned model is ``model(X, y=None, batch_size=None)``; with ``batch_size`` the
    data plate subsamples ``batch_size`` rows (the likelihood is scaled by ``N / B``).
    Its potential energy is ``Σ_n −log softmax(forward(θ, x_n))_{y_n} + |θ|²/(2 s²)`` up
    to a constant, with ``s = prior_scale``.

    Parameters
    ----------
    num_features : int
        Inputs per example.
    hidden : sequence of int, default (32,)
        Widths of the tanh hidden layers.
    num_classes : int, default 10
        Outputs (softmax classes).
    prior_scale : float, default 1.0
        Standard deviation of the Gaussian priors on every weight and bias.

    Returns
    -------
    callable
        The NumPyro model; ``model_sizes(model)`` gives its layer widths.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro.infer.util import potential_energy
    >>> model = dense_network(4, hidden=(3,), num_classes=2)
    >>> params = init_network(jax.random.PRNGKey(0), model_sizes(model))
    >>> X, y = jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1])
    >>> bool(jnp.isfinite(potential_energy(model, (X, y), {}, params)))
    True
    """
    sizes = layer_sizes(num_features, hidden, num_classes)

    def model(X: jax.Array, y: jax.Array | None = None, batch_size: int | None = None) -> None:
        params = {}
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            params[f"W{i}"] = numpyro.sample(
                f"W{i}", dist.Normal(0.0, prior_scale).expand([n_in, n_out]).to_event(2)
            )
            params[f"b{i}"] = numpyro.sample(
                f"b{i}", dist.Normal(0.0, prior_scale).expand([n_out]).to_event(1)
            )
        with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
            Xb = X[idx] if batch_size is not None else X
            yb = None if y is None else (y[idx] if batch_size is not None else y)
            numpyro.sample("y", dist.Categorical(logits=forward(params, Xb)), obs=yb)

    model.sizes = sizes  # type: ignore[attr-defined]
    return model


def model_sizes(model: Callable[..., Any]) -> list[int]:
    """Layer sizes of a model made by :func:`dense_network`.

    Example
    -------
    >>> model_sizes(dense_network(64, hidden=(16,)))
    [64, 16, 10]
    """
    return list(model.sizes)  # type: ignore[attr-defined]


def num_parameters(sizes: Sequence[int]) -> int:
    """Weights and biases of a dense network with these layer sizes.

    Example
    -------
    >>> num_parameters([64, 16, 10])  # 64·16 + 16 + 16·10 + 10
    1210
    """
    return int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))


def init_network(rng_key: Any, sizes: Sequence[int]) -> dict[str, jax.Array]:
    """Glorot-uniform weights and zero biases, keyed like :func:`dense_network`'s sites.

    ``W_i ~ U(−a, a)`` with ``a = √(6 / (n_in + n_out))``; ``b_i = 0``.

    Parameters
    ----------
    rng_key : PRNG key
        Drives the draws.
    sizes : sequence of int
        Layer sizes (e.g. ``model_sizes(model)``).

    Returns
    -------
    dict
        ``W0, b0, ...``: usable as ``init_params`` of the schemes.

    Example
    -------
    >>> import jax
    >>> params = init_network(jax.random.PRNGKey(0), [4, 3, 2])
    >>> {k: v.shape for k, v in params.items()}
    {'W0': (4, 3), 'b0': (3,), 'W1': (3, 2), 'b1': (2,)}
    """
    params = {}
    keys = jax.random.split(rng_key, len(sizes) - 1)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        limit = np.sqrt(6.0 / (n_in + n_out))
        params[f"W{i}"] = jax.random.uniform(keys[i], (n_in, n_out), minval=-limit, maxval=limit)
        params[f"b{i}"] = jnp.zeros((n_out,))
    return params


def accuracy(params: Mapping[str, jax.Array], X: jax.Array, y: jax.Array) -> float:
    """Fraction of ``X`` classified as ``y`` by the network at ``params``.

    The predicted class is ``argmax forward(params, X)``.

    Parameters
    ----------
    params : dict
        Network parameters (e.g. ``result.params``).
    X, y : arrays
        Inputs ``(n, features)`` and integer labels ``(n,)``.

    Returns
    -------
    float
        In [0, 1].

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> params = init_network(jax.random.PRNGKey(0), [4, 3, 2])
    >>> 0.0 <= accuracy(params, jnp.ones((5, 4)), jnp.zeros(5, int)) <= 1.0
    True
    """
    return float(jnp.mean(jnp.argmax(forward(params, X), axis=-1) == y))
