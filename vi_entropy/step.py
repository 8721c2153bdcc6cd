"""The outer step: an inner step, the τ schedule, the move of the centre, fault rejection.

``x_{k+1} = (1 − α) x_k + α m_k`` with ``m_k`` the inner step's mean (``α = 1`` is the
paper), or with an Optax ``outer_optim`` an update on the direction ``(x_k − m_k)/τ_k``.
Built by :func:`outer_step` from parts, as pure functions of their arguments; the
rejection of a faulty step wraps the proposal in the manner of ``optax.apply_if_finite``
(:func:`reject_faults`).  Nothing here compiles: the scheme jits the two functions once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import random

from vi_entropy.faults import Fault, all_finite, flag
from vi_entropy.model_args import StaticArgs, merge_args
from vi_entropy.sharding import BatchSharding
from vi_entropy.types import Context, Draws, InnerStep, OuterOptimState, TwoStepState


def tau_at(tau: float | Callable[[Any], Any], step: Any, dtype: Any = None) -> jax.Array:
    """``τ`` at outer step ``step``: a constant, or a schedule evaluated (traceably)."""
    return jnp.asarray(tau(step) if callable(tau) else tau, dtype)


class Proposal(NamedTuple):
    """What one outer step proposes before the fault check (a pytree)."""

    centre: jax.Array
    inner: Any
    tau: jax.Array
    info: dict
    draws: Draws | None


class OuterStep(NamedTuple):
    """The pure functions of an outer step (the scheme compiles each once).

    - **init** - ``(rng_key, centre, dynamic, static) -> inner state`` (what
      ``state.inner`` holds at step 0).
    - **step** - ``(state, dynamic, static, with_draws) -> (state, info, draws)``.

    ``dynamic``/``static`` are the model arguments split by
    :func:`~vi_entropy.model_args.partition_args`.
    """

    init: Callable
    step: Callable


def move_centre(alpha: float, outer_optim: optax.GradientTransformation | None) -> Callable:
    """``(centre, mean, tau, opt_state) -> (proposal, opt_state)``: the update of ``x_k``."""
    if outer_optim is None:
        return lambda centre, mean, tau, opt_state: ((1 - alpha) * centre + alpha * mean, None)

    def optimizer_step(centre: jax.Array, mean: jax.Array, tau: Any, opt_state: Any) -> tuple:
        # Our extension: an Optax step on the direction ∇F_τ(x_k) = (x_k − m_k)/τ_k.
        updates, opt_state = outer_optim.update((centre - mean) / tau, opt_state, centre)
        return optax.apply_updates(centre, updates), opt_state

    return optimizer_step


def reject_faults(propose: Callable) -> Callable:
    """Wrap ``propose(state, key, *a) -> Proposal`` into a step that rejects faults.

    A step whose proposed centre or inner state is not finite, whose ``τ`` is not
    positive, or whose inner step set a fault bit keeps the centre and inner state (as
    ``optax.apply_if_finite`` keeps parameters); ``info`` gets ``step``, ``tau``,
    ``displacement``, ``fault``, ``rejected`` and ``num_rejected_total``.
    """

    def step(state: TwoStepState, *args: Any) -> tuple[TwoStepState, dict, Draws | None]:
        key, key_step, key_batch = random.split(state.rng_key, 3)
        p = propose(state, key_step, key_batch, *args)
        info = dict(p.info)
        fault = info.pop("fault", jnp.int32(0))
        fault = fault | flag(~jnp.all(jnp.isfinite(p.centre)), Fault.NONFINITE_PROPOSAL)
        fault = fault | flag(~all_finite(p.inner), Fault.NONFINITE_STATE)
        fault = fault | flag(~(jnp.isfinite(p.tau) & (p.tau > 0)), Fault.BAD_TAU)
        ok = fault == 0
        centre = jnp.where(ok, p.centre, state.centre)
        inner = jax.tree.map(lambda new, old: jnp.where(ok, new, old), p.inner, state.inner)
        total = state.num_rejected_total + jnp.where(ok, 0, 1)
        info["step"] = state.step
        info["tau"] = p.tau
        info["displacement"] = jnp.linalg.norm(centre - state.centre)
        info["fault"] = fault
        info["rejected"] = ~ok
        info["num_rejected_total"] = total
        rejected = jnp.where(ok, 0, state.num_rejected + 1)
        return TwoStepState(centre, inner, state.step + 1, key, rejected, total), info, p.draws

    return step


def outer_step(
    inner: InnerStep,
    tau: float | Callable[[Any], Any],
    *,
    alpha: float = 1.0,
    outer_optim: optax.GradientTransformation | None = None,
    sharding: BatchSharding | None = None,
    shard_data: bool = False,
) -> OuterStep:
    """The outer step of a scheme whose step 2 is ``inner``.

    Parameters
    ----------
    inner : InnerStep
        Step 2 (a sampler whose draws are averaged, or a Gaussian fit).
    tau : float or callable
        ``τ``, or a schedule ``step -> τ`` evaluated inside the compiled step.
    alpha : float, default 1.0
        Damping of the default move (see :func:`move_centre`).
    outer_optim : optax.GradientTransformation, optional
        Move the centre by this optimizer instead; its state is ``state.inner.opt_state``.
    sharding : BatchSharding, optional
        The devices; with several, the state keeps one placement from step to step.
    shard_data : bool, default False
        Split the rows of the model's array arguments over the devices.

    Returns
    -------
    OuterStep
        ``init`` and ``step``, pure (not compiled).
    """
    sharding = sharding or BatchSharding(None)
    move = move_centre(alpha, outer_optim)
    outer = outer_optim is not None

    def context(dynamic: list, static: StaticArgs, batch_key: Any, with_draws: bool) -> Context:
        placed = sharding.constrain_rows(dynamic) if shard_data else dynamic
        args, kwargs = merge_args(placed, static)
        return Context(args, kwargs, batch_key, with_draws)

    def init(rng_key: Any, centre: jax.Array, dynamic: list, static: StaticArgs) -> Any:
        key_inner, key_batch = random.split(rng_key)
        ctx = context(dynamic, static, key_batch, True)
        state = inner.init(key_inner, centre, tau_at(tau, 0, centre.dtype), ctx)
        return OuterOptimState(state, outer_optim.init(centre)) if outer else state

    def propose(
        state: TwoStepState,
        key_step: Any,
        key_batch: Any,
        dynamic: list,
        static: StaticArgs,
        with_draws: bool = True,
    ) -> Proposal:
        ctx = context(dynamic, static, key_batch, with_draws)
        tau_k = tau_at(tau, state.step, state.centre.dtype)
        inner_state = state.inner.inner if outer else state.inner
        mean, inner_state, info, draws = inner.step(inner_state, key_step, state.centre, tau_k, ctx)
        opt_state = state.inner.opt_state if outer else None
        centre, opt_state = move(state.centre, mean, tau_k, opt_state)
        if outer:
            inner_state = OuterOptimState(inner_state, opt_state)
        return Proposal(centre, inner_state, tau_k, info, draws)

    guarded = reject_faults(propose)

    def step(
        state: TwoStepState, dynamic: list, static: StaticArgs, with_draws: bool = True
    ) -> tuple[TwoStepState, dict, Draws | None]:
        new_state, info, draws = guarded(state, dynamic, static, with_draws)
        if sharding.active:
            # Same placement in as out, so that step k + 1 reuses step k's compilation.
            whole = sharding.constrain_replicated
            inner_state = new_state.inner
            if outer:
                inner_state = OuterOptimState(inner_state.inner, whole(inner_state.opt_state))
            rest = whole(tuple(new_state[2:]))
            new_state = TwoStepState(whole(new_state.centre), inner_state, *rest)
            info = whole(info)
        return new_state, info, draws

    return OuterStep(init, step)
