"""Example NumPyro models: a dense and a convolutional softmax network, Gaussian priors.

The network of the paper's experiment (dense layers, softmax likelihood) and a small
convolutional network (two convolutions and a dense head, the size the evolution-strategy
literature trains on MNIST) as ordinary NumPyro models, so that every scheme of this
package, and plain NumPyro, can train them.  Each model carries ``model.forward(params,
X)`` (its logits) and ``model.init(rng_key)`` (Glorot-uniform weights, zero biases).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from vi_entropy._compile import uniform

__all__ = [
    "accuracy",
    "conv_forward",
    "conv_network",
    "conv_shapes",
    "dense_network",
    "forward",
    "init_conv",
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


def _likelihood(
    logits: Callable, params: Mapping[str, Any], X: Any, y: Any, batch_size: int | None
) -> None:
    """``y ~ Categorical(logits(params, X))`` in a data plate subsampling ``batch_size`` rows
    (the likelihood scaled by ``N / B``)."""
    with numpyro.plate("data", X.shape[0], subsample_size=batch_size) as idx:
        Xb = X[idx] if batch_size is not None else X
        yb = None if y is None else (y[idx] if batch_size is not None else y)
        numpyro.sample("y", dist.Categorical(logits=logits(params, Xb)), obs=yb)


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
        _likelihood(forward, params, X, y, batch_size)

    model.sizes = sizes  # type: ignore[attr-defined]
    model.forward = forward  # type: ignore[attr-defined]
    model.init = lambda rng_key: init_network(rng_key, sizes)  # type: ignore[attr-defined]
    return model


def _image_side(num_features: int) -> int:
    side = int(round(np.sqrt(num_features)))
    if side * side != num_features:
        raise ValueError(
            f"num_features: a square grey-scale image's pixel count, got {num_features}."
        )
    return side


def conv_forward(params: Mapping[str, jax.Array], X: jax.Array) -> jax.Array:
    """Logits of :func:`conv_network` for parameters ``K0, c0, K1, c1, W, b``.

    The rows of ``X`` are square grey-scale images, flattened.  Each convolution (kernel
    ``K_i``, height × width × in × out, same padding) adds its bias ``c_i``, then ReLU,
    then 2 × 2 max pooling; the dense head ``h W + b`` maps the flattened features to
    the logits.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> model = conv_network(64)
    >>> conv_forward(model.init(jax.random.PRNGKey(0)), jnp.ones((5, 64))).shape
    (5, 10)
    """
    side = _image_side(X.shape[-1])
    h = X.reshape(X.shape[0], side, side, 1)
    n_conv = sum(1 for k in params if k.startswith("K"))
    for i in range(n_conv):
        h = jax.lax.conv_general_dilated(
            h, params[f"K{i}"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + params[f"c{i}"])
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
    return h.reshape(h.shape[0], -1) @ params["W"] + params["b"]


def conv_shapes(
    num_features: int, channels: Sequence[int], kernel: int, num_classes: int
) -> dict[str, tuple[int, ...]]:
    """The parameters' shapes of :func:`conv_network`, in the order its sites are sampled.

    Example
    -------
    >>> conv_shapes(784, (8, 16), 5, 10)["W"]
    (784, 10)
    """
    side = _image_side(num_features)
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 1
    for i, c_out in enumerate(channels):
        shapes[f"K{i}"] = (kernel, kernel, c_in, int(c_out))
        shapes[f"c{i}"] = (int(c_out),)
        c_in = int(c_out)
        side = -(-side // 2)  # 2 × 2 pooling, same padding
    shapes["W"] = (side * side * c_in, num_classes)
    shapes["b"] = (num_classes,)
    return shapes


def init_conv(rng_key: Any, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    """Glorot-uniform kernels and dense weights (fans counted over the receptive field),
    zero biases, for the ``shapes`` of :func:`conv_shapes`."""
    params = {}
    keys = jax.random.split(rng_key, len(shapes))
    for key, (name, shape) in zip(keys, shapes.items(), strict=True):
        if len(shape) == 1:
            params[name] = jnp.zeros(shape)
            continue
        field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        limit = np.sqrt(6.0 / (field * (shape[-2] + shape[-1])))
        params[name] = uniform(key, shape, minval=-limit, maxval=limit)
    return params


def conv_network(
    num_features: int,
    channels: Sequence[int] = (8, 16),
    kernel: int = 5,
    num_classes: int = 10,
    prior_scale: float = 1.0,
) -> Callable[..., Any]:
    """A Bayesian convolutional classifier: Gaussian priors on every weight, softmax
    likelihood.

    Two ``kernel × kernel`` convolutions (``channels`` feature maps, ReLU, 2 × 2 max
    pooling) and a dense head, as :func:`conv_forward` computes them; on 28 × 28 images
    with the defaults it has 11,274 parameters, EvoJAX's MNIST network.  Like
    :func:`dense_network`, the model is ``model(X, y=None, batch_size=None)`` on flattened
    square images, with a subsampling data plate.

    Parameters
    ----------
    num_features : int
        Pixels per image (a square: 64 for digits, 784 for MNIST).
    channels : sequence of int, default (8, 16)
    kernel : int, default 5
    num_classes : int, default 10
    prior_scale : float, default 1.0

    Returns
    -------
    callable
        The NumPyro model, with ``model.forward``, ``model.init`` and ``model.shapes``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro.infer.util import potential_energy
    >>> model = conv_network(784)
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> sum(v.size for v in params.values())
    11274
    >>> X, y = jnp.ones((3, 784)), jnp.array([0, 1, 2])
    >>> bool(jnp.isfinite(potential_energy(model, (X, y), {}, params)))
    True
    """
    shapes = conv_shapes(num_features, channels, kernel, num_classes)

    def model(X: jax.Array, y: jax.Array | None = None, batch_size: int | None = None) -> None:
        params = {
            name: numpyro.sample(
                name, dist.Normal(0.0, prior_scale).expand(list(shape)).to_event(len(shape))
            )
            for name, shape in shapes.items()
        }
        _likelihood(conv_forward, params, X, y, batch_size)

    model.shapes = shapes  # type: ignore[attr-defined]
    model.forward = conv_forward  # type: ignore[attr-defined]
    model.init = lambda rng_key: init_conv(rng_key, shapes)  # type: ignore[attr-defined]
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
        params[f"W{i}"] = uniform(keys[i], (n_in, n_out), minval=-limit, maxval=limit)
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
