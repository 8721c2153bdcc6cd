"""Observers of the host loop: what ``run`` (and ``update``, when given them) does besides
the step itself.

Each observer has one small interface (:class:`Observer`): ``start``, ``wants_draws``,
``dispatched`` (step ``k`` was handed to the device: record what needs no host values),
``settled`` (step ``k``'s values are needed on the host: called once step ``k + 1`` is
dispatched, so the device never waits for Python) and ``finish``/``interrupted``.  They
share one :class:`RunRecord`, the history a :class:`~vi_entropy.types.RunResult` is made
of.  The observers of ``run``:

- :class:`Progress` - a tqdm progress bar;
- :class:`DrawKeeper` - which steps' draws to keep, and their R-hat/ESS on the host;
- :class:`Tracker` - ``f(x_k)`` and the regularized loss every ``track_every`` steps;
- :class:`FaultGuard` - the scheme's warnings (once per run), the first rejection said at
  once, :class:`~vi_entropy.types.RejectedStepsError` after ``max_rejections``;
- :class:`Checkpointer` - saves every ``checkpoint_every`` steps, at the end and on
  ``KeyboardInterrupt``;
- :class:`ConvergenceCheck` - at the end, warns when the run was still moving steadily
  (not converged) or when the tracked regularized loss rests on one or two draws.

``update`` without observers uses :class:`RejectionWarner` (a rejected step warns once
per kind of fault and scheme, one call late).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import random
from numpyro.diagnostics import split_gelman_rubin
from tqdm.auto import tqdm

from vi_entropy import _validation as check
from vi_entropy import checkpoint as checkpoint_io
from vi_entropy.diagnostics import (
    bulk_effective_sample_size,
    potential_with_batches,
    smoothed_losses,
)
from vi_entropy.faults import Fault, advise, describe
from vi_entropy.types import Draws, RejectedStepsError, RunResult, TwoStepState, VIEntropyWarning

# R-hat and ESS per step look at no more than this many coordinates (evenly spaced over
# the flat vector, so every site of a small model and a spread of a large one), which
# bounds the transfer and the host's work for networks with millions of parameters.
DIAGNOSED_COORDINATES = 1000
# Fraction of a run's evaluations of ``f`` that tracking may take by default.
TRACK_BUDGET = 0.1


def chain_diagnostics(draws: Draws) -> dict[str, float]:
    """Worst-coordinate split R-hat and ESS of one outer step's MCMC draws (on the host).

    ``max_rhat``: the largest split R-hat over coordinates
    (:func:`numpyro.diagnostics.split_gelman_rubin`, needs 4 draws per chain);
    ``min_ess``: the smallest bulk effective sample size over coordinates, all chains
    together (:func:`~vi_entropy.diagnostics.bulk_effective_sample_size`: ArviZ's
    ``ess(method="bulk")``, rank-normalized split chains; never negative).  Models with
    more than ``DIAGNOSED_COORDINATES`` (1000) unconstrained coordinates are diagnosed on
    that many, evenly spaced, so the worst value is over that subset.  ``NaN`` when there
    are too few draws.  Importance draws (weighted) get neither: their ESS is
    ``importance_ess``.
    """
    if draws.log_weights is not None:
        return {}
    values = draws.values
    d = values.shape[-1]
    if d > DIAGNOSED_COORDINATES:
        values = values[..., np.linspace(0, d - 1, DIAGNOSED_COORDINATES).astype(np.int64)]
    values = np.asarray(values, np.float64)
    if values.shape[1] < 4:
        return {"max_rhat": np.nan, "min_ess": np.nan}
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat = split_gelman_rubin(values)
        ess = bulk_effective_sample_size(values)
    # A coordinate that never moved (all draws equal) has no R-hat; it is not "worst".
    return {
        "max_rhat": float(np.nanmax(rhat)) if np.any(np.isfinite(rhat)) else np.nan,
        "min_ess": float(np.nanmin(ess)) if np.any(np.isfinite(ess)) else np.nan,
    }


def stack(infos: list[dict]) -> dict[str, np.ndarray]:
    """Stack per-step diagnostics on the host (one transfer, no compilation per length)."""
    if not infos:
        return {}
    infos = jax.device_get(infos)
    return {k: np.stack([i[k] for i in infos]) for k in infos[0]}


def concat(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step diagnostics of two consecutive stretches of a run, stacked (a stretch
    of no steps, such as a checkpoint's before step 0, may lack keys)."""
    if _no_steps(first):
        return dict(second)
    if _no_steps(second):
        return dict(first)
    return {k: np.concatenate([first[k], second[k]]) for k in second}


def _no_steps(stretch: dict[str, np.ndarray]) -> bool:
    return all(len(v) == 0 for v in stretch.values())


@dataclass
class RunRecord:
    """The history of a run that observers write and a :class:`RunResult` is made of.

    ``infos`` (on the device until fetched), ``host`` (R-hat/ESS per step), ``traces``
    and ``draws`` cover this stretch of the run; ``prior_info``/``prior_trace`` what a
    resumed checkpoint held; ``run_start`` is the step count where the whole run began
    and ``done`` the steps of it before this stretch.
    """

    scheme: Any
    dynamic: list = field(default_factory=list)
    static: Any = None
    num_steps: int = 0
    run_start: int = 0
    done: int = 0
    infos: list = field(default_factory=list)
    fetched: list = field(default_factory=list)
    host: list = field(default_factory=list)
    traces: list = field(default_factory=list)
    draws: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)
    prior_info: dict = field(default_factory=dict)
    prior_trace: dict = field(default_factory=dict)
    pending: tuple | None = None  # (step, draws) waiting for their diagnostics
    good: TwoStepState | None = None
    track_every: int | None = None

    def diagnose_pending(self, upto: int) -> None:
        """R-hat/ESS of the pending step's draws, if that step is before ``upto``."""
        if self.pending is not None and self.pending[0] < upto:
            draws = self.pending[1]
            self.host.append({} if draws is None else chain_diagnostics(draws))
            self.pending = None

    def history(self, stacked: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """``(info, trace)`` of the whole run, with ``stacked`` this stretch's info."""
        keys = getattr(self.scheme.inner_step, "draw_diagnostics", ())
        keys = sorted(set(keys) | {k for h in self.host for k in h})
        if keys:
            stacked = dict(stacked)
            for key in keys:
                stacked[key] = np.asarray([h.get(key, np.nan) for h in self.host], np.float64)
        return concat(self.prior_info, stacked), concat(self.prior_trace, stack(self.traces))

    def result(self, state: TwoStepState, upto: int | None = None) -> RunResult:
        """The :class:`RunResult` at ``state`` with the history recorded so far (up to
        step ``upto``, default ``state``'s)."""
        self.diagnose_pending(int(state.step) if upto is None else upto)
        info, trace = self.history(stack(self.infos))
        return RunResult(self.scheme.get_params(state), state, info, self.draws, trace)

    def truncate(self, step: int) -> None:
        """Forget what was recorded of steps at or after ``step`` (an interrupt can arrive
        between recording a step and taking its state)."""
        kept = step - self.run_start - self.done
        del self.infos[kept:]
        del self.host[kept:]
        if self.pending is not None and self.pending[0] >= step:
            self.pending = None
        for s in [s for s in self.draws if s >= step]:
            del self.draws[s]
        self.traces[:] = [t for t in self.traces if int(t["step"]) <= step]


class Observer:
    """The interface of an observer of the host loop; every method is optional."""

    def start(self, record: RunRecord, state: TwoStepState) -> None:
        """Before the first step (``state`` is where the loop starts)."""

    def wants_draws(self, step: int) -> bool:
        """Whether step ``step`` should return its draws."""
        return False

    def dispatched(
        self, record: RunRecord, step: int, state: TwoStepState, info: dict, draws: Any
    ) -> None:
        """Step ``step`` was dispatched: ``state`` is its output (still on the device)."""

    def settled(self, record: RunRecord, step: int, state: TwoStepState, info: dict) -> None:
        """Step ``step``'s values may be read (step ``step + 1`` is already dispatched)."""

    def finish(self, record: RunRecord, state: TwoStepState) -> None:
        """After the last step was settled."""

    def interrupted(self, record: RunRecord, state: TwoStepState) -> None:
        """On ``KeyboardInterrupt``; ``record`` holds steps up to ``state`` only."""


class Progress(Observer):
    """A tqdm progress bar over the run's outer steps."""

    def __init__(self, desc: str, disable: bool = False) -> None:
        self.desc, self.disable, self.bar = desc, disable, None

    def start(self, record: RunRecord, state: TwoStepState) -> None:
        self.bar = tqdm(
            total=record.num_steps, initial=record.done, desc=self.desc, disable=self.disable
        )

    def dispatched(self, record: RunRecord, step: int, state: Any, info: dict, draws: Any) -> None:
        self.bar.update(1)

    def finish(self, record: RunRecord, state: TwoStepState) -> None:
        self.bar.close()

    interrupted = finish


def keep_rule(keep_draws: str | Sequence[int] | None) -> Callable[[int], bool]:
    """Which outer steps' draws to keep ("last" keeps each and drops the previous)."""
    if keep_draws is None:
        return lambda step: False
    if keep_draws in ("last", "all"):
        return lambda step: True
    if isinstance(keep_draws, str):
        raise ValueError(
            f"keep_draws: expected 'last', 'all', None or a list of steps, got {keep_draws!r}."
        )
    wanted = {check.count("keep_draws[i]", s, minimum=0) for s in keep_draws}
    return lambda step: step in wanted


class DrawKeeper(Observer):
    """Keeps the draws of the steps ``keep_draws`` names, and computes every step's
    R-hat/ESS on the host while the device runs the next step."""

    def __init__(self, keep_draws: str | Sequence[int] | None = "last") -> None:
        self.keep = keep_rule(keep_draws)
        self.last_only = keep_draws == "last"

    def wants_draws(self, step: int) -> bool:
        return self.keep(step)

    def dispatched(self, record: RunRecord, step: int, state: Any, info: dict, draws: Any) -> None:
        record.diagnose_pending(step)
        record.pending = (step, draws)
        if draws is not None:
            if self.last_only:
                record.draws.clear()
            record.draws[step] = draws

    def finish(self, record: RunRecord, state: TwoStepState) -> None:
        record.diagnose_pending(int(state.step))


def default_track_every(info: Mapping[str, Any], track_samples: int) -> int:
    """Track every ``e`` steps so that tracking costs at most ``TRACK_BUDGET`` of the run."""
    cost = max(int(info.get("num_potential_evals", -1)), int(info.get("num_grad_evals", -1)))
    if cost <= 0:  # a sampler that does not count its evaluations
        return 10
    return max(1, math.ceil((track_samples + 1) / (TRACK_BUDGET * cost)))


class Tracker(Observer):
    """Records ``f(x_k)`` and the regularized loss at the first centre, every
    ``track_every`` steps and at the last (``None``: chosen after the first step so that
    tracking costs at most 10% of the inner evaluations)."""

    def __init__(self, track_every: int | None, track_samples: int = 256) -> None:
        self.every, self.samples = track_every, track_samples
        self._first: TwoStepState | None = None

    def _track(self, record: RunRecord, state: TwoStepState) -> None:
        scheme = record.scheme
        record.traces.append(
            scheme._track_jit(state, record.dynamic, static=record.static, num_samples=self.samples)
        )

    def _track_first(self, record: RunRecord) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            self._track(record, first)

    def start(self, record: RunRecord, state: TwoStepState) -> None:
        if self.every is not None:  # else a resumed run's cadence, or chosen at step 1
            record.track_every = self.every
        if record.track_every != 0 and record.done == 0 and record.num_steps > 0:
            # Estimated once the first step is dispatched. The estimator is traced here
            # and compiled on a worker thread, while this one traces and compiles the
            # step: a first run's two compilations overlap. (Interrupted before the
            # first dispatch, the estimate is dropped: a resumed run starts from step 0
            # and makes it.)
            self._first = state
            record.scheme._track_jit.prepare(
                state, record.dynamic, static=record.static, num_samples=self.samples
            )

    def dispatched(self, record: RunRecord, step: int, state: Any, info: dict, draws: Any) -> None:
        self._track_first(record)
        if record.track_every is None:
            record.track_every = default_track_every(info, self.samples)
        i = step - record.run_start + 1  # steps of the run done, this one included
        every = record.track_every
        if every and (i % every == 0 or i == record.num_steps):
            self._track(record, state)


# Stream of the tracking keys: ``fold_in(state.rng_key, _TRACK_STREAM)`` leaves the run's
# own keys untouched, so tracking never changes the iterates.
_TRACK_STREAM = 0x7AC4


def track_losses(tilted: Any, loss_name: str) -> Callable:
    """The tracking estimator: ``(state, tau, args, kwargs, num_samples) -> dict`` of
    ``f(x_k)`` and the regularized loss ``loss_name`` (``"local_entropy"`` or
    ``"heat_loss"``) with its standard error at the centre of ``state`` (pure)."""

    def estimate(state: TwoStepState, tau: Any, args: tuple, kwargs: dict, num_samples: int):
        key = random.fold_in(state.rng_key, _TRACK_STREAM)
        key_loss, key_smooth = random.split(key)
        potential = potential_with_batches(tilted, args, kwargs)
        smoothed = smoothed_losses(potential, state.centre, tau, key_smooth, num_samples)
        value = getattr(smoothed, loss_name)
        out = {
            "step": state.step,
            "centre": state.centre,
            "tau": tau,
            "loss": potential(state.centre, key_loss),
            "regularized_loss": value.value,
            "regularized_loss_se": value.se,
            "num_potential_evals": jnp.asarray(num_samples + 1),
        }
        if loss_name == "local_entropy":
            out["smoothing_ess"] = smoothed.ess  # the delta-method SE needs it not small
        return out

    return estimate


def rejection_warning(scheme: Any, fault: Any, step: int, where: str = "run") -> str:
    """The warning at the first rejected step of a run (or of ``update`` calls)."""
    mask = int(jax.device_get(fault))
    what = "; ".join(describe(mask)) or "unknown"
    advice = "; ".join(advise(mask)) or "lower tau"
    shown = (
        "Shown once per run"
        if where == "run"
        else "Shown once per kind of fault and scheme, one update later"
    )
    stops = (
        f"; after max_rejections={scheme.max_rejections} consecutive rejections "
        "run() stops with RejectedStepsError. "
        if where == "run"
        else ". "
    )
    return (
        f"{type(scheme).__name__}: outer step {step} was rejected: {what}. The centre "
        "and the inner state stayed as they were and the next step tries again"
        + stops
        + f"To try: {advice}. {shown}; info['rejected'] and info['fault'] record every "
        "step (see vi_entropy.faults)."
    )


def rejected_message(
    scheme: Any, state: TwoStepState, good: TwoStepState, infos: list[dict]
) -> str:
    """The message of :class:`RejectedStepsError`."""
    rejected = int(state.num_rejected)
    masks = jax.device_get([info["fault"] for info in infos[-rejected:]])
    counts = Counter(text for mask in masks for text in describe(mask))
    what = "; ".join(f"{text} ({n} of {len(masks)} steps)" for text, n in counts.items())
    advice = dict.fromkeys(text for mask in masks for text in advise(mask))
    last = int(state.step) - 1
    return (
        f"{type(scheme).__name__}: {rejected} consecutive outer steps were rejected "
        f"(steps {last - rejected + 1} to {last}; max_rejections={scheme.max_rejections}), "
        f"so the run stopped. What went wrong: {what or 'unknown'}. The centre never "
        f"took their values; the last good state is that after {int(good.step)} "
        f"steps. To try: {'; '.join(advice) or 'lower tau'}. The last good state is "
        "in `err.result` (pass err.result.state as init_state to continue)."
    )


def _warn(message: str) -> None:
    """Warn, pointing at the first caller outside the package (the user's run/update)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("vi_entropy"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, VIEntropyWarning, stacklevel=level)


class FaultGuard(Observer):
    """The scheme's warnings about a step (each once per run), the first rejected step
    said at once, and :class:`RejectedStepsError` after ``max_rejections`` consecutive
    rejections (default: the scheme's), with the last good run in ``err.result``."""

    def __init__(self, max_rejections: int | None = None) -> None:
        self.max_rejections = (
            None if max_rejections is None else check.count("max_rejections", max_rejections)
        )

    def start(self, record: RunRecord, state: TwoStepState) -> None:
        record.good = state

    def settled(self, record: RunRecord, step: int, state: TwoStepState, info: dict) -> None:
        scheme = record.scheme
        inner_warnings = getattr(scheme.inner_step, "warnings", None)
        if inner_warnings is not None:
            for name, message in inner_warnings(info, step).items():
                if name not in record.warned:
                    record.warned.add(name)
                    _warn(message)
        limit = self.max_rejections or scheme.max_rejections
        rejected = int(state.num_rejected)
        if rejected == 0:
            record.good = state
        elif rejected < limit and "rejected" not in record.warned:
            # The first rejection of a run is said at once, not at the error.
            record.warned.add("rejected")
            _warn(rejection_warning(scheme, info["fault"], step))
        elif rejected >= limit:
            message = rejected_message(scheme, state, record.good, record.infos)
            raise RejectedStepsError(message, record.result(record.good, int(state.step)))


# A run "still moving": over the last three quarters of its steps ``f`` at the centre,
# read at five evenly spaced steps, fell at each, and over the second half of them at no
# less than this fraction of the first half's pace per step (by chance, five noisy
# readings of a converged run fall in a row once in 120).
PACE_KEPT = 0.5
#: Readings of ``f`` behind the check.
MARKS = 5
# Tracked local entropy resting on fewer effective draws than this says nothing.
MIN_SMOOTHING_ESS = 3.0


def still_moving(losses: Sequence[float]) -> bool:
    """Whether ``f`` read at evenly spaced steps fell at each reading, the second half
    at no less than :data:`PACE_KEPT` times the first half's pace: the run has not
    begun to level off.

    Example
    -------
    >>> still_moving([40.0, 35.0, 30.0, 25.0, 20.0])
    True
    >>> still_moving([40.0, 22.0, 21.0, 20.5, 20.0])  # levelling off
    False
    >>> still_moving([40.0, 35.0, 36.0, 25.0, 20.0])  # not falling at every reading
    False
    """
    f = np.asarray(losses, np.float64)
    if len(f) < 3 or not np.all(np.isfinite(f)) or not np.all(np.diff(f) < 0):
        return False
    mid = (len(f) - 1) / 2
    lo, hi = int(np.floor(mid)), int(np.ceil(mid))
    f_mid = (f[lo] + f[hi]) / 2
    return bool(f_mid - f[-1] >= PACE_KEPT * (f[0] - f_mid))


class ConvergenceCheck(Observer):
    """At the end of a run, warn (once per run) when it ended still moving steadily
    (:func:`still_moving` on ``f`` at the centre read at :data:`MARKS` steps over the
    run's last three quarters: not converged, naming what to change), or when the
    tracked regularized loss rests on an effective sample size below 3 at most tracked
    steps or the last (its values and :func:`~vi_entropy.diagnostics.monotonicity` then
    say nothing).  The readings are the tracker's (its compiled estimate: no new
    compilation), taken from the trace where a step was tracked, else made at a cost of
    ``track_samples + 1`` evaluations; with tracking off (``track_every=0``) there are
    none and no check."""

    def __init__(self, track_samples: int = 256) -> None:
        self.samples = track_samples
        self.marks: list[tuple[int, Any]] = []

    def _at(self, n: int) -> list[int]:
        """Steps of this stretch after which ``f`` is read (the last: at ``finish``)."""
        start = n // 4
        return [start + round(j * (n - start) / (MARKS - 1)) for j in range(MARKS - 1)]

    def start(self, record: RunRecord, state: TwoStepState) -> None:
        self.marks = []

    def _read(self, record: RunRecord, state: TwoStepState) -> None:
        if record.track_every == 0:
            return
        step = int(state.step)
        tracked = [t for t in record.traces if int(t["step"]) == step]
        if tracked:
            out = tracked[-1]
        else:
            out = record.scheme._track_jit(
                state, record.dynamic, static=record.static, num_samples=self.samples
            )
        self.marks.append((step, out["loss"]))

    def settled(self, record: RunRecord, step: int, state: TwoStepState, info: dict) -> None:
        n = record.num_steps - record.done
        done = step - record.run_start - record.done + 1  # steps of this stretch so far
        if n >= 2 * MARKS and done in self._at(n) and done < n:
            self._read(record, state)

    def finish(self, record: RunRecord, state: TwoStepState) -> None:
        if not record.infos:
            return
        name = type(record.scheme).__name__
        if len(self.marks) == MARKS - 1 and "still_moving" not in record.warned:
            self._read(record, state)
            steps = [s for s, _ in self.marks]
            losses = [float(f) for _, f in self.marks]
            if still_moving(losses):
                record.warned.add("still_moving")
                info = stack(record.infos)
                advice = "; ".join(record.scheme._stall_advice(info))
                read = ", ".join(f"{f:.4g} at step {s}" for s, f in zip(steps, losses, strict=True))
                _warn(
                    f"{name}: the run ended still moving: f at the centre kept falling at "
                    f"half its earlier pace or more ({read}), so it has not converged and "
                    f"the result is not the scheme's minimizer. Try: {advice}."
                )
        trace = stack(record.traces) if record.traces else {}
        ess = trace.get("smoothing_ess")
        if ess is not None and len(ess) and "smoothing_ess" not in record.warned:
            ess = np.asarray(ess)
            low = ess < MIN_SMOOTHING_ESS
            if low[-1] or 2 * low.sum() > len(low):
                record.warned.add("smoothing_ess")
                _warn(
                    f"{name}: the tracked local entropy rests on an effective sample size "
                    f"below {MIN_SMOOTHING_ESS:g} at {low.sum()} of {len(low)} tracked steps "
                    f"(the last: {ess[-1]:.1f}, of track_samples draws): "
                    "result.trace['regularized_loss'] and monotonicity() say nothing there. "
                    "Raise track_samples, or lower tau (e^-f varies by far more than 1 over "
                    "N(x_k, tau I))."
                )


class RejectionWarner(Observer):
    """``update``'s default: a rejected step warns once per kind of fault and scheme."""

    def __init__(self) -> None:
        self.warned: set[Fault] = set()

    def settled(self, record: RunRecord, step: int, state: TwoStepState, info: dict) -> None:
        if not bool(info["rejected"]):
            return
        mask = int(jax.device_get(info["fault"]))
        new = [f for f in Fault if mask & f and f not in self.warned]
        if new:
            self.warned.update(new)
            _warn(rejection_warning(record.scheme, mask, int(info["step"]), where="update"))


class Checkpointer(Observer):
    """Saves the run to ``path`` every ``every`` outer steps, after the last one and on
    ``KeyboardInterrupt`` (format: :mod:`vi_entropy.checkpoint`)."""

    def __init__(self, path: str, every: int = 10) -> None:
        self.path, self.every = path, every

    def save(self, record: RunRecord, state: TwoStepState) -> None:
        record.diagnose_pending(int(state.step))
        record.fetched.extend(jax.device_get(record.infos[len(record.fetched) :]))
        scheme = record.scheme
        meta = {
            "jax_version": jax.__version__,
            "numpyro_version": numpyro.__version__,
            "x64": bool(jax.config.jax_enable_x64),
            "structure": scheme._checkpoint_structure(),
            "options": scheme._checkpoint_options(),
            "step": int(state.step),
            "run_start": record.run_start,
            "num_steps": record.num_steps,
            "warned": sorted(record.warned),
            "track_every": record.track_every,
        }
        info, trace = record.history(stack(record.fetched))
        checkpoint_io.save(self.path, state, meta=meta, info=info, draws=record.draws, trace=trace)

    def settled(self, record: RunRecord, step: int, state: TwoStepState, info: dict) -> None:
        i = step - record.run_start + 1
        if i % self.every == 0 or i == record.num_steps:
            self.save(record, state)

    def interrupted(self, record: RunRecord, state: TwoStepState) -> None:
        self.save(record, state)
