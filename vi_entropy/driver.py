"""The two-step scheme shared by local entropy and heat regularization.

Every outer step ``k``: (1) shift: form the tilted posterior ``φ_k`` around ``x_k``;
(2) fit ``N(m, τI)`` to it (the scheme's inner step, :class:`~vi_entropy.types.InnerStep`);
then ``x_{k+1} = (1 − α) x_k + α m`` (``α = 1`` is the paper; ``α < 1`` is our damping),
or, with ``outer_optim`` (our extension), an Optax step on the direction ``(x_k − m)/τ``.

:class:`TwoStepScheme` is a thin shell in the manner of :class:`numpyro.infer.SVI`:
:meth:`~TwoStepScheme.init`, :meth:`~TwoStepScheme.update`, :meth:`~TwoStepScheme.run`,
:meth:`~TwoStepScheme.get_params` and a :class:`RunResult` namedtuple.  The outer step is
the pure function of :mod:`vi_entropy.step`, compiled once (the centre, ``τ`` evaluated
from its schedule, and the model's array arguments are traced data unless the model needs
them concrete: ``jit_model_args``); ``run`` is the loop of :mod:`vi_entropy.loop` over
``update`` with the observers of :mod:`vi_entropy.observers`.  A scheme is this shell
plus its inner step (:meth:`~TwoStepScheme._make_inner`) and its regularized loss.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import random
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model

from vi_entropy import _validation as check
from vi_entropy import checkpoint as checkpoint_io
from vi_entropy._compile import BackgroundJit
from vi_entropy.diagnostics import Estimate
from vi_entropy.guide import GaussianGuide
from vi_entropy.loop import Observers, run_loop
from vi_entropy.model_args import (
    TRACING_ERRORS,
    StaticArgs,
    is_array,
    merge_args,
    needs_concrete_args,
    partition_args,
    tracing_failed,
)
from vi_entropy.observers import (
    Checkpointer,
    ConvergenceCheck,
    DrawKeeper,
    FaultGuard,
    Progress,
    RejectionWarner,
    RunRecord,
    Tracker,
    _warn,
    track_losses,
)
from vi_entropy.sharding import BatchSharding
from vi_entropy.step import outer_step, tau_at
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import (
    InnerStep,
    OuterOptimState,
    RejectedStepsError,
    RunResult,
    TwoStepState,
    VIEntropyWarning,
)

__all__ = [
    "OuterOptimState",
    "RejectedStepsError",
    "RunResult",
    "TwoStepScheme",
    "TwoStepState",
    "VIEntropyWarning",
    "merge_args",
    "partition_args",
]


class TwoStepScheme:
    """Common driver of :class:`~vi_entropy.LocalEntropy` and
    :class:`~vi_entropy.HeatRegularization` (they differ only in step 2).

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.  Its ``numpyro.param`` and
        ``numpyro.mutable`` sites (a network's from ``numpyro.contrib.module``'s
        ``random_flax_module``, ``random_nnx_module`` or ``random_eqx_module``) are held
        at their initial values, as NumPyro's MCMC holds them, with a
        :class:`VIEntropyWarning` naming those that enter the density.
    tau : float or callable, default 1e-2
        Variance ``τ`` of the Gaussian factor, or a schedule ``step -> τ`` (e.g. an Optax
        schedule), evaluated inside the compiled step.
    beta : float, default 1.0
        Inverse temperature: the loss is ``f = beta * U``.
    alpha : float, default 1.0
        Damping ``x_{k+1} = (1 − α) x_k + α m`` (``α = 1`` is the paper; our extension).
    outer_optim : optax.GradientTransformation, optional
        Our extension: move the centre by this Optax optimizer instead, fed the
        direction ``g_k = (x_k − m_k)/τ_k`` (``= ∇F_τ(x_k)`` for local entropy; for heat
        regularization the same expression of its fitted mean) on the flat
        unconstrained centre, ``x_{k+1} = x_k + u_k`` with ``u_k`` the optimizer's update.
        ``None`` (the default) is the paper's step ``x_{k+1} = m_k``, which
        ``optax.sgd(tau)`` reproduces up to rounding; Entropy-SGD puts Nesterov momentum
        there (``optax.sgd(lr, momentum=0.9, nesterov=True)``), and ``optax.adam(lr)`` is
        another choice.  Its state lives in ``state.inner`` (an :class:`OuterOptimState`),
        is checkpointed and compiled with the step; only ``alpha=1`` combines with it
        (put any damping into the optimizer's learning rate).
    init_strategy : callable, default ``init_to_median``
        NumPyro init strategy for the first centre when ``init_params`` is not given.
    progress_bar : bool, default True
        Show a tqdm progress bar in :meth:`run`.
    max_rejections : int, default 10
        :meth:`run` stops with :class:`RejectedStepsError` after this many consecutive
        rejected outer steps; the centre never takes a non-finite value.
    devices : None, int, sequence of devices or ``jax.sharding.Mesh``, default None
        Devices to spread the work over (see :mod:`vi_entropy.sharding`): chains
        (local entropy's MCMC samplers), proposals (importance sampling) or particles
        (heat regularization) are split over a one-axis mesh; the result is the same as
        on one device up to floating-point rounding.  ``None``: all devices JAX sees when
        there are several (after ``jax.distributed.initialize()``, those of every
        process), else one; ``1``: one device.
    shard_data : bool, default False
        Split the rows (leading axis) of the model's array arguments over the devices
        instead, and keep chains/particles whole: data parallelism, for few chains and
        much data.
    jit_model_args : bool or None, default None
        As in :class:`numpyro.infer.MCMC`: ``True`` traces the model's array arguments
        (new data of the same shapes reuses the compiled step); ``False`` compiles them
        in as constants, so that a model may call NumPy on its data (e.g.
        ``len(np.unique(dept))``), at one compilation per run and per distinct data.
        ``None`` traces them unless the model needs them concrete (found by tracing the
        model once at set-up), in which case it behaves as ``False``.  ``shard_data``
        needs traced arguments.

    Notes
    -----
    Faults: an outer step whose proposal, inner draws or inner state is not finite (and
    the other faults listed in :mod:`vi_entropy.faults`) is rejected: the centre and the
    inner state stay as they were and the next step tries again with fresh randomness.
    Every step's ``info`` has ``fault`` (a :class:`~vi_entropy.faults.Fault` bit mask),
    ``rejected`` and ``num_rejected_total``.

    Example
    -------
    The SVI-like loop, one compiled step at a time:

    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from vi_entropy import LocalEntropy
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
    ...                   progress_bar=False)
    >>> state = le.init(jax.random.PRNGKey(0), 2.0)
    >>> for _ in range(3):
    ...     state, info = le.update(state, 2.0)
    >>> sorted(le.get_params(state)), int(info["step"])
    (['mu'], 2)
    """

    def __init__(
        self,
        model: Callable,
        tau: float | Callable[[Any], Any] = 1e-2,
        *,
        beta: float = 1.0,
        alpha: float = 1.0,
        outer_optim: optax.GradientTransformation | None = None,
        init_strategy: Callable = init_to_median,
        progress_bar: bool = True,
        max_rejections: int = 10,
        devices: Any = None,
        shard_data: bool = False,
        jit_model_args: bool | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(
                f"model: expected a callable NumPyro model, got {type(model).__name__}."
            )
        self.model = model
        self.tau = check.schedule("tau", tau)
        self.beta = check.positive_float("beta", beta)
        self.alpha = check.unit_interval("alpha", alpha)
        self.outer_optim = _check_outer_optim(outer_optim, self.alpha, type(self).__name__)
        self.init_strategy = check.function(
            "init_strategy", init_strategy, "a NumPyro init strategy such as init_to_median"
        )
        self.progress_bar = check.flag("progress_bar", progress_bar)
        self.max_rejections = check.count("max_rejections", max_rejections)
        self.shard_data = bool(shard_data)
        self.jit_model_args = (
            None if jit_model_args is None else check.flag("jit_model_args", jit_model_args)
        )
        if self.shard_data and self.jit_model_args is False:
            raise ValueError(
                "jit_model_args: shard_data=True splits the model's array arguments over "
                "the devices, which needs them traced; use jit_model_args=True or None "
                "with shard_data (got jit_model_args=False)."
            )
        # Whether the model's array arguments are compiled in as constants (see _setup).
        self._concrete_args = self.jit_model_args is False
        self.sharding = BatchSharding.for_devices(devices)
        # What the step-2 machinery splits over the devices (nothing in data-parallel mode).
        self.batch_sharding = BatchSharding(None) if self.shard_data else self.sharding
        self.tilted = TiltedPosterior(model, self.beta)
        self.guide = GaussianGuide(self.tilted)
        self._built_for: tuple | None = None
        #: Step 2 (an :class:`~vi_entropy.types.InnerStep`), made once the model is known.
        self.inner_step: InnerStep | None = None
        # update's observers when none are given: a rejected step warns, one call late.
        self._update_observers = Observers([RejectionWarner()], keep_history=False)
        self._template: tuple[Any, TwoStepState] | None = None
        # Compiled ahead, on a worker thread, by the tracker of a first run (see _compile).
        self._track_jit = BackgroundJit(self._track_impl, static_argnames=("static", "num_samples"))

    #: Which regularized loss the scheme descends: ``"local_entropy"`` (``F_τ``) or
    #: ``"heat_loss"`` (``f_τ``); set by the subclasses.
    regularized_loss_name: str = "local_entropy"

    # -- the hook of a scheme ----------------------------------------------------------
    def _make_inner(self) -> InnerStep:
        """Step 2 of this scheme, once the model's dimension is known (``self.tilted``)."""
        raise NotImplementedError

    # -- set-up ---------------------------------------------------------------------------
    @property
    def tau0(self) -> float | None:
        """``τ`` as a float when it is constant, else ``None``."""
        return None if callable(self.tau) else self.tau

    def tau_at(self, step: Any, dtype: Any = None) -> jax.Array:
        """``τ`` at outer step ``step`` (traceable)."""
        return tau_at(self.tau, step, dtype)

    def _signature(self, args: tuple, kwargs: dict) -> tuple:
        """What the compiled functions depend on in the model arguments."""
        shapes = jax.tree.map(
            lambda x: (jnp.shape(x), jnp.result_type(x)) if is_array(x) else x,
            (args, kwargs),
        )
        signature = (jax.tree.structure(shapes), tuple(map(str, jax.tree.leaves(shapes))))
        if self._concrete_args:
            # Constant data may set the model's shapes (``len(np.unique(dept))``).
            signature += (partition_args(args, kwargs, concrete=True)[1],)
        return signature

    def _setup(self, rng_key: Any, args: tuple, kwargs: dict) -> None:
        """Trace the model, make the inner step and the compiled outer step (once per
        signature of the model arguments)."""
        signature = self._signature(args, kwargs)
        if self._built_for == signature:
            return
        self.tilted.setup(rng_key, args, kwargs)
        self._warn_if_nothing_observed(args, kwargs)
        self._warn_if_params_held()
        if self.jit_model_args is not False:
            tp = self.tilted
            err = needs_concrete_args(tp.potential, tp.dim, tp.dtype, tp.subsamples, args, kwargs)
            if err is not None and (self.jit_model_args or self.shard_data):
                raise self._tracing_failed(err) from err
            self._concrete_args = err is not None
            signature = self._signature(args, kwargs)
        self.inner_step = self._make_inner()
        outer = outer_step(
            self.inner_step,
            self.tau,
            alpha=self.alpha,
            outer_optim=self.outer_optim,
            sharding=self.sharding,
            shard_data=self.shard_data,
        )
        self._first_jit = jax.jit(partial(self._first, outer.init), static_argnames=("static",))
        self._constrain_jit = jax.jit(self.tilted.constrain)
        self._step_jit = jax.jit(outer.step, static_argnames=("static", "with_draws"))
        self._built_for = signature

    def _warn_if_nothing_observed(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        """Warn when the model is given data but observes nothing (a forgotten ``obs=``).

        Such a model trains its data sites as latent variables under their priors alone:
        it runs, but fits nothing.  A model without data arguments (a density to explore)
        is left alone.
        """
        trace = self.tilted.prototype_trace
        observed = any(site["type"] == "sample" and site["is_observed"] for site in trace.values())
        arrays = [
            name
            for name, value in _named_arguments(self.model, args, kwargs).items()
            if is_array(value) and np.ndim(value) > 0
        ]
        if observed or not arrays:
            return
        latent = [n for n in self.tilted.sites if trace[n]["fn"].batch_shape]
        warnings.warn(
            f"{type(self).__name__}: the model observes no site, although it is given data "
            f"(argument{'s' if len(arrays) > 1 else ''} "
            f"{', '.join(map(repr, arrays))}); every sample site is trained as a latent "
            "variable under its prior alone. Did a numpyro.sample call miss its obs= "
            f"argument{(' (latent sites with a batch shape: ' + ', '.join(latent) + ')') if latent else ''}?",
            VIEntropyWarning,
            stacklevel=4,
        )

    def _warn_if_params_held(self) -> None:
        """Warn when a ``numpyro.param`` or ``numpyro.mutable`` value enters the density.

        Such sites are held at their initial values, as NumPyro's MCMC holds them (see
        :class:`~vi_entropy.tilted.TiltedPosterior`).  The ``"<name>$params"`` site of
        ``random_flax_module`` and its kin, whose value the sampled weights replace, does
        not enter it and is not mentioned.
        """
        names = self.tilted.held_in_density
        if not names:
            return
        trace = self.tilted.prototype_trace
        sites = ", ".join(f"'{n}' (numpyro.{trace[n]['type']})" for n in names)
        one = len(names) == 1
        _warn(
            f"{type(self).__name__}: the model's site{'' if one else 's'} {sites} "
            f"{'enters' if one else 'enter'} its density and {'is' if one else 'are'} held "
            f"at {'its' if one else 'their'} initial value{'' if one else 's'}, as "
            "NumPyro's MCMC holds param and mutable sites: never trained, and a mutable "
            "site's updates are dropped. To train a param, declare it as a latent site with "
            f"a prior instead, e.g. numpyro.sample('{names[0]}', dist.Normal(0.0, 10.0))."
        )

    def _stall_advice(self, info: Mapping[str, Any]) -> list[str]:
        """What to change when a run ended still moving (see
        :class:`~vi_entropy.observers.ConvergenceCheck`); schemes add their own first."""
        tau = f"tau={self.tau0:g}" if self.tau0 is not None else "the tau schedule"
        return [
            "more outer steps",
            f"a larger tau (now {tau}; it is a variance on the unconstrained scale: the "
            "centre moves about tau |grad f| per step, see 'Choosing tau' in the docs)",
            "an outer optimizer (outer_optim=optax.adam(...)) to move the centre along "
            "the scheme's direction",
        ]

    def _partition(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple[list, StaticArgs]:
        """The model arguments, traced or compiled in (see ``jit_model_args``), placed."""
        dynamic, static = partition_args(args, kwargs, concrete=self._concrete_args)
        return self.sharding.put(dynamic, rows=self.shard_data), static

    def _start(
        self,
        key_init: Any,
        init_params: Mapping[str, Any] | None,
        dynamic: list,
        batch_key: Any,
        static: StaticArgs,
    ) -> tuple[jax.Array, jax.Array]:
        """The first centre ``x_0`` and ``f(x_0)``, traced inside :meth:`_first` (run
        eagerly, NumPyro's ``initialize_model`` and the model would compile op by op,
        about a hundred small compilations)."""
        args, kwargs = merge_args(dynamic, static)
        if init_params is None:
            info = initialize_model(
                key_init,
                self.tilted.held_model,
                init_strategy=self.init_strategy,
                model_args=args,
                model_kwargs=kwargs,
            )
            centre = self.tilted.ravel(info.param_info.z)
        else:
            centre = self.tilted.unconstrain(init_params)
        return centre, self.tilted.potential(centre, args, kwargs, batch_key)

    def _first(
        self,
        init_inner: Callable,
        rng_key: Any,
        init_params: Mapping[str, Any] | None,
        dynamic: list,
        static: StaticArgs,
    ) -> tuple[jax.Array, jax.Array, Any, Any]:
        """What :meth:`init` computes, in one compiled function: ``x_0``, ``f(x_0)``, the
        inner state at step 0 and the state's key."""
        key_init, key_inner, key_state, key_batch = _init_keys(rng_key)
        key_batch = key_batch if self.tilted.subsamples else None
        centre, value = self._start(key_init, init_params, dynamic, key_batch, static)
        centre, key_state = self.sharding.constrain_replicated((centre, key_state))
        return centre, value, init_inner(key_inner, centre, dynamic, static), key_state

    def _tracing_failed(self, err: Exception) -> TypeError:
        return tracing_failed(type(self).__name__, self.jit_model_args, self.shard_data, err)

    def _track_impl(
        self, state: TwoStepState, dynamic: list, static: StaticArgs, num_samples: int
    ) -> dict[str, jax.Array]:
        """``f(x_k)`` and the regularized loss at the centre of ``state`` (``τ = τ_k``)."""
        args, kwargs = merge_args(dynamic, static)
        estimate = track_losses(self.tilted, self.regularized_loss_name)
        return estimate(
            state, self.tau_at(state.step, state.centre.dtype), args, kwargs, num_samples
        )

    # -- public API ------------------------------------------------------------------------
    def init(
        self, rng_key: Any, *args: Any, init_params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> TwoStepState:
        """Set up the scheme and return the initial :class:`TwoStepState`.

        Traces the model once, picks the first centre ``x_0``, initializes the inner
        sampler or fit and compiles it.  An MCMC sampler's kernel is initialized but not
        warmed up: the first outer step runs the warm-up, then its draws, in one compiled
        loop (so the kernel's transition is compiled once).  Until then its adapted
        fields (step size, mass matrix, pCN's ``ρ``) hold their initial values; ``z`` and
        its energies are meaningful (see "The MCMC warm-up runs in step 0" in
        ``docs/architecture.md``).

        Parameters
        ----------
        rng_key : PRNG key
            Drives the initialization and, through the state, every later step.
        *args, **kwargs
            Model arguments.
        init_params : dict, optional
            Constrained values keyed by latent site name (as in ``SVI.init``); without
            them ``init_strategy`` picks the first centre.

        Returns
        -------
        TwoStepState
            Step 0, centre ``x_0``.
        """
        check.rng_key("rng_key", rng_key)
        # The prototype trace's key: its values are not used, only the model's structure.
        self._setup(rng_key, args, kwargs)
        if init_params is not None:
            self.tilted.check_params(init_params)
        dynamic, static = self._partition(args, kwargs)
        try:
            centre, value, inner, key_state = self._first_jit(
                rng_key, init_params, dynamic, static=static
            )
        except TRACING_ERRORS as err:
            if self._concrete_args:
                raise
            raise self._tracing_failed(err) from err
        # On the host (NumPy): an eager jnp.isfinite would be one more compilation.
        value = np.asarray(jax.device_get(value))
        if not np.isfinite(value):
            # Compiled, NumPyro's initialize_model cannot raise when its tries all fail.
            bad_data = _non_finite_arguments(self.model, args, kwargs)
            if bad_data:  # the cause is the data, whatever the starting point
                raise ValueError(
                    f"{bad_data[0]}; the potential energy is not finite at any starting "
                    f"point (f = {float(value)}). Remove or impute those values (or mask them with "
                    "numpyro.handlers.mask / obs_mask)."
                    + (f" Also: {'; '.join(bad_data[1:])}." if len(bad_data) > 1 else "")
                )
            source = "init_params" if init_params is not None else "init_strategy"
            raise ValueError(
                f"{source}: the potential energy at the starting point is not finite "
                f"(f = {float(value)}); check {source} and the model arguments."
            )
        zero = self.sharding.put(jax.device_put(np.zeros((), np.int32)))
        return TwoStepState(centre, inner, zero, key_state, zero, zero)

    def update(
        self, state: TwoStepState, *args: Any, observers: Observers | None = None, **kwargs: Any
    ) -> tuple[TwoStepState, dict]:
        """One outer step (shift, then fit); returns ``(state, info)``.

        Compiled once: the centre, ``τ`` and the array arguments are traced (see
        ``jit_model_args``).  A rejected step (``info["rejected"]``) gives a
        :class:`VIEntropyWarning` once per kind of fault and scheme, raised by the next
        call to ``update`` (reading this step's outcome at once would make the host wait
        for the device).  Given ``observers`` (a :class:`~vi_entropy.loop.Observers`,
        e.g. of :class:`~vi_entropy.observers.FaultGuard`), the step is handed to them
        instead, as :meth:`run` hands every step: ``run`` is repeated ``update``.

        Parameters
        ----------
        state : TwoStepState
            From :meth:`init` or a previous :meth:`update`.
        *args, **kwargs
            Model arguments (the same shapes as in :meth:`init`).
        observers : Observers, optional
            Watch this step (and, passed again, the next ones); call ``observers.close()``
            after the last step for the :class:`RunResult` of them.

        Returns
        -------
        (TwoStepState, dict)
            The new state, and this step's diagnostics (on the device; see :meth:`run`).
        """
        self._require_setup()
        if observers is not None and not isinstance(observers, Observers):
            raise TypeError(
                "observers: expected a vi_entropy.loop.Observers (e.g. "
                f"Observers([FaultGuard()])), got {type(observers).__name__}."
            )
        dynamic, static = self._partition(args, kwargs)
        return self._update(state, dynamic, static, observers or self._update_observers)

    def _update(
        self, state: TwoStepState, dynamic: list, static: StaticArgs, observers: Observers
    ) -> tuple[TwoStepState, dict]:
        """:meth:`update` with the model arguments already partitioned and placed."""
        observers.begin(self, state)
        observers.record.dynamic, observers.record.static = dynamic, static
        with_draws = observers.wants_draws(observers.next_step)
        new_state, info, draws = self._step_jit(
            state, dynamic, static=static, with_draws=with_draws
        )
        observers.notify(new_state, info, draws)
        return new_state, info

    def run(
        self,
        rng_key: Any,
        num_steps: int,
        *args: Any,
        init_params: Mapping[str, Any] | None = None,
        init_state: TwoStepState | None = None,
        progress_bar: bool | None = None,
        keep_draws: str | Sequence[int] | None = "last",
        track_every: int | None = None,
        track_samples: int = 256,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool | str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """Run ``num_steps`` outer steps, like ``SVI.run(rng_key, num_steps, *args)``.

        Parameters
        ----------
        rng_key : PRNG key
            Used by :meth:`init` (not needed with ``init_state`` or ``resume``).
        num_steps : int
            Outer steps to run; with ``resume``, the total of the run that wrote the
            checkpoint (see below).
        *args, **kwargs
            Model arguments.
        init_params : dict, optional
            Constrained initial values (see :meth:`init`).
        init_state : TwoStepState, optional
            Continue from this state (e.g. ``result.state`` of an earlier run).
        progress_bar : bool, optional
            Overrides the constructor's ``progress_bar``.
        keep_draws : {"last", "all", None} or list of int, default "last"
            Which outer steps' inner draws to keep in ``result.draws`` (local entropy).
            At the other steps (all of them with ``None``) MCMC samplers average their
            draws as they make them, so memory is ``O(chains × d)`` rather than
            ``O(chains × num_samples × d)``; the iterates agree up to rounding, and those
            steps get no ``max_rhat``/``min_ess`` (``NaN``).
        track_every : int, optional
            Record ``f(x_k)`` and the regularized loss (``F_τ`` for local entropy,
            ``f_τ`` for heat regularization) with its standard error every
            ``track_every`` outer steps, and at the first and last centre, in
            ``result.trace`` (see :func:`~vi_entropy.diagnostics.monotonicity`).  ``0``
            turns tracking off.  By default it is chosen after the first step so that
            tracking costs at most 10% of the inner evaluations of ``f``:
            ``track_every = ceil((track_samples + 1) / (0.1 · c))`` with ``c`` that step's
            ``max(num_potential_evals, num_grad_evals)`` (a value-and-gradient counted
            as one evaluation, which favours the inner sampler), or 10 when the sampler
            does not report ``c``.  The first and last centres are tracked on top.
        track_samples : int, default 256
            Draws of ``N(x_k, τI)`` per tracked step (plus one evaluation at ``x_k``).
        checkpoint : path, optional
            Save the run to this file every ``checkpoint_every`` outer steps, after the
            last one, and on ``KeyboardInterrupt``: the whole state (centre, chain,
            SVI and optimizer states, RNG keys, step counters), ``info`` and the kept
            draws so far (format: :mod:`vi_entropy.checkpoint`).  Each save replaces
            the file atomically, so a killed process leaves the last complete save.
            An existing file at ``path`` is replaced unless the run resumes from it.
        checkpoint_every : int, default 10
            Outer steps between saves.
        resume : path or bool, optional
            Continue the run saved in this checkpoint file.  ``True`` continues from
            ``checkpoint`` if that file exists and starts afresh (from ``rng_key``)
            otherwise, so the same call serves the first run and every restart.
            ``num_steps`` stays the number of outer steps of the *whole* run, not the
            steps left: repeating the interrupted call finishes it, and the result
            (params, state, ``info`` of all steps, draws) is bitwise the one an
            uninterrupted run gives on the same machine; a larger ``num_steps``
            extends the run.  ``rng_key`` is not used; ``init_params`` and
            ``init_state`` cannot be combined with it.  A corrupt file, or one written
            by another scheme, sampler, model or site layout, raises
            :class:`~vi_entropy.checkpoint.CheckpointError` and is left untouched;
            changed options (``tau``, ``num_samples``, ...) give a warning.

        Returns
        -------
        RunResult
            ``params``, ``state``, ``info`` (stacked per-step diagnostics, including
            ``fault``, ``rejected`` and ``num_rejected_total``; see
            :class:`~vi_entropy.LocalEntropy` and :class:`~vi_entropy.HeatRegularization`
            for the sampler's), ``draws`` and ``trace`` (the tracked losses).  With MCMC
            draws ``info`` also has ``max_rhat`` and ``min_ess``
            (:func:`~vi_entropy.observers.chain_diagnostics`), computed on the host from every step's draws (at
            most 1000 coordinates of them) while the device runs the next step.

        Raises
        ------
        RejectedStepsError
            After ``max_rejections`` consecutive rejected steps; says which faults
            occurred, and ``err.result`` holds the last good state.

        Warns
        -----
        VIEntropyWarning
            At the first rejected step of the run (once per run), with the fault and
            what to try; and the scheme's own warnings (e.g. degenerate importance
            weights), each once per run.
        """
        num_steps = check.count("num_steps", num_steps, minimum=0)
        if init_state is not None and init_params is not None:
            raise ValueError("init_params: give either init_params or init_state, not both.")
        checkpoint = None if checkpoint is None else check.path("checkpoint", checkpoint)
        source = checkpoint_io.resume_source(resume, checkpoint)
        if source is not None and (init_state is not None or init_params is not None):
            raise ValueError(
                "resume: the state comes from the checkpoint; do not also give "
                "init_params or init_state."
            )
        observers = self._run_observers(
            progress_bar, keep_draws, track_every, track_samples, checkpoint, checkpoint_every
        )
        if source is not None:
            state, record = checkpoint_io.resume(self, source, num_steps, args, kwargs)
        else:
            if init_state is None:
                state = self.init(rng_key, *args, init_params=init_params, **kwargs)
            else:
                checkpoint_io.check_state(self, init_state, rng_key, args, kwargs)
                state = init_state
            record = RunRecord(self, run_start=int(state.step))
        record.num_steps = num_steps
        record.dynamic, record.static = self._partition(args, kwargs)
        group = Observers(observers, record)
        group.begin(self, state)

        def update(s: TwoStepState, obs: Observers) -> TwoStepState:
            return self._update(s, record.dynamic, record.static, obs)[0]

        return run_loop(update, state, num_steps - record.done, group)

    def _run_observers(
        self,
        progress_bar: bool | None,
        keep_draws: str | Sequence[int] | None,
        track_every: int | None,
        track_samples: int,
        checkpoint: str | None,
        checkpoint_every: int,
    ) -> list:
        """The observers of :meth:`run` for its options (validated here)."""
        show = (
            self.progress_bar if progress_bar is None else check.flag("progress_bar", progress_bar)
        )
        every = check.count("checkpoint_every", checkpoint_every)
        if track_every is not None:
            track_every = check.count("track_every", track_every, minimum=0)
        track_samples = check.count("track_samples", track_samples, minimum=2)
        observers = [
            Progress(type(self).__name__, disable=not show),
            DrawKeeper(keep_draws),
            Tracker(track_every, track_samples),
            FaultGuard(),
            ConvergenceCheck(track_samples),
        ]
        if checkpoint is not None:
            observers.append(Checkpointer(checkpoint, every))
        return observers

    def regularized_loss(
        self,
        state: TwoStepState,
        *args: Any,
        rng_key: Any = None,
        num_samples: int = 1000,
        **kwargs: Any,
    ) -> Estimate:
        """Estimate the scheme's regularized loss at the centre ``x_k`` of ``state``.

        Local entropy ``F_τ(x_k) = −log E_{N(x_k,τI)}[e^{−f}]`` for
        :class:`~vi_entropy.LocalEntropy`, heat loss ``f_τ(x_k) = E_{N(x_k,τI)}[f]`` for
        :class:`~vi_entropy.HeatRegularization`, at ``τ = τ_k``; the estimator of
        :func:`~vi_entropy.diagnostics.local_entropy` /
        :func:`~vi_entropy.diagnostics.heat_loss`, compiled once per ``num_samples``.

        Parameters
        ----------
        state : TwoStepState
            E.g. ``result.state``.
        *args, **kwargs
            Model arguments.
        rng_key : PRNG key, optional
            Drives the draws; by default a stream of ``state.rng_key`` reserved for
            tracking (with ``num_samples=track_samples`` this reproduces exactly what
            ``run`` recorded for this state).
        num_samples : int, default 1000
            Draws of ``N(x_k, τI)``, one evaluation of ``f`` each.

        Returns
        -------
        Estimate
            ``(value, se)``.
        """
        self._require_setup()
        num_samples = check.count("num_samples", num_samples, minimum=2)
        if rng_key is not None:
            state = state._replace(rng_key=rng_key)
        dynamic, static = partition_args(args, kwargs, concrete=self._concrete_args)
        out = self._track_jit(state, dynamic, static=static, num_samples=num_samples)
        return Estimate(out["regularized_loss"], out["regularized_loss_se"])

    # -- what checkpoints read of a scheme (resumption: vi_entropy.checkpoint) ------------
    def _checkpoint_structure(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this scheme."""
        model = getattr(self.model, "__qualname__", None) or type(self.model).__name__
        structure = {
            "scheme": type(self).__name__,
            "model": model,
            "sites": {k: [list(s.shape), str(s.dtype)] for k, s in self.tilted.sites.items()},
        }
        if self.outer_optim is not None:  # absent otherwise: older checkpoints still match
            structure["outer_optim"] = True
        return structure

    def _checkpoint_options(self) -> dict[str, Any]:
        """Settings a resumed run may change (reported if they differ)."""
        return {
            "tau": checkpoint_io.jsonable(self.tau),
            "beta": self.beta,
            "alpha": self.alpha,
            "model_args": checkpoint_io.jsonable(self._built_for[1] if self._built_for else None),
        }

    def _state_template(self, rng_key: Any, args: tuple, kwargs: dict) -> TwoStepState:
        """Shapes and dtypes of this scheme's state (traced once, not run or compiled)."""
        key = jax.ShapeDtypeStruct(jnp.shape(rng_key), rng_key.dtype)
        cache_key = (self._built_for, str(key))
        if self._template is not None and self._template[0] == cache_key:
            return self._template[1]
        dynamic, static = partition_args(args, kwargs, concrete=self._concrete_args)
        # The trace of init's compiled function, so a state from init costs no new trace.
        centre, _, inner, _ = self._first_jit.eval_shape(key, None, dynamic, static=static)
        count = jax.ShapeDtypeStruct((), jnp.int32)
        template = TwoStepState(centre, inner, count, key, count, count)
        self._template = (cache_key, template)
        return template

    def get_params(self, state: TwoStepState) -> dict[str, jax.Array]:
        """The centre ``x_k`` of ``state`` as a dict of constrained site values.

        Parameters
        ----------
        state : TwoStepState
            E.g. ``result.state``.

        Returns
        -------
        dict
            Latent site name -> constrained value (as ``result.params``).
        """
        self._require_setup()
        if not isinstance(state, TwoStepState):
            raise TypeError(
                f"state: expected a TwoStepState (from {type(self).__name__}.init, update or "
                f"result.state), got {type(state).__name__}."
            )
        return self._constrain_jit(state.centre)

    def get_sites(self, state: TwoStepState, *args: Any, **kwargs: Any) -> dict[str, jax.Array]:
        """The model's sites at the centre ``x_k`` of ``state``: latent and deterministic.

        The latent sites as in :meth:`get_params`, and the model's
        ``numpyro.deterministic`` sites computed at them, among them the original sites of
        reparameterized ones (``theta`` beside ``theta_decentered`` under
        ``LocScaleReparam``).  The model runs once, with the arguments given.

        Parameters
        ----------
        state : TwoStepState
            E.g. ``result.state``.
        *args, **kwargs
            The model's arguments, as given to ``run``.

        Returns
        -------
        dict
            Site name -> constrained value, for every latent and deterministic site.

        Example
        -------
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer.reparam import LocScaleReparam
        >>> from vi_entropy import LocalEntropy
        >>> def model(y=None):
        ...     with numpyro.handlers.reparam(config={"theta": LocScaleReparam(centered=0)}):
        ...         theta = numpyro.sample("theta", dist.Normal(1.0, 2.0))
        ...     numpyro.deterministic("theta_squared", theta**2)
        ...     numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)
        >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
        ...                   progress_bar=False)
        >>> state = le.init(jax.random.PRNGKey(0), 2.0)
        >>> sorted(le.get_params(state)), sorted(le.get_sites(state, 2.0))
        (['theta_decentered'], ['theta', 'theta_decentered', 'theta_squared'])
        """
        self._require_setup()
        return self.tilted.constrain_all(state.centre, args, kwargs)

    def get_guide_params(self, state: TwoStepState) -> dict[str, jax.Array]:
        """Parameters of :attr:`guide` for ``N(x_k, τ_k I)``, for ``Predictive``.

        ``Predictive(model, guide=scheme.guide, params=scheme.get_guide_params(state),
        num_samples=100)(rng_key, *args)`` draws parameters from the fitted Gaussian,
        pushed through the model's constraints, and the model's predictions.  As with any
        NumPyro guide, ``Predictive`` returns the sites the guide does not sample
        (observations, deterministic sites) unless ``return_sites`` names the sites
        wanted: pass ``return_sites=[...]`` with the latent sites too.

        Parameters
        ----------
        state : TwoStepState
            E.g. ``result.state``.

        Returns
        -------
        dict
            ``"_vi_<site>_loc"`` (unconstrained centre of each latent site) and
            ``"_vi_tau"``: prefixed, so they never meet the model's own site names; and
            the values at which the model's ``numpyro.param``/``numpyro.mutable`` sites
            were held, under their own names, so that the model predicts with them.

        Example
        -------
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from vi_entropy import LocalEntropy
        >>> def model(y=None):
        ...     tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        ...     with numpyro.plate("groups", 3):
        ...         mu = numpyro.sample("mu", dist.Normal(0.0, tau))
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> le = LocalEntropy(model, tau=0.1, sampler="importance", num_samples=100,
        ...                   progress_bar=False)
        >>> from numpyro.infer import Predictive
        >>> y = jax.numpy.array([1.0, 2.0, 3.0])
        >>> result = le.run(jax.random.PRNGKey(0), 3, y)
        >>> guide_params = le.get_guide_params(result.state)
        >>> sorted(guide_params)
        ['_vi_mu_loc', '_vi_tau', '_vi_tau_loc']
        >>> predictive = Predictive(model, guide=le.guide, params=guide_params,
        ...                         num_samples=10, return_sites=["tau", "mu", "y"])
        >>> draws = predictive(jax.random.PRNGKey(1))
        >>> draws["tau"].shape, draws["mu"].shape, draws["y"].shape
        ((10,), (10, 3), (10, 3))
        """
        self._require_setup()
        params = self.guide.params(state.centre, self.tau_at(state.step, state.centre.dtype))
        return {**self.tilted.held_values, **params}

    def _require_setup(self) -> None:
        if self._built_for is None:
            raise RuntimeError(
                f"{type(self).__name__}: call init(rng_key, *args) or run(...) first, so "
                "the model's latent sites are known."
            )


def _check_outer_optim(outer_optim: Any, alpha: float, owner: str) -> Any:
    """``outer_optim``: ``None`` or an Optax ``GradientTransformation``, with ``alpha=1``."""
    if outer_optim is None:
        return None
    if not isinstance(outer_optim, optax.GradientTransformation):
        raise TypeError(
            f"{owner}: outer_optim: expected an Optax GradientTransformation (e.g. "
            f"optax.adam(1e-2)) or None, got {type(outer_optim).__name__}."
        )
    if alpha != 1.0:
        raise ValueError(
            f"{owner}: alpha={alpha!r} damps the default outer step only; with outer_optim "
            "give alpha=1 and put the damping into the optimizer's learning rate "
            "(optax.sgd(alpha * tau) is the damped step)."
        )
    return outer_optim


def _init_keys(rng_key: Any) -> tuple:
    """The keys of :meth:`TwoStepScheme.init`: first centre, inner state, state, and the
    first mini-batch.  (The first of the four splits once keyed the prototype trace; it
    stays split off so that every later key is what it was.)"""
    _, key_init, key_inner, key_state = random.split(rng_key, 4)
    return key_init, key_inner, key_state, random.split(key_state)[1]


def _named_arguments(model: Callable, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The model's arguments by the names of its signature (by position where it has none)."""
    try:
        return dict(inspect.signature(model).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return {**{str(i): a for i, a in enumerate(args)}, **kwargs}


def _non_finite_arguments(model: Callable, args: tuple, kwargs: Mapping[str, Any]) -> list[str]:
    """A sentence for each floating-point model argument that holds NaN or infinity.

    Named as the model's signature names them (positional ones by position otherwise).
    """
    found = []
    for name, value in _named_arguments(model, args, kwargs).items():
        try:
            leaves = jax.tree.leaves(value)
        except Exception:  # noqa: BLE001 - an argument JAX cannot flatten holds no array
            continue
        for leaf in leaves:
            if not hasattr(leaf, "dtype") or not np.issubdtype(np.asarray(leaf).dtype, np.inexact):
                continue
            arr = np.asarray(leaf)
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                found.append(
                    f"model argument '{name}' holds non-finite values ({bad} of {arr.size})"
                )
                break
    return found
