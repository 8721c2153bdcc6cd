"""Regularized-loss estimators and the monotone-descent check (paper, "Guarantees").

With exact steps the schemes descend their regularized loss:

* local entropy: ``F_τ(x_{k+1}) ≤ F_τ(x_k)``, ``F_τ(x) = −log E_{y∼N(x,τI)}[e^{−f(y)}]``;
* heat regularization: ``f_τ(x_{k+1}) ≤ f_τ(x_k)``, ``f_τ(x) = E_{y∼N(x,τI)}[f(y)]``.

Our steps are Monte Carlo estimates, so this module estimates both losses, with standard
errors, from ``n`` independent draws ``y_j = x + √τ ξ_j`` (the same draws serve both):

* ``F̂ = −log((1/n) Σ_j e^{−f(y_j)})`` in log space (``logsumexp``); by the delta method
  ``SE(F̂)² ≈ Var(e^{−f}) / (n · mean(e^{−f})²) = Σ_j (n w_j − 1)² / (n (n − 1))`` with
  ``w_j = softmax(−f)_j``, i.e. about ``1/ESS − 1/n`` for the Kish ESS of the weights;
* ``f̂_τ = (1/n) Σ_j f(y_j)`` with ``SE = sd(f) / √n``.

``F̂`` is biased upwards by about ``SE²/2`` (Jensen), negligible once ``SE`` is small. The
delta method needs the weights not to degenerate: when the Kish ESS is small (``f`` varies by
much more than 1 over the τ-ball) the SE of ``F̂`` is unreliable and too small, so tracking
records the ESS next to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from jax.scipy.special import logsumexp
from numpyro.diagnostics import autocovariance
from scipy import stats

from vi_entropy._compile import normal
from vi_entropy.tilted import TiltedPosterior

__all__ = [
    "Estimate",
    "bulk_effective_sample_size",
    "MonotonicityReport",
    "heat_loss",
    "kish_ess",
    "local_entropy",
    "monotonicity",
]


def kish_ess(log_weights: jax.Array) -> jax.Array:
    """Kish's effective sample size ``(Σw)² / Σw²`` of (unnormalized) log-weights.

    Not to be confused with :func:`bulk_effective_sample_size`, the autocorrelation ESS of
    MCMC chains: this one is for independent weighted draws (importance sampling), how
    many equally weighted draws they are worth.

    Parameters
    ----------
    log_weights : jax.Array
        Log-weights of any shape (flattened); ``-inf`` for zero weight.

    Returns
    -------
    jax.Array
        A scalar between 1 and the number of weights.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> round(float(kish_ess(jnp.zeros(100))), 3)  # equal weights
    100.0
    >>> round(float(kish_ess(jnp.array([0.0, -jnp.inf, -jnp.inf]))), 6)
    1.0
    """
    log_weights = jnp.ravel(log_weights)
    return jnp.exp(2 * logsumexp(log_weights) - logsumexp(2 * log_weights))


def bulk_effective_sample_size(values: Any) -> np.ndarray:
    """Bulk effective sample size of MCMC draws, as ArviZ's ``ess(method="bulk")``.

    The ESS of the rank-normalized split chains (Vehtari, Gelman, Simpson, Carpenter &
    Bürkner 2021): each chain is split in halves, the draws of all of them are replaced
    by the normal quantiles of their ranks, ``Φ⁻¹((r − 3/8)/(n + 1/4))``, and the ESS
    ``n / τ̂`` is that of Geyer's initial monotone sequence of the autocorrelations
    (:func:`numpyro.diagnostics.autocovariance`), with ArviZ's rules for where the
    sequence stops and its floor ``τ̂ ≥ 1/log10(n)``, so that antithetic draws never give
    a negative or unbounded ESS.  (ArviZ itself is used only in :mod:`vi_entropy.arviz`;
    this agrees with it to rounding.)  A coordinate whose draws are all equal gets ``n``.

    Parameters
    ----------
    values : array of shape (chains, draws, ...)
        At least 4 draws per chain.

    Returns
    -------
    numpy.ndarray
        One ESS per coordinate (shape ``values.shape[2:]``), between 0 and
        ``n log10(n)`` with ``n`` the number of draws of all chains (``NaN`` where a
        draw is not finite).

    Example
    -------
    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(4, 100, 2))  # independent draws
    >>> ess = bulk_effective_sample_size(draws)
    >>> ess.shape, bool(np.all((ess > 250) & (ess < 550)))
    ((2,), True)
    """
    x = np.asarray(values, np.float64)
    if x.ndim < 2 or x.shape[1] < 4:
        raise ValueError(
            f"values: expected draws of shape (chains, draws >= 4, ...), got {x.shape}."
        )
    half = x.shape[1] // 2
    split = np.concatenate([x[:, :half], x[:, -half:]], axis=0)  # the middle draw goes
    chains, draws = split.shape[:2]
    n = chains * draws
    flat = split.reshape(chains, draws, -1)
    ess = np.full(flat.shape[2], np.nan)
    finite = np.all(np.isfinite(flat), axis=(0, 1))
    constant = np.ptp(flat, axis=(0, 1)) < np.finfo(np.float64).resolution
    ess[finite & constant] = n
    todo = finite & ~constant
    if np.any(todo):
        ranks = stats.rankdata(flat[:, :, todo].reshape(n, -1), axis=0, method="average")
        z = stats.norm.ppf((ranks - 0.375) / (n + 0.25)).reshape(chains, draws, -1)
        acov = autocovariance(z, axis=1)  # (chains, draws, coordinates)
        mean_var = acov[:, 0].mean(axis=0) * draws / (draws - 1.0)
        var_plus = mean_var * (draws - 1.0) / draws
        if chains > 1:
            var_plus = var_plus + np.var(z.mean(axis=1), axis=0, ddof=1)
        rho = 1.0 - (mean_var - acov.mean(axis=0)) / var_plus  # (draws, coordinates)
        ess[todo] = _geyer_ess(rho, n)
    return ess.reshape(x.shape[2:])


def _geyer_ess(rho: np.ndarray, n: int) -> np.ndarray:
    """``n / τ̂`` from the autocorrelations ``rho`` (lags × coordinates), every coordinate
    at once: ArviZ's ``_ess``, whose loops are written here as array operations.

    Geyer's initial positive sequence sums the pairs ``P_k = ρ_2k + ρ_2k+1`` (``ρ_0 = 1``)
    up to the first pair whose sum is not positive, or the last pair the draws allow; the
    initial monotone sequence replaces them by their running minimum; the pair where the
    sum stopped adds its first lag (if positive, or if that pair's sum was not negative).
    """
    draws, m = rho.shape
    last_pair = max((draws - 3) // 2, 0)  # pairs 1 .. last_pair can be read
    r = np.array(rho[: 2 * last_pair + 2], dtype=np.float64)
    r[0] = 1.0
    even, odd = r[0::2], r[1::2]  # (last_pair + 1, m)
    pairs = even + odd
    stops = pairs <= 0.0
    stop = np.where(stops.any(axis=0), stops.argmax(axis=0), last_pair)
    stop = np.minimum(stop, last_pair)
    kept = np.arange(pairs.shape[0])[:, None] < stop[None, :]
    monotone = np.minimum.accumulate(pairs, axis=0)
    cols = np.arange(m)
    even_stop, pair_stop = even[stop, cols], pairs[stop, cols]
    tail = np.where(pair_stop >= 0.0, even_stop, np.maximum(even_stop, 0.0))
    tau = -1.0 + 2.0 * np.sum(np.where(kept, monotone, 0.0), axis=0) + tail
    return n / np.maximum(tau, 1.0 / np.log10(n))


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error (a pytree of arrays).

    - **value** - the estimate.
    - **se** - its standard error.

    Returned by :func:`local_entropy`, :func:`heat_loss` and
    :meth:`~vi_entropy.TwoStepScheme.regularized_loss`.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> value, se = Estimate(jnp.array(1.5), jnp.array(0.1))
    >>> round(float(value), 3), round(float(se), 3)
    (1.5, 0.1)
    """

    value: jax.Array
    se: jax.Array


class SmoothedLosses(NamedTuple):
    """Both regularized losses at one point, from the same draws ``y_j ∼ N(x, τI)``.

    - **local_entropy** - :class:`Estimate` of ``F_τ(x)``.
    - **heat_loss** - :class:`Estimate` of ``f_τ(x)``.
    - **ess** - Kish effective sample size of the weights ``e^{−f(y_j)}`` (out of ``n``);
      the SE of ``F_τ`` is trustworthy only when it is not small.
    """

    local_entropy: Estimate
    heat_loss: Estimate
    ess: jax.Array


def smoothed_losses(
    potential_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    tau: Any,
    rng_key: jax.Array,
    num_samples: int,
    batch_size: int | None = None,
) -> SmoothedLosses:
    """Estimate ``F_τ(x)`` and ``f_τ(x)`` from ``num_samples`` draws of ``N(x, τI)``.

    The pure-JAX core of :func:`local_entropy`, :func:`heat_loss` and the tracking in
    :meth:`~vi_entropy.TwoStepScheme.run`.  ``potential_fn(y, key)`` is ``f`` at a flat
    unconstrained vector ``y``; ``key`` (one per draw) picks a mini-batch for models
    with subsampled plates and may be ignored otherwise.
    """
    key_noise, key_batch = random.split(rng_key)
    xi = normal(key_noise, (num_samples, x.shape[0]), x.dtype)
    ys = x + jnp.sqrt(jnp.asarray(tau, x.dtype)) * xi
    keys = random.split(key_batch, num_samples)

    def f(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        return potential_fn(*args)

    if batch_size:
        fs = lax.map(f, (ys, keys), batch_size=batch_size)
    else:
        fs = jax.vmap(f)((ys, keys))
    n = jnp.asarray(num_samples, fs.dtype)
    lse = logsumexp(-fs)
    ratio = jnp.exp(-fs - lse) * n  # e^{-f_j} / mean_j e^{-f_j}
    le = Estimate(jnp.log(n) - lse, jnp.sqrt(jnp.sum((ratio - 1) ** 2) / (n * (n - 1))))
    heat = Estimate(jnp.mean(fs), jnp.std(fs, ddof=1) / jnp.sqrt(n))
    return SmoothedLosses(le, heat, kish_ess(-fs))


def _setup(
    model: Callable, beta: float, rng_key: Any, model_args: tuple, model_kwargs: Mapping[str, Any]
) -> TiltedPosterior:
    tilted = TiltedPosterior(model, beta)
    tilted.setup(rng_key, model_args, model_kwargs)
    return tilted


def potential_with_batches(
    tilted: TiltedPosterior, model_args: tuple, model_kwargs: Mapping[str, Any]
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``f(y, key)`` of a set-up :class:`TiltedPosterior`; ``key`` picks the mini-batch."""

    def potential(y: jax.Array, key: jax.Array) -> jax.Array:
        return tilted.potential(y, model_args, model_kwargs, key if tilted.subsamples else None)

    return potential


def _estimate(
    which: str,
    model: Callable,
    params: Mapping[str, Any],
    tau: Any,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    rng_key: Any,
    num_samples: int,
    beta: float,
    batch_size: int | None,
) -> Estimate:
    if rng_key is None:
        raise ValueError("rng_key: a PRNG key is required (e.g. jax.random.PRNGKey(0)).")
    key_setup, key = random.split(rng_key)
    tilted = _setup(model, beta, key_setup, model_args, model_kwargs)
    x = tilted.unconstrain(params)
    out = smoothed_losses(
        potential_with_batches(tilted, model_args, model_kwargs),
        x,
        tau,
        key,
        int(num_samples),
        batch_size,
    )
    return getattr(out, which)


def local_entropy(
    model: Callable,
    params: Mapping[str, Any],
    tau: Any,
    *model_args: Any,
    rng_key: Any,
    num_samples: int = 1000,
    beta: float = 1.0,
    batch_size: int | None = None,
    **model_kwargs: Any,
) -> Estimate:
    """Local entropy ``F_τ(x) = −log E_{y∼N(x,τI)}[e^{−f(y)}]`` of a NumPyro model at ``x``.

    ``f = beta · U`` is the model's potential energy in the unconstrained space and ``x``
    the unconstrained image of the constrained ``params`` (e.g. ``result.params``).
    Computed in log space; the SE is the delta method's, trustworthy while the weights
    ``e^{−f(y_j)}`` do not degenerate (see :mod:`vi_entropy.diagnostics`).  Traceable:
    ``jax.jit``/``jax.vmap`` apply with ``model``, ``num_samples``, ``batch_size`` fixed.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    params : dict
        Constrained values of all latent sites (as in ``result.params``).
    tau : float
        Variance ``τ`` of the Gaussian.
    *model_args, **model_kwargs
        The model's arguments.
    rng_key : PRNG key
        Drives the draws ``y_j`` (and the mini-batches of subsampled plates: one fresh
        batch per draw).
    num_samples : int, default 1000
        Draws ``n``; each costs one evaluation of ``f``.
    beta : float, default 1.0
        Inverse temperature.
    batch_size : int, optional
        Evaluate ``f`` on this many draws at a time (``lax.map``) to bound memory.

    Returns
    -------
    Estimate
        ``(value, se)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> est = local_entropy(model, {"x": jnp.array(0.0)}, 1.0, rng_key=jax.random.PRNGKey(0))
    >>> exact = 0.5 * jnp.log(2 * jnp.pi) + 0.5 * jnp.log(2.0)  # −log N(0; 0, 1 + τ)
    >>> bool(abs(est.value - exact) < 5 * est.se)
    True
    """
    return _estimate(
        "local_entropy",
        model,
        params,
        tau,
        model_args,
        model_kwargs,
        rng_key,
        num_samples,
        beta,
        batch_size,
    )


def heat_loss(
    model: Callable,
    params: Mapping[str, Any],
    tau: Any,
    *model_args: Any,
    rng_key: Any,
    num_samples: int = 1000,
    beta: float = 1.0,
    batch_size: int | None = None,
    **model_kwargs: Any,
) -> Estimate:
    """Heat-regularized loss ``f_τ(x) = E_{y∼N(x,τI)}[f(y)]`` of a NumPyro model at ``x``.

    ``f = beta · U`` is the model's potential energy in the unconstrained space and ``x``
    the unconstrained image of the constrained ``params``; ``SE = sd(f(y_j)) / √n``.
    Traceable like :func:`local_entropy`.

    Parameters
    ----------
    model, params, tau, *model_args, rng_key, num_samples, beta, batch_size, **model_kwargs
        As in :func:`local_entropy` (``num_samples`` defaults to 1000, ``beta`` to 1).

    Returns
    -------
    Estimate
        ``(value, se)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> est = heat_loss(model, {"x": jnp.array(1.0)}, 0.5, rng_key=jax.random.PRNGKey(0))
    >>> exact = 0.5 * jnp.log(2 * jnp.pi) + 0.5 * (1.0 + 0.5)  # E[y²/2] + log √(2π)
    >>> bool(abs(est.value - exact) < 5 * est.se)
    True
    """
    return _estimate(
        "heat_loss",
        model,
        params,
        tau,
        model_args,
        model_kwargs,
        rng_key,
        num_samples,
        beta,
        batch_size,
    )


# -- monotone descent -----------------------------------------------------------------------


# Below this Kish ESS of the weights e^{-f(y_j)}, the delta-method SE of F_τ is not trusted.
MIN_ESS = 10.0


class Rise(NamedTuple):
    """One comparison of consecutive tracked estimates where the loss rose."""

    step_from: int
    step_to: int
    rise: float
    se: float

    @property
    def z(self) -> float:
        """The rise in standard errors."""
        return self.rise / self.se if self.se > 0 else float("inf")


class MonotonicityReport(NamedTuple):
    """What :func:`monotonicity` found; ``print`` it for a readable summary.

    - **rises** - list of :class:`Rise`: consecutive tracked steps where the estimate
      rose by more than ``k`` combined standard errors.
    - **k** - the threshold in standard errors.
    - **num_comparisons** - pairs of consecutive tracked steps compared.
    - **num_skipped** - pairs not compared because ``τ`` differs between them (the
      guarantee holds for a fixed ``τ``) or an estimate is not finite.
    - **num_low_ess** - compared pairs with a local-entropy estimate whose weights have
      a Kish ESS below ``MIN_ESS``: their standard errors are unreliable (too small).
    - **num_skipped_tau** - of the skipped pairs, those skipped because ``τ`` differs:
      the loss is a different function at each ``τ``, so with a schedule that changes
      ``τ`` at every step nothing can be compared; a piecewise-constant schedule (e.g.
      ``optax.piecewise_constant_schedule``) is checked within each piece.

    Example
    -------
    >>> import numpy as np
    >>> trace = {"step": np.array([0, 1]), "regularized_loss": np.array([2.0, 3.0]),
    ...          "regularized_loss_se": np.array([0.1, 0.1]), "tau": np.full(2, 0.1)}
    >>> report = monotonicity(trace)
    >>> report.consistent, report.num_comparisons, round(report.rises[0].z, 1)
    (False, 1, 7.1)
    """

    rises: list[Rise]
    k: float
    num_comparisons: int
    num_skipped: int
    num_low_ess: int = 0
    num_skipped_tau: int = 0

    @property
    def consistent(self) -> bool:
        """True when no rise exceeds ``k`` standard errors."""
        return not self.rises

    def __str__(self) -> str:
        head = f"{self.num_comparisons} comparisons of consecutive tracked steps" + (
            f" ({self.num_skipped} skipped)" if self.num_skipped else ""
        )
        note = (
            f"\n  caution: {self.num_low_ess} comparison(s) rest on a weight ESS < {MIN_ESS:g}"
            " (unreliable SE; raise track_samples or lower tau)"
            if self.num_low_ess
            else ""
        )
        if self.num_skipped_tau:
            note += (
                f"\n  {self.num_skipped_tau} pair(s) not compared because tau differs between "
                "them: the descent guarantee holds at a fixed tau, and the regularized loss "
                "changes with tau (use a constant or piecewise-constant tau schedule to check "
                "descent within each piece)"
            )
        if self.num_comparisons == 0:
            return f"{head}: nothing could be compared.{note}"
        if self.consistent:
            return f"{head}; consistent with monotone descent (no rise > {self.k:g} SE).{note}"
        lines = [f"{head}; {len(self.rises)} rise(s) > {self.k:g} SE:{note}"]
        lines.append(f"  {'from':>6} {'to':>6} {'rise':>12} {'SE':>10} {'rise/SE':>8}")
        for r in self.rises:
            lines.append(
                f"  {r.step_from:>6d} {r.step_to:>6d} {r.rise:>12.4g} {r.se:>10.3g} {r.z:>8.1f}"
            )
        return "\n".join(lines)


def monotonicity(result_or_trace: Any, k: float = 3.0) -> MonotonicityReport:
    """List the tracked steps where the regularized-loss estimate rose by more than ``k`` SE.

    With exact steps ``F_τ`` (local entropy) or ``f_τ`` (heat regularization) never rises
    (paper, "Guarantees").  Consecutive tracked estimates ``L_a, L_b`` (steps ``a < b``,
    independent draws) are flagged when ``L_b − L_a > k · √(SE_a² + SE_b²)``.  Only
    pairs at the same ``τ`` are compared: the guarantee holds at a fixed ``τ``, and the
    loss itself changes with ``τ``, so under a schedule only the steps within a constant
    piece are compared (the report says how many pairs it skipped for this).

    Parameters
    ----------
    result_or_trace : RunResult or dict
        A :class:`~vi_entropy.RunResult` of ``run(..., track_every=...)`` or its
        ``trace`` dict (keys ``step``, ``regularized_loss``, ``regularized_loss_se``,
        ``tau``).
    k : float, default 3.0
        Threshold in combined standard errors.

    Returns
    -------
    MonotonicityReport
        ``.rises`` (empty when consistent), ``.consistent``; its ``str`` says
        "consistent with monotone descent" when nothing was flagged.

    Example
    -------
    >>> import numpy as np
    >>> trace = {"step": np.array([0, 5, 10]), "regularized_loss": np.array([9.0, 7.0, 7.9]),
    ...          "regularized_loss_se": np.array([0.1, 0.1, 0.1]), "tau": np.full(3, 0.1)}
    >>> report = monotonicity(trace)
    >>> [(r.step_from, r.step_to) for r in report.rises]
    [(5, 10)]
    >>> print(monotonicity(trace, k=10.0))
    2 comparisons of consecutive tracked steps; consistent with monotone descent (no rise > 10 SE).
    """
    trace = getattr(result_or_trace, "trace", result_or_trace)
    if not trace or "regularized_loss" not in trace:
        raise ValueError(
            "monotonicity: no tracked losses; run the scheme with tracking on "
            "(run(..., track_every=None or an int > 0))."
        )
    k = float(k)
    if not k > 0:
        raise ValueError(f"k: expected a float > 0, got {k!r}.")
    step = np.asarray(trace["step"])
    value = np.asarray(trace["regularized_loss"], np.float64)
    se = np.asarray(trace["regularized_loss_se"], np.float64)
    tau = np.asarray(trace["tau"], np.float64) if "tau" in trace else np.zeros_like(value)
    ess = np.asarray(trace.get("smoothing_ess", np.full_like(value, np.inf)), np.float64)
    rises: list[Rise] = []
    compared = skipped = low = other_tau = 0
    for a in range(len(step) - 1):
        b = a + 1
        finite = np.isfinite([value[a], value[b], se[a], se[b]]).all()
        same_tau = np.isclose(tau[a], tau[b], rtol=1e-6, atol=0.0)
        if not finite or not same_tau:
            skipped += 1
            other_tau += int(finite and not same_tau)
            continue
        compared += 1
        low += int(min(ess[a], ess[b]) < MIN_ESS)
        rise = value[b] - value[a]
        combined = float(np.hypot(se[a], se[b]))
        if rise > k * combined:
            rises.append(Rise(int(step[a]), int(step[b]), float(rise), combined))
    return MonotonicityReport(rises, k, compared, skipped, low, other_tau)
