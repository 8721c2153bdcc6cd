"""How draws of the tilted posterior become its mean: local entropy's step 2.

Local entropy minimizes the forward KL ``KL(φ_k ‖ N(m, τI))``; the minimizer is the mean
of ``φ_k`` (moment matching), estimated from draws (:func:`moment_match`) or accumulated
draw by draw (:func:`running_average`) when the draws themselves are not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vi_entropy.types import Draws

AVERAGING = ("arithmetic", "exponential")


def moment_match(
    draws: Draws,
    start: jax.Array,
    averaging: str = "arithmetic",
    ema_decay: float = 0.75,
) -> jax.Array:
    """Estimate the mean of the tilted posterior from its draws.

    ``E_φ[y] ≈ Σ_j w_j y_j`` with self-normalized importance weights when
    ``draws.log_weights`` is given; otherwise the average over chains of each chain's

    * ``"arithmetic"`` mean ``(1/S) Σ_t y_t`` (default), or
    * ``"exponential"`` moving average ``μ ← ρ μ + (1 - ρ) y_t`` started at ``μ = start``
      (the centre), with ``ρ = ema_decay``, as in Entropy-SGD's inner loop.

    This is local entropy's step 2: ``argmin_m KL(φ_k ‖ N(m, τI)) = E_{φ_k}[y]``.

    Parameters
    ----------
    draws : Draws
        Values of shape ``(chains, draws, d)``, optional log-weights.
    start : jax.Array
        The centre ``x_k`` (flat), where the exponential average starts.
    averaging : {"arithmetic", "exponential"}, default "arithmetic"
        How unweighted draws are averaged.
    ema_decay : float, default 0.75
        ``ρ`` of the exponential average.

    Returns
    -------
    jax.Array
        The estimated mean, shape ``(d,)``; ``NaN`` when every importance weight is zero
        (the caller rejects the step).

    Example
    -------
    >>> import jax.numpy as jnp
    >>> from vi_entropy.types import Draws
    >>> values = jnp.array([[[0.0], [2.0]], [[4.0], [6.0]]])  # 2 chains, 2 draws, d = 1
    >>> moment_match(Draws(values, None, {}), jnp.zeros(1)).tolist()
    [3.0]
    >>> weighted = Draws(values, jnp.log(jnp.array([[1.0, 0.0], [0.0, 1.0]])), {})
    >>> moment_match(weighted, jnp.zeros(1)).tolist()  # self-normalized weights
    [3.0]
    """
    values = draws.values
    d = values.shape[-1]
    if draws.log_weights is not None:
        log_w = jnp.ravel(draws.log_weights)
        w = jax.nn.softmax(log_w)
        mean = w @ values.reshape(-1, d)
        return jnp.where(jnp.all(jnp.isneginf(log_w)), jnp.nan, mean)
    if averaging == "arithmetic":
        return jnp.mean(values, axis=(0, 1))
    if averaging == "exponential":
        s = values.shape[1]
        rho = jnp.asarray(ema_decay, values.dtype)
        # μ_S = ρ^S start + (1 - ρ) Σ_t ρ^(S-1-t) y_t, in closed form instead of a scan.
        weights = (1 - rho) * rho ** jnp.arange(s - 1, -1, -1, dtype=values.dtype)
        per_chain = rho**s * start + jnp.einsum("t,ctd->cd", weights, values)
        return jnp.mean(per_chain, axis=0)
    raise ValueError(f"averaging: expected one of {AVERAGING}, got {averaging!r}.")


class RunningAverage(NamedTuple):
    """The per-chain average of :func:`moment_match`, accumulated draw by draw.

    ``acc = init(start)`` with ``start`` the centre broadcast to ``(chains, d)``;
    ``acc = update(acc, y)`` for each draw ``y`` of shape ``(chains, d)``;
    ``result(acc, num_draws)`` is the mean over chains, equal to :func:`moment_match`
    of the stacked draws up to floating-point rounding.  Samplers use it when the draws
    themselves are not wanted, so memory is ``O(chains × d)`` instead of
    ``O(chains × draws × d)``.
    """

    init: Callable[[jax.Array], jax.Array]
    update: Callable[[jax.Array, jax.Array], jax.Array]
    result: Callable[[jax.Array, int], jax.Array]


def running_average(averaging: str = "arithmetic", ema_decay: float = 0.75) -> RunningAverage:
    """The streaming form of :func:`moment_match` for unweighted draws."""
    if averaging == "arithmetic":
        return RunningAverage(
            jnp.zeros_like, lambda acc, y: acc + y, lambda acc, n: jnp.mean(acc, axis=0) / n
        )
    if averaging == "exponential":
        rho = ema_decay
        return RunningAverage(
            lambda start: start,
            lambda acc, y: rho * acc + (1 - rho) * y,
            lambda acc, n: jnp.mean(acc, axis=0),
        )
    raise ValueError(f"averaging: expected one of {AVERAGING}, got {averaging!r}.")
