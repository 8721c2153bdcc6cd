"""The host loop: dispatch outer step ``k + 1`` before reading step ``k``.

:class:`Observers` holds a run's observers (:mod:`vi_entropy.observers`) and its
:class:`~vi_entropy.observers.RunRecord`, and owns the one-step-behind pipelining: each
``update`` hands it the step just dispatched, and it settles the one before.
:func:`run_loop` is ``run``'s loop: repeated ``update`` with the same observers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vi_entropy.observers import Observer, RunRecord
from vi_entropy.types import RunResult, TwoStepState


class Observers:
    """A group of observers watching successive outer steps of one scheme.

    Pass it to ``scheme.update(state, *args, observers=obs)`` at every step, and call
    :meth:`close` after the last, which settles it (``run`` does both).

    Parameters
    ----------
    observers : iterable of Observer
        Called in order.
    record : RunRecord, optional
        The history they share (``run`` gives one with the resumed history, if any).
    keep_history : bool, default True
        Record every step's ``info`` (for :meth:`close`'s result, checkpoints and
        :class:`~vi_entropy.types.RejectedStepsError`); ``update``'s default observers
        keep none.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> from vi_entropy.observers import FaultGuard
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> state = le.init(jax.random.PRNGKey(0), 2.0)
    >>> obs = Observers([FaultGuard()])  # warnings once, RejectedStepsError as in run
    >>> for _ in range(3):
    ...     state, info = le.update(state, 2.0, observers=obs)
    >>> result = obs.close(state)
    >>> result.info["step"].tolist()
    [0, 1, 2]
    """

    def __init__(
        self,
        observers: Iterable[Observer] = (),
        record: RunRecord | None = None,
        keep_history: bool = True,
    ) -> None:
        self.observers = list(observers)
        for obs in self.observers:
            if not isinstance(obs, Observer):
                raise TypeError(
                    "observers: expected vi_entropy.observers.Observer instances, got "
                    f"{type(obs).__name__}."
                )
        self.record = record
        self.keep_history = keep_history
        self._pending: tuple[int, TwoStepState, dict] | None = None
        self._last: TwoStepState | None = None
        self._next_step = 0

    def begin(self, scheme: Any, state: TwoStepState) -> None:
        """Start the observers at ``state``, once (later calls only follow ``state``)."""
        if self.record is None:
            self.record = RunRecord(scheme, run_start=int(state.step))
        if self._last is None:
            self._next_step = int(state.step)
            for obs in self.observers:
                obs.start(self.record, state)
        elif state is not self._last:  # a state from elsewhere: follow its step count
            self._next_step = int(state.step)
        self._last = state

    @property
    def next_step(self) -> int:
        """The step count of the next step (known on the host, without waiting)."""
        return self._next_step

    def wants_draws(self, step: int) -> bool:
        return any(obs.wants_draws(step) for obs in self.observers)

    def notify(self, state: TwoStepState, info: dict, draws: Any) -> None:
        """Step ``next_step`` was dispatched, giving ``state``: settle the step before it,
        then record this one."""
        step = self._next_step
        self._settle_pending()
        if self.keep_history:
            self.record.infos.append(info)
        for obs in self.observers:
            obs.dispatched(self.record, step, state, info, draws)
        self._pending = (step, state, info)
        self._last = state
        self._next_step = step + 1

    def _settle_pending(self) -> None:
        if self._pending is not None:
            step, state, info = self._pending
            self._pending = None
            for obs in self.observers:
                obs.settled(self.record, step, state, info)

    def close(self, state: TwoStepState | None = None) -> RunResult:
        """Settle the last step, finish the observers; return the run's result."""
        state = self._last if state is None else state
        self._settle_pending()
        for obs in self.observers:
            obs.finish(self.record, state)
        return self.record.result(state)

    def interrupted(self, state: TwoStepState) -> None:
        """A ``KeyboardInterrupt``: make the record end at ``state``, tell the observers."""
        self._pending = None
        self.record.truncate(int(state.step))
        for obs in self.observers:
            obs.interrupted(self.record, state)


def run_loop(
    update: Callable[[TwoStepState, Observers], TwoStepState],
    state: TwoStepState,
    num_steps: int,
    observers: Observers,
) -> RunResult:
    """``num_steps`` calls of ``update(state, observers)``, then ``observers.close``."""
    try:
        for _ in range(num_steps):
            state = update(state, observers)
    except KeyboardInterrupt:
        observers.interrupted(state)
        raise
    return observers.close(state)
