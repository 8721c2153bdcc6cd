"""What the benchmark measures at a trained point: accuracy, calibration and flatness.

* :func:`classification_metrics` - accuracy, mean negative log-likelihood and expected
  calibration error (Guo et al. 2017: 15 equal-width bins of the top-class probability)
  of a classifier's logits.
* :func:`hessian_top_eigenvalue` - the largest eigenvalue of a loss's Hessian, by power
  iteration on Hessian-vector products (forward-over-reverse, never the matrix).
* :func:`cross_entropy_model` - the network's mean cross-entropy as a NumPyro model with
  flat priors, so that :func:`vi_entropy.diagnostics.heat_loss` estimates the smoothed
  training loss ``f_τ(x) = E_{y∼N(x,τI)} f(y)`` at one common ``τ`` for every method.

Flatness is measured on the *training loss per example* (mean cross-entropy, no prior),
the scale on which the literature reports Hessian eigenvalues (e.g. SAM's), not on the
summed potential the methods train on (that is ``N`` times larger).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints

__all__ = [
    "classification_metrics",
    "cross_entropy_model",
    "expected_calibration_error",
    "hessian_top_eigenvalue",
]


def expected_calibration_error(logits: Any, y: Any, num_bins: int = 15) -> float:
    """Expected calibration error of the top-class probability, ``num_bins`` equal bins.

    ``ECE = Σ_b (n_b / n) |acc_b − conf_b|`` over bins ``((b−1)/B, b/B]`` of the
    predicted class's probability ``conf``.

    Parameters
    ----------
    logits : array ``(n, classes)``
        Unnormalized log-probabilities.
    y : array ``(n,)``
        Integer labels.
    num_bins : int, default 15

    Returns
    -------
    float
        In [0, 1]; 0 for a perfectly calibrated classifier.

    Example
    -------
    >>> import numpy as np
    >>> # 80% confident and right 4 times in 5: calibrated.
    >>> logits = np.log(np.array([[0.8, 0.2]] * 5))
    >>> round(expected_calibration_error(logits, np.array([0, 0, 0, 0, 1])), 6)
    0.0
    >>> round(expected_calibration_error(logits, np.array([0, 1, 1, 1, 1])), 6)  # 0.8 vs 0.2
    0.6
    """
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1), dtype=np.float64)
    y = np.asarray(y)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == y).astype(np.float64)
    # Bin b holds confidences in ((b-1)/B, b/B]; a confidence of exactly 0 cannot occur.
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        inside = bins == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_metrics(logits: Any, y: Any, num_bins: int = 15) -> dict[str, float]:
    """Accuracy, mean negative log-likelihood and ECE of ``logits`` for labels ``y``.

    Example
    -------
    >>> import numpy as np
    >>> m = classification_metrics(np.log(np.array([[0.5, 0.5], [0.9, 0.1]])), np.array([1, 0]))
    >>> m["accuracy"], round(m["nll"], 4)  # argmax of a tie is class 0
    (0.5, 0.3993)
    """
    logits = jnp.asarray(logits)
    y = jnp.asarray(y)
    nll = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y)
    return {
        "accuracy": float(jnp.mean(jnp.argmax(logits, axis=-1) == y)),
        "nll": float(jnp.mean(nll)),
        "ece": expected_calibration_error(logits, y, num_bins),
    }


def hessian_top_eigenvalue(
    loss: Callable[[Any], jax.Array],
    params: Any,
    rng_key: Any,
    num_iters: int = 20,
) -> jax.Array:
    """The largest-magnitude eigenvalue of ``∇²loss(params)``, by power iteration.

    Each iteration is one Hessian-vector product (``jax.jvp`` of ``jax.grad``: about two
    gradients' cost); the estimate is the Rayleigh quotient ``vᵀHv`` of the last unit
    vector.  At a minimum the Hessian's large eigenvalues are positive, and this is the
    top one (the sharpness measure of Keskar et al. 2017 and SAM's papers).

    Parameters
    ----------
    loss : callable
        ``loss(params) -> scalar``; ``params`` any pytree of arrays.
    params : pytree
        Where the Hessian is taken.
    rng_key : PRNG key
        The random start vector.
    num_iters : int, default 20
        Power iterations.

    Returns
    -------
    jax.Array
        A scalar.  Traceable: ``jax.jit`` it with ``loss`` and ``num_iters`` fixed.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> loss = lambda p: 0.5 * (3.0 * p["a"][0] ** 2 + p["a"][1] ** 2) + p["b"] ** 2
    >>> params = {"a": jnp.zeros(2), "b": jnp.array(1.0)}
    >>> round(float(hessian_top_eigenvalue(loss, params, jax.random.PRNGKey(0), 50)), 3)
    3.0
    """
    flat, unravel = ravel_pytree(params)

    def flat_loss(x: jax.Array) -> jax.Array:
        return loss(unravel(x))

    grad = jax.grad(flat_loss)

    def hvp(v: jax.Array) -> jax.Array:
        return jax.jvp(grad, (flat,), (v,))[1]

    def body(_: Any, v: jax.Array) -> jax.Array:
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v0 = random.normal(rng_key, flat.shape, flat.dtype)
    v = jax.lax.fori_loop(0, num_iters, body, v0 / jnp.linalg.norm(v0))
    return jnp.vdot(v, hvp(v))


def cross_entropy_model(
    forward: Callable[[Mapping[str, jax.Array], jax.Array], jax.Array],
    shapes: Mapping[str, tuple[int, ...]],
) -> Callable[..., None]:
    """The mean cross-entropy of ``forward`` as a NumPyro model with flat priors.

    ``model(X, y)`` has one latent site per entry of ``shapes`` (improper flat priors, so
    they add nothing to the potential) and a categorical likelihood scaled by ``1/n``:
    its potential energy is the mean cross-entropy on ``(X, y)``.  With it,
    :func:`~vi_entropy.diagnostics.heat_loss` estimates the smoothed training loss.

    Parameters
    ----------
    forward : callable
        ``forward(params, X) -> logits``.
    shapes : dict
        Site name -> shape of the parameters.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> from numpyro.infer.util import potential_energy
    >>> from vi_entropy.models import forward, init_network
    >>> params = init_network(jax.random.PRNGKey(0), [4, 3, 2])
    >>> model = cross_entropy_model(forward, {k: v.shape for k, v in params.items()})
    >>> X, y = jnp.ones((5, 4)), jnp.array([0, 1, 0, 1, 1])
    >>> ce = optax.losses.softmax_cross_entropy_with_integer_labels(forward(params, X), y)
    >>> bool(jnp.allclose(potential_energy(model, (X, y), {}, params), ce.mean()))
    True
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}

    def model(X: jax.Array, y: jax.Array) -> None:
        params = {
            name: numpyro.sample(
                name, dist.ImproperUniform(constraints.real, (), event_shape=shape)
            )
            for name, shape in shapes.items()
        }
        with numpyro.handlers.scale(scale=1.0 / X.shape[0]):
            with numpyro.plate("data", X.shape[0]):
                numpyro.sample("y", dist.Categorical(logits=forward(params, X)), obs=y)

    return model
