"""The core types every module imports: states, results, draws, the inner-step protocol.

One outer step of either scheme is ``x_k -> x_{k+1}`` through an *inner step* (step 2:
a sampler whose draws are averaged, or a Gaussian fit), an object with the two pure
functions of :class:`InnerStep`; the outer step (:mod:`vi_entropy.step`) wraps it with
the τ schedule, the update of the centre and the rejection of faulty steps, and the host
loop (:mod:`vi_entropy.loop`) runs it with its observers (:mod:`vi_entropy.observers`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import numpy as np


class Draws(NamedTuple):
    """Draws of the tilted posterior from one outer step.

    - **values** - flat unconstrained draws, shape ``(chains, draws, d)``.
    - **log_weights** - importance log-weights of shape ``(chains, draws)``, or ``None``
      for (unweighted) MCMC draws.
    - **stats** - per-draw statistics, each of shape ``(chains, draws)``.

    ``result.draws[k]`` of a local-entropy run holds one per kept outer step ``k``.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> d = Draws(jnp.zeros((4, 50, 3)), None, {"acceptance_rate": jnp.ones((4, 50))})
    >>> d.values.shape, d.log_weights is None
    ((4, 50, 3), True)
    """

    values: jax.Array
    log_weights: jax.Array | None
    stats: dict[str, jax.Array]


class VIEntropyWarning(UserWarning):
    """Warnings raised by vi_entropy (turned into errors in its own test suite).

    Example
    -------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", VIEntropyWarning)  # as our test suite does
    ...     try:
    ...         warnings.warn("tau is large", VIEntropyWarning)
    ...     except VIEntropyWarning as err:
    ...         print("caught:", err)
    caught: tau is large
    """


class TwoStepState(NamedTuple):
    """State of a two-step scheme (a pytree).

    - **centre** - the current centre ``x_k``, a flat vector in the model's unconstrained
      space (``scheme.get_params(state)`` gives it named and constrained).
    - **inner** - the step-2 state: MCMC kernel states of all chains, the SVI state, ...
    - **step** - the outer step count ``k``.
    - **rng_key** - key for the next outer step.
    - **num_rejected** - consecutive rejected outer steps (see :mod:`vi_entropy.faults`).
    - **num_rejected_total** - rejected outer steps since :meth:`TwoStepScheme.init`.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> state = le.init(jax.random.PRNGKey(0), 2.0)
    >>> int(state.step), state.centre.shape
    (0, (1,))
    >>> state, info = le.update(state, 2.0)
    >>> int(state.step)
    1
    """

    centre: jax.Array
    inner: Any
    step: jax.Array
    rng_key: jax.Array
    num_rejected: jax.Array
    num_rejected_total: jax.Array = np.int32(0)


class OuterOptimState(NamedTuple):
    """``state.inner`` of a scheme given an ``outer_optim`` (our extension; a pytree).

    - **inner** - the step-2 state (what ``state.inner`` holds without ``outer_optim``).
    - **opt_state** - the outer optimizer's state (e.g. Adam's moments and count).

    Checkpoints save both; a rejected outer step leaves both as they were.

    Example
    -------
    >>> import jax, optax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   outer_optim=optax.adam(0.1), progress_bar=False)
    >>> state = le.init(jax.random.PRNGKey(0), 2.0)
    >>> type(state.inner).__name__, int(state.inner.opt_state[0].count)
    ('OuterOptimState', 0)
    """

    inner: Any
    opt_state: Any


class RunResult(NamedTuple):
    """What :meth:`TwoStepScheme.run` returns.

    - **params** - dict: latent site name -> final centre, constrained.
    - **state** - the final :class:`TwoStepState` (pass it as ``init_state`` to continue).
    - **info** - dict of per-outer-step diagnostics, each stacked over steps.
    - **draws** - dict: outer step -> :class:`~vi_entropy.inner.Draws` kept by ``run``
      (``keep_draws``), empty for heat regularization.
    - **trace** - dict of arrays over the tracked steps (``run``'s ``track_every``):
      ``step``, ``centre`` (flat, unconstrained), ``tau``, ``loss`` (``f(x_k)``),
      ``regularized_loss`` and ``regularized_loss_se`` (``F_τ(x_k)`` for local entropy,
      ``f_τ(x_k)`` for heat regularization), ``num_potential_evals`` (the tracking's
      cost) and, for local entropy, ``smoothing_ess`` (Kish ESS of the weights
      ``e^{−f}`` behind the estimate: its SE is unreliable when that is small); empty
      when tracking is off.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> result = le.run(jax.random.PRNGKey(0), 5, 2.0, track_every=1)
    >>> result.params["mu"].shape, result.info["num_potential_evals"].shape
    ((), (5,))
    >>> list(result.draws), result.trace["step"].tolist()
    ([4], [0, 1, 2, 3, 4, 5])
    """

    params: dict[str, jax.Array]
    state: TwoStepState
    info: dict[str, np.ndarray]
    draws: dict[int, Draws]
    trace: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        # A summary: the arrays themselves can run to millions of numbers.
        def shape(x: Any) -> str:
            return "(" + ", ".join(map(str, np.shape(x))) + ")"

        sites = ", ".join(f"{k}{shape(v)}" for k, v in self.params.items())
        step = getattr(self.state, "step", None)
        steps = None if step is None else int(np.asarray(jax.device_get(step)))
        trace = self.trace or {}
        tracked = len(next(iter(trace.values()))) if trace else 0
        kept = sorted(self.draws)
        draws = f"{len(kept)} step(s)"
        if kept:
            shown = kept if len(kept) <= 4 else f"{kept[0]}..{kept[-1]}"
            values = getattr(self.draws[kept[-1]], "values", None)
            draws += f" {shown}" + ("" if values is None else f", values{shape(values)}")
        return (
            f"RunResult(steps={steps}, params={{{sites}}}, info={sorted(self.info)}, "
            f"draws={{{draws}}}, trace={tracked} tracked step(s))"
        )


class RejectedStepsError(RuntimeError):
    """Too many consecutive outer steps were rejected; ``.result`` holds the last good run.

    Raised by :meth:`TwoStepScheme.run` after ``max_rejections`` consecutive outer steps
    whose proposed centre was not finite (each is rejected: the centre stays put).

    Attributes
    ----------
    result : RunResult
        The run up to the last accepted step.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> try:
    ...     result = le.run(jax.random.PRNGKey(0), 3, 2.0)
    ... except RejectedStepsError as err:
    ...     result = err.result  # keep what was good, then lower tau or the step sizes
    >>> int(result.state.step)
    3
    """

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class Context(NamedTuple):
    """What an inner step sees of one outer step besides the centre and ``τ``.

    - **args**, **kwargs** - the model's arguments (arrays traced, or compiled in).
    - **batch_key** - key of the mini-batch shared by a deterministic-potential sampler's
      chains and draws this step (``None`` for a model without a subsampled plate).
    - **with_draws** - whether the caller wants the draws (static: a Python bool); when
      not, an MCMC sampler averages them as it makes them (``O(chains × d)`` memory).
    """

    args: tuple
    kwargs: dict
    batch_key: Any = None
    with_draws: bool = True


class ChainBudget(NamedTuple):
    """What vectorized chains ran in one outer step: the input of a kernel's counts.

    An MCMC kernel may define ``evaluation_counts(state, stats, budget) -> dict`` (its
    ``num_grad_evals`` and ``num_potential_evals`` for the step, all chains; ``state`` is
    the chains' final state, ``stats`` the kept draws' statistics) and, if a transition's
    cost varies, ``transition_evals(state) -> [logical, executed]`` for the last
    transition of vectorized chains; see :mod:`vi_entropy.inner.mcmc`.

    - **chains** - the number of chains.
    - **transitions** - kernel transitions per chain (kept draws times thinning).
    - **warmup** - warm-up transitions per chain this step (0 when warm-started).
    - **init** - value-and-gradient evaluations of ``initialize_model`` (with
      ``readapt``: one per chain; else 0).
    - **readapt** - whether the step re-initialized the kernel.
    - **unkept** - ``transition_evals`` summed over the transitions whose statistics
      were not kept (warm-up, thinning), shape ``(2,)``.
    - **refreshes** - refreshes of the cached energies per chain (``refresh``): one,
      or two at a step with a warm-up (before it, kept only for a subsampled plate's
      new mini-batch, and after it).
    """

    chains: int
    transitions: Any
    warmup: Any
    init: int
    readapt: bool
    unkept: jax.Array
    refreshes: Any = 1


@runtime_checkable
class InnerStep(Protocol):
    """Step 2 of an outer step: from the tilted posterior around ``centre`` to a mean.

    Two pure functions (no ``jax.jit`` inside; the outer step compiles them):

    - ``init(rng_key, centre, tau, ctx) -> state``: the inner state at the first centre
      (MCMC chains after their warm-up, an SVI state, ...).
    - ``step(state, rng_key, centre, tau, ctx) -> (mean, state, info, draws)``: the
      fitted mean ``m_k``, the inner state for the next outer step, a dict of scalar
      diagnostics (a ``"fault"`` bit mask among them, see :mod:`vi_entropy.faults`) and
      the :class:`Draws` (``None`` when ``ctx.with_draws`` is false or there are none).

    Optionally ``warnings(info, step) -> dict[name, message]``: host-side warnings about
    one step's (fetched) ``info``, each shown once per run; and ``draw_diagnostics``: the
    names of the host-computed per-step diagnostics of its draws (``max_rhat``,
    ``min_ess``).
    """

    def init(self, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context) -> Any: ...

    def step(
        self, state: Any, rng_key: Any, centre: jax.Array, tau: Any, ctx: Context
    ) -> tuple[jax.Array, Any, dict, Draws | None]: ...
