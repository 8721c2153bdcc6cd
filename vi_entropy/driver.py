"""The two-step driver shared by local entropy and heat regularization.

Every outer step ``k``: (1) shift: form the tilted posterior ``φ_k`` around ``x_k``;
(2) fit ``N(m, τI)`` to it (the subclass's step 2); then
``x_{k+1} = (1 − α) x_k + α m`` (``α = 1`` is the paper; ``α < 1`` is our damping), or,
with ``outer_optim`` (our extension), an Optax step on the direction ``(x_k − m)/τ``.

The driver mirrors :class:`numpyro.infer.SVI`: :meth:`~TwoStepScheme.init`,
:meth:`~TwoStepScheme.update`, :meth:`~TwoStepScheme.run`,
:meth:`~TwoStepScheme.get_params` and a :class:`RunResult` namedtuple.  ``update`` is
compiled once: the centre, ``τ`` (evaluated from its schedule inside the compiled step)
and the model's array arguments are traced data (unless the model needs them concrete:
``jit_model_args``).  So is the tracking estimator of the
regularized loss (:meth:`~TwoStepScheme.regularized_loss`), reused at every tracked step.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax import random
from numpyro.diagnostics import split_gelman_rubin
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model
from numpyro.util import is_prng_key
from tqdm.auto import trange

from vi_entropy import _validation as check
from vi_entropy import checkpoint as checkpoint_io
from vi_entropy.diagnostics import (
    Estimate,
    bulk_effective_sample_size,
    potential_with_batches,
    smoothed_losses,
)
from vi_entropy.faults import Fault, advise, all_finite, describe, flag
from vi_entropy.gaussian_fit import GaussianGuide
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior
from vi_entropy.types import (
    Draws,
    OuterOptimState,
    RejectedStepsError,
    RunResult,
    TwoStepState,
    VIEntropyWarning,
)


class _Static:
    """Hashable holder of the non-array leaves of the model arguments (jit-static)."""

    def __init__(self, treedef: Any, leaves: tuple) -> None:
        self.treedef = treedef
        self.leaves = leaves
        try:
            self._hash = hash((treedef, leaves))
        except TypeError as err:
            raise TypeError(
                "model arguments: every non-array argument must be hashable (it is "
                f"compiled in as a constant): {err}"
            ) from err

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Static)
            and self.treedef == other.treedef
            and len(self.leaves) == len(other.leaves)
            and all(
                a is b or (type(a) is type(b) and a == b)
                for a, b in zip(self.leaves, other.leaves, strict=True)
            )
        )


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


class _Concrete:
    """An array argument compiled in as a constant (``jit_model_args=False``).

    Hashed by type, shape and dtype; equal to the same object or to an array of the same
    contents, so that the step compiles once per distinct data, not once per call.
    """

    __slots__ = ("_hash", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = hash((type(value), np.shape(value), str(jnp.result_type(value))))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Concrete) or hash(self) != hash(other):
            return False
        a, b = self.value, other.value
        if a is b:
            return True
        a, b = np.asarray(a), np.asarray(b)
        return bool(np.array_equal(a, b, equal_nan=np.issubdtype(a.dtype, np.inexact)))


def partition_args(
    args: tuple, kwargs: Mapping[str, Any], concrete: bool = False
) -> tuple[list, _Static]:
    """Split model arguments into arrays (traced) and everything else (static).

    With ``concrete`` the arrays are static too (compiled in as constants), so that the
    model sees them as the NumPy or JAX arrays it was given (``jit_model_args=False``).
    """
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    if concrete:
        static = tuple(_Concrete(leaf) if _is_array(leaf) else leaf for leaf in leaves)
        return [None] * len(leaves), _Static(treedef, static)
    dynamic = [leaf if _is_array(leaf) else None for leaf in leaves]
    static = tuple(None if _is_array(leaf) else leaf for leaf in leaves)
    return dynamic, _Static(treedef, static)


def merge_args(dynamic: Sequence, static: _Static) -> tuple[tuple, dict]:
    leaves = [
        d if s is None else (s.value if isinstance(s, _Concrete) else s)
        for d, s in zip(dynamic, static.leaves, strict=True)
    ]
    args, kwargs = jax.tree.unflatten(static.treedef, leaves)
    return args, kwargs


# What JAX raises when a model needs a concrete value of a traced argument: NumPy on it
# (``np.unique(dept)``), ``int()``/``bool()`` of it, Python control flow or boolean
# indexing with it.
_TRACING_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


def _stack(infos: list[dict]) -> dict[str, np.ndarray]:
    """Stack per-step diagnostics on the host (one transfer, no compilation per length)."""
    if not infos:
        return {}
    infos = jax.device_get(infos)
    return {k: np.stack([i[k] for i in infos]) for k in infos[0]}


# R-hat and ESS per step look at no more than this many coordinates (evenly spaced over
# the flat vector, so every site of a small model and a spread of a large one), which
# bounds the transfer and the host's work for networks with millions of parameters.
DIAGNOSED_COORDINATES = 1000


def chain_diagnostics(draws: Draws) -> dict[str, float]:
    """Worst-coordinate split R-hat and ESS of one outer step's MCMC draws (on the host).

    ``max_rhat``: the largest split R-hat over coordinates
    (:func:`numpyro.diagnostics.split_gelman_rubin`, needs 4 draws per chain);
    ``min_ess``: the smallest bulk effective sample size over coordinates, all chains
    together (:func:`~vi_entropy.diagnostics.bulk_effective_sample_size`: ArviZ's
    ``ess(method="bulk")``, rank-normalized split chains; never negative).  Models with more than
    ``DIAGNOSED_COORDINATES`` (1000) unconstrained coordinates are diagnosed on that
    many, evenly spaced, so the worst value is over that subset.  ``NaN`` when there
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


def _attach(
    info: dict[str, np.ndarray], host: list[dict[str, float]], keys: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Add the host-side per-step diagnostics ``keys`` (and any others found) to the
    stacked ``info``, ``NaN`` for steps whose draws were not kept."""
    keys = sorted(set(keys) | {k for h in host for k in h})
    if keys:
        info = dict(info)
        for key in keys:
            info[key] = np.asarray([h.get(key, np.nan) for h in host], np.float64)
    return info


# Fraction of a run's evaluations of ``f`` that tracking may take by default.
TRACK_BUDGET = 0.1
# Stream of the tracking keys: ``fold_in(state.rng_key, _TRACK_STREAM)`` leaves the run's
# own keys untouched, so tracking never changes the iterates.
_TRACK_STREAM = 0x7AC4


class TwoStepScheme:
    """Common driver of :class:`~vi_entropy.LocalEntropy` and
    :class:`~vi_entropy.HeatRegularization` (they differ only in step 2).

    Parameters
    ----------
    model : callable
        A NumPyro model with continuous latent sites.
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
        # The last update's info (checked for a rejection at the next call) and the
        # faults update has warned about.
        self._last_update_info: dict | None = None
        self._update_warned: set[Fault] = set()
        self._template: tuple[Any, TwoStepState] | None = None
        self._init_jit = jax.jit(self._init_impl, static_argnames=("static",))
        self._update_jit = jax.jit(self._update_impl, static_argnames=("static", "with_draws"))
        self._track_jit = jax.jit(self._track_impl, static_argnames=("static", "num_samples"))

    #: Per-step diagnostics ``run`` computes on the host from MCMC draws (see
    #: :func:`chain_diagnostics`); ``NaN`` at steps whose draws were not kept.
    _draw_diagnostics: tuple[str, ...] = ()

    #: Which regularized loss the scheme descends: ``"local_entropy"`` (``F_τ``) or
    #: ``"heat_loss"`` (``f_τ``); set by the subclasses.
    regularized_loss_name: str = "local_entropy"

    # -- hooks for the two schemes --------------------------------------------------------
    def _build(self) -> None:
        """Create the step-2 machinery once the model's dimension is known."""
        raise NotImplementedError

    def _init_inner(
        self, rng_key: Any, centre: jax.Array, tau: Any, args: tuple, kwargs: dict, batch_key: Any
    ) -> Any:
        raise NotImplementedError

    def _step2(
        self,
        inner: Any,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        args: tuple,
        kwargs: dict,
        batch_key: Any,
        with_draws: bool = True,
    ) -> tuple[jax.Array, Any, dict, Draws | None]:
        """Return ``(m, inner, info, draws)``: the fitted mean and diagnostics.

        With ``with_draws=False`` the draws are not returned (``None``), so step 2 may
        avoid keeping them at all.
        """
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------
    @property
    def tau0(self) -> float | None:
        """``τ`` as a float when it is constant, else ``None``."""
        return None if callable(self.tau) else self.tau

    def tau_at(self, step: Any, dtype: Any = None) -> jax.Array:
        """``τ`` at outer step ``step`` (traceable)."""
        tau = self.tau(step) if callable(self.tau) else self.tau
        return jnp.asarray(tau, dtype)

    def _setup(self, rng_key: Any, args: tuple, kwargs: dict) -> None:
        shapes = jax.tree.map(
            lambda x: (jnp.shape(x), jnp.result_type(x)) if _is_array(x) else x, (args, kwargs)
        )
        signature = (jax.tree.structure(shapes), tuple(map(str, jax.tree.leaves(shapes))))
        if self._concrete_args:
            # Constant data may set the model's shapes (``len(np.unique(dept))``).
            signature += (partition_args(args, kwargs, concrete=True)[1],)
        if self._built_for == signature:
            return
        self.tilted.setup(rng_key, args, kwargs)
        if self.jit_model_args is not False:
            # Raises, naming the option, when the arguments must be traced but cannot be.
            self._concrete_args = self._needs_concrete_args(args, kwargs)
            if self._concrete_args and len(signature) == 2:
                signature += (partition_args(args, kwargs, concrete=True)[1],)
        self._build()
        self._built_for = signature

    def _partition(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple[list, _Static]:
        """The model arguments, traced or compiled in (see ``jit_model_args``)."""
        return partition_args(args, kwargs, concrete=self._concrete_args)

    def _tracing_failed(self, err: Exception) -> TypeError:
        """The error for a model that needs concrete data when it gets traced data."""
        return TypeError(
            f"{type(self).__name__}: tracing the model with its array arguments as traced "
            "values failed: the model needs their concrete values (it calls NumPy, int(), "
            "bool() or Python control flow on its data, e.g. len(np.unique(x))), but "
            f"jit_model_args={self.jit_model_args} traces them"
            + (" (shard_data=True needs traced arguments)" if self.shard_data else "")
            + ". Use jit_model_args=False (or the default None) to compile them in as "
            "constants, as numpyro.infer.MCMC(jit_model_args=False) does, or make the model "
            f"work on traced arrays (jnp instead of np). JAX said: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        )

    def _needs_concrete_args(self, args: tuple, kwargs: Mapping[str, Any]) -> bool:
        """Whether the model fails on traced array arguments (traced once, not compiled).

        Raises the error of :meth:`_tracing_failed` when it does and the arguments must
        be traced (``jit_model_args=True`` or ``shard_data``).
        """
        dynamic, static = partition_args(args, kwargs)
        if all(d is None for d in dynamic):
            return False
        centre = jax.ShapeDtypeStruct((self.tilted.dim,), self.tilted.dtype)

        def probe(centre: jax.Array, dynamic: list) -> jax.Array:
            args, kwargs = merge_args(dynamic, static)
            batch_key = random.PRNGKey(0) if self.tilted.subsamples else None
            return jax.grad(self.tilted.potential)(centre, args, kwargs, batch_key)

        try:
            jax.eval_shape(probe, centre, dynamic)
        except _TRACING_ERRORS as err:
            if self.jit_model_args or self.shard_data:
                raise self._tracing_failed(err) from err
            return True
        except Exception:  # noqa: BLE001 - any other failure shows where it belongs
            return False
        return False

    def _place_args(self, dynamic: list) -> list:
        """Model arguments inside the compiled step: whole, or split by rows (shard_data)."""
        return self.sharding.constrain_rows(dynamic) if self.shard_data else dynamic

    def _init_impl(self, rng_key: Any, centre: jax.Array, dynamic: list, static: _Static) -> Any:
        args, kwargs = merge_args(self._place_args(dynamic), static)
        key_inner, key_batch = random.split(rng_key)
        tau = self.tau_at(0, centre.dtype)
        inner = self._init_inner(key_inner, centre, tau, args, kwargs, key_batch)
        if self.outer_optim is None:
            return inner
        return OuterOptimState(inner, self.outer_optim.init(centre))

    def _update_impl(
        self, state: TwoStepState, dynamic: list, static: _Static, with_draws: bool = True
    ) -> tuple[TwoStepState, dict, Draws | None]:
        args, kwargs = merge_args(self._place_args(dynamic), static)
        key, key_step, key_batch = random.split(state.rng_key, 3)
        tau = self.tau_at(state.step, state.centre.dtype)
        outer = self.outer_optim is not None
        mean, inner, info, draws = self._step2(
            state.inner.inner if outer else state.inner,
            key_step,
            state.centre,
            tau,
            args,
            kwargs,
            key_batch,
            with_draws,
        )
        if outer:
            # Our extension: an Optax step on the direction ∇F_τ(x_k) = (x_k − m_k)/τ_k.
            updates, opt_state = self.outer_optim.update(
                (state.centre - mean) / tau, state.inner.opt_state, state.centre
            )
            proposal = optax.apply_updates(state.centre, updates)
            inner = OuterOptimState(inner, opt_state)
        else:
            proposal = (1 - self.alpha) * state.centre + self.alpha * mean
        info = dict(info)
        fault = info.pop("fault", jnp.int32(0))
        fault = fault | flag(~jnp.all(jnp.isfinite(proposal)), Fault.NONFINITE_PROPOSAL)
        fault = fault | flag(~all_finite(inner), Fault.NONFINITE_STATE)
        fault = fault | flag(~(jnp.isfinite(tau) & (tau > 0)), Fault.BAD_TAU)
        ok = fault == 0
        centre = jnp.where(ok, proposal, state.centre)
        inner = jax.tree.map(lambda new, old: jnp.where(ok, new, old), inner, state.inner)
        total = state.num_rejected_total + jnp.where(ok, 0, 1)
        info["step"] = state.step
        info["tau"] = tau
        info["displacement"] = jnp.linalg.norm(centre - state.centre)
        info["fault"] = fault
        info["rejected"] = ~ok
        info["num_rejected_total"] = total
        new_state = TwoStepState(
            centre, inner, state.step + 1, key, jnp.where(ok, 0, state.num_rejected + 1), total
        )
        if self.sharding.active:
            # Same placement in as out, so that step k + 1 reuses step k's compilation.
            whole = self.sharding.constrain_replicated
            if outer:
                inner = OuterOptimState(inner.inner, whole(inner.opt_state))
            new_state = TwoStepState(whole(new_state.centre), inner, *whole(new_state[2:]))
            info = whole(info)
        return new_state, info, draws

    def _track_impl(
        self, state: TwoStepState, dynamic: list, static: _Static, num_samples: int
    ) -> dict[str, jax.Array]:
        """``f(x_k)`` and both regularized losses at the centre of ``state`` (``τ = τ_k``)."""
        args, kwargs = merge_args(dynamic, static)
        key = random.fold_in(state.rng_key, _TRACK_STREAM)
        key_loss, key_smooth = random.split(key)
        potential = potential_with_batches(self.tilted, args, kwargs)
        tau = self.tau_at(state.step, state.centre.dtype)
        smoothed = smoothed_losses(potential, state.centre, tau, key_smooth, num_samples)
        estimate = getattr(smoothed, self.regularized_loss_name)
        out = {
            "step": state.step,
            "centre": state.centre,
            "tau": tau,
            "loss": potential(state.centre, key_loss),
            "regularized_loss": estimate.value,
            "regularized_loss_se": estimate.se,
            "num_potential_evals": jnp.asarray(num_samples + 1),
        }
        if self.regularized_loss_name == "local_entropy":
            out["smoothing_ess"] = smoothed.ess  # the delta-method SE needs it not small
        return out

    # -- public API ------------------------------------------------------------------------
    def init(
        self, rng_key: Any, *args: Any, init_params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> TwoStepState:
        """Set up the scheme and return the initial :class:`TwoStepState`.

        Traces the model once, picks the first centre ``x_0``, initializes the inner
        sampler or fit (including the MCMC warm-up) and compiles it.

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
        key_setup, key_init, key_inner, key_state = random.split(rng_key, 4)
        self._setup(key_setup, args, kwargs)
        if init_params is None:
            info = initialize_model(
                key_init,
                self.model,
                init_strategy=self.init_strategy,
                model_args=args,
                model_kwargs=kwargs,
            )
            centre = self.tilted.ravel(info.param_info.z)
        else:
            self.tilted.check_params(init_params)
            centre = self.tilted.unconstrain(init_params)
        dynamic, static = self._partition(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        key_batch = random.split(key_state)[1] if self.tilted.subsamples else None
        value = self.tilted.potential(centre, args, kwargs, key_batch)
        if not bool(jnp.isfinite(value)):
            raise ValueError(
                "init_params: the potential energy at the starting point is not finite "
                f"(f = {float(value)}); check init_params and the model arguments."
            )
        centre, key_state = self.sharding.put((centre, key_state))
        try:
            inner = self._init_jit(key_inner, centre, dynamic, static=static)
        except _TRACING_ERRORS as err:
            if self._concrete_args:
                raise
            raise self._tracing_failed(err) from err
        zero = self.sharding.put(jnp.zeros((), jnp.int32))
        return TwoStepState(centre, inner, zero, key_state, zero, zero)

    def update(self, state: TwoStepState, *args: Any, **kwargs: Any) -> tuple[TwoStepState, dict]:
        """One outer step (shift, then fit); returns ``(state, info)``.

        Compiled once: the centre, ``τ`` and the array arguments are traced (see
        ``jit_model_args``).  A rejected step (``info["rejected"]``) gives a
        :class:`VIEntropyWarning` once per kind of fault and scheme, raised by the next
        call to ``update`` (reading this step's outcome at once would make the host wait
        for the device).

        Parameters
        ----------
        state : TwoStepState
            From :meth:`init` or a previous :meth:`update`.
        *args, **kwargs
            Model arguments (the same shapes as in :meth:`init`).

        Returns
        -------
        (TwoStepState, dict)
            The new state, and this step's diagnostics (on the device; see :meth:`run`).
        """
        self._require_setup()
        dynamic, static = self._partition(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        new_state, info, _ = self._update_jit(state, dynamic, static=static, with_draws=False)
        self._warn_if_rejected(info)
        return new_state, info

    def _warn_if_rejected(self, info: dict) -> None:
        """Warn about the previous ``update``'s step if it was rejected, once per kind of
        fault and scheme; read one call late, so that the device never waits for Python."""
        previous, self._last_update_info = self._last_update_info, info
        if previous is None or not bool(previous["rejected"]):
            return
        mask = int(jax.device_get(previous["fault"]))
        new = [f for f in Fault if mask & f and f not in self._update_warned]
        if new:
            self._update_warned.update(new)
            message = self._rejection_warning(mask, int(previous["step"]), where="update")
            warnings.warn(message, VIEntropyWarning, stacklevel=3)

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
            (:func:`chain_diagnostics`), computed on the host from every step's draws (at
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
        keep = _keep_rule(keep_draws)
        show = (
            self.progress_bar if progress_bar is None else check.flag("progress_bar", progress_bar)
        )
        every = check.count("checkpoint_every", checkpoint_every)
        checkpoint = None if checkpoint is None else check.path("checkpoint", checkpoint)
        source = _resume_source(resume, checkpoint)
        if source is not None and (init_state is not None or init_params is not None):
            raise ValueError(
                "resume: the state comes from the checkpoint; do not also give "
                "init_params or init_state."
            )
        if track_every is not None:
            track_every = check.count("track_every", track_every, minimum=0)
        track_samples = check.count("track_samples", track_samples, minimum=2)
        done, prior_info, prior_trace, draws, warned = 0, {}, {}, {}, set()
        if source is not None:
            state, prior_info, prior_trace, draws, done, warned, saved_every = self._resume(
                source, num_steps, args, kwargs
            )
            # The tracking cadence is the interrupted run's, so the trace continues it.
            track_every = saved_every if track_every is None else track_every
        elif init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
        else:
            self._check_state(init_state, rng_key, args, kwargs)
            state = init_state
        run_start = int(state.step) - done
        dynamic, static = self._partition(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        infos: list[dict] = []
        fetched: list[dict] = []  # host copies of `infos`, filled at each save
        host: list[dict[str, float]] = []  # R-hat/ESS per step, computed on the host
        traces: list[dict] = []
        pending: tuple[int, Draws | None] | None = None  # draws waiting for diagnostics

        def diagnose_pending(upto: int) -> None:
            # R-hat/ESS of a step, computed on the host while the device runs the next.
            nonlocal pending
            if pending is not None and pending[0] < upto:
                draws_ = pending[1]
                host.append({} if draws_ is None else chain_diagnostics(draws_))
                pending = None

        def track(s: TwoStepState) -> None:
            traces.append(self._track_jit(s, dynamic, static=static, num_samples=track_samples))

        def history(stacked: dict[str, np.ndarray]) -> tuple[dict, dict]:
            info = _concat(prior_info, _attach(stacked, host, self._draw_diagnostics))
            return info, _concat(prior_trace, _stack(traces))

        def save() -> None:
            diagnose_pending(int(state.step))
            fetched.extend(jax.device_get(infos[len(fetched) :]))
            meta = self._checkpoint_meta(state, run_start, num_steps, warned)
            meta["track_every"] = track_every
            info, trace = history(_stack(fetched))
            checkpoint_io.save(checkpoint, state, meta=meta, info=info, draws=draws, trace=trace)

        def settle(i: int) -> None:
            # What needs step i's values on the host: its warnings, its rejection count and
            # a checkpoint. Called once step i+1 is dispatched, so the device never waits
            # for Python; `state` and `infos` still end at step i.
            nonlocal good
            for name, message in self._warnings(infos[-1], run_start + i).items():
                if name not in warned:
                    warned.add(name)
                    warnings.warn(message, VIEntropyWarning, stacklevel=3)
            rejected = int(state.num_rejected)
            if rejected == 0:
                good = state
            elif rejected < self.max_rejections and "rejected" not in warned:
                # The first rejection of a run is said at once, not at the error.
                warned.add("rejected")
                message = self._rejection_warning(infos[-1]["fault"], run_start + i)
                warnings.warn(message, VIEntropyWarning, stacklevel=3)
            elif rejected >= self.max_rejections:
                diagnose_pending(int(state.step))
                info, trace = history(_stack(infos))
                result = RunResult(self.get_params(good), good, info, draws, trace)
                raise RejectedStepsError(self._rejected_message(state, good, infos), result)
            if checkpoint is not None and ((i + 1) % every == 0 or i + 1 == num_steps):
                save()

        if track_every != 0 and done == 0 and num_steps > 0:
            track(state)
        good = state
        try:
            for i in trange(done, num_steps, disable=not show, desc=type(self).__name__):
                step = run_start + i
                new_state, info, d = self._update_jit(
                    state, dynamic, static=static, with_draws=keep(step)
                )
                if i > done:
                    settle(i - 1)
                infos.append(info)
                state = new_state
                diagnose_pending(step)
                pending = (step, d)
                if d is not None:
                    if keep_draws == "last":
                        draws.clear()
                    draws[step] = d
                if track_every is None:
                    track_every = _default_track_every(info, track_samples)
                if track_every and ((i + 1) % track_every == 0 or i + 1 == num_steps):
                    track(state)
            if num_steps > done:
                settle(num_steps - 1)
        except KeyboardInterrupt:
            if checkpoint is not None:
                # Keep the saved history consistent with the state if the interrupt
                # arrived between recording a step's info and taking its state.
                last = int(state.step)
                del infos[last - run_start - done :]
                del host[last - run_start - done :]
                if pending is not None and pending[0] >= last:
                    pending = None
                for step in [s for s in draws if s >= last]:
                    del draws[step]
                traces[:] = [t for t in traces if int(t["step"]) <= last]
                save()
            raise
        diagnose_pending(int(state.step))
        info, trace = history(_stack(infos))
        return RunResult(self.get_params(state), state, info, draws, trace)

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
        dynamic, static = self._partition(args, kwargs)
        out = self._track_jit(state, dynamic, static=static, num_samples=num_samples)
        return Estimate(out["regularized_loss"], out["regularized_loss_se"])

    # -- faults, checkpoints and state checks ------------------------------------------------
    def _warnings(self, info: Mapping[str, Any], step: int) -> dict[str, str]:
        """Warnings about a step's diagnostics, by name (:meth:`run` shows each once)."""
        return {}

    def _rejection_warning(self, fault: Any, step: int, where: str = "run") -> str:
        """The warning at the first rejected step of a run (or of ``update`` calls)."""
        mask = int(jax.device_get(fault))
        what = "; ".join(describe(mask)) or "unknown"
        advice = "; ".join(advise(mask)) or "lower tau"
        shown = (
            "Shown once per run"
            if where == "run"
            else "Shown once per kind of fault and scheme, one update later"
        )
        return (
            f"{type(self).__name__}: outer step {step} was rejected: {what}. The centre "
            "and the inner state stayed as they were and the next step tries again"
            + (
                f"; after max_rejections={self.max_rejections} consecutive rejections "
                "run() stops with RejectedStepsError. "
                if where == "run"
                else ". "
            )
            + f"To try: {advice}. {shown}; info['rejected'] and info['fault'] record every "
            "step (see vi_entropy.faults)."
        )

    def _rejected_message(self, state: TwoStepState, good: TwoStepState, infos: list[dict]) -> str:
        rejected = int(state.num_rejected)
        masks = jax.device_get([info["fault"] for info in infos[-rejected:]])
        counts = Counter(text for mask in masks for text in describe(mask))
        what = "; ".join(f"{text} ({n} of {len(masks)} steps)" for text, n in counts.items())
        advice = dict.fromkeys(text for mask in masks for text in advise(mask))
        last = int(state.step) - 1
        return (
            f"{type(self).__name__}: {rejected} consecutive outer steps were rejected "
            f"(steps {last - rejected + 1} to {last}; max_rejections={self.max_rejections}), "
            f"so the run stopped. What went wrong: {what or 'unknown'}. The centre never "
            f"took their values; the last good state is that after {int(good.step)} "
            f"steps. To try: {'; '.join(advice) or 'lower tau'}. The last good state is "
            "in `err.result` (pass err.result.state as init_state to continue)."
        )

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
            "tau": _jsonable(self.tau),
            "beta": self.beta,
            "alpha": self.alpha,
            "model_args": _jsonable(self._built_for[1] if self._built_for else None),
        }

    def _checkpoint_meta(
        self, state: TwoStepState, run_start: int, num_steps: int, warned: set[str]
    ) -> dict[str, Any]:
        return {
            "jax_version": jax.__version__,
            "numpyro_version": numpyro.__version__,
            "x64": bool(jax.config.jax_enable_x64),
            "structure": self._checkpoint_structure(),
            "options": self._checkpoint_options(),
            "step": int(state.step),
            "run_start": run_start,
            "num_steps": num_steps,
            "warned": sorted(warned),
        }

    def _resume(
        self, path: str, num_steps: int, args: tuple, kwargs: dict
    ) -> tuple[TwoStepState, dict, dict, dict, int, set[str], int | None]:
        """Read, check and restore a checkpoint.

        Returns ``(state, info, trace, draws, done, warned, track_every)``.
        """
        ck = checkpoint_io.load(path)
        paths = [leaf["path"] for leaf in ck.meta["state"]["leaves"]]
        if ".rng_key" not in paths:
            raise checkpoint_io.CheckpointError(path, "its state is not a TwoStepState.")
        key = ck.leaves[paths.index(".rng_key")]
        if not _is_key_like(key):
            raise checkpoint_io.CheckpointError(path, "its state has no valid PRNG key.")
        self._setup(random.PRNGKey(0), args, kwargs)
        changed = checkpoint_io.check_compatible(
            ck, self._checkpoint_structure(), self._checkpoint_options()
        )
        state = checkpoint_io.restore_state(ck, self._state_template(key, args, kwargs))
        done = int(ck.meta["step"]) - int(ck.meta["run_start"])
        if num_steps < done:
            raise ValueError(
                f"num_steps: the run in checkpoint {path} has already done {done} outer "
                f"steps, more than num_steps={num_steps} (with resume, num_steps is the "
                "total of the run, not the steps left)."
            )
        if changed:
            warnings.warn(
                f"{type(self).__name__}: resuming checkpoint {path} with other options ("
                + "; ".join(changed)
                + "); the result will differ from that of an uninterrupted run.",
                VIEntropyWarning,
                stacklevel=3,
            )
        draws = {k: jax.tree.map(jnp.asarray, d) for k, d in ck.draws.items()}
        return (
            state,
            dict(ck.info),
            dict(ck.trace),
            draws,
            done,
            set(ck.meta.get("warned", [])),
            ck.meta.get("track_every"),
        )

    def _state_template(self, rng_key: Any, args: tuple, kwargs: dict) -> TwoStepState:
        """Shapes and dtypes of this scheme's state (traced once, not run or compiled)."""
        key = jax.ShapeDtypeStruct(jnp.shape(rng_key), rng_key.dtype)
        cache_key = (self._built_for, str(key))
        if self._template is not None and self._template[0] == cache_key:
            return self._template[1]
        dynamic, static = self._partition(args, kwargs)
        centre = jax.ShapeDtypeStruct((self.tilted.dim,), self.tilted.dtype)
        inner = jax.eval_shape(partial(self._init_impl, static=static), key, centre, dynamic)
        count = jax.ShapeDtypeStruct((), jnp.int32)
        template = TwoStepState(centre, inner, count, key, count, count)
        self._template = (cache_key, template)
        return template

    def _check_state(self, state: Any, rng_key: Any, args: tuple, kwargs: dict) -> None:
        """``init_state`` must be a state of this scheme, for these model arguments."""
        if not isinstance(state, TwoStepState):
            raise TypeError(
                "init_state: expected a TwoStepState (e.g. result.state of an earlier run), "
                f"got {type(state).__name__}."
            )
        if not _is_key_like(state.rng_key):
            raise TypeError("init_state: its rng_key is not a PRNG key.")
        self._setup(rng_key if rng_key is not None else state.rng_key, args, kwargs)
        template = self._state_template(state.rng_key, args, kwargs)
        problem = checkpoint_io.describe_mismatch(
            checkpoint_io.leaf_signature(template), checkpoint_io.leaf_signature(state)
        )
        if problem is not None:
            raise ValueError(f"init_state: {problem}.")

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
        return self.tilted.constrain(state.centre)

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
            ``"_vi_tau"``: prefixed, so they never meet the model's own site names.

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
        return self.guide.params(state.centre, self.tau_at(state.step, state.centre.dtype))

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


def _default_track_every(info: Mapping[str, Any], track_samples: int) -> int:
    """Track every ``e`` steps so that tracking costs at most ``TRACK_BUDGET`` of the run."""
    cost = max(int(info.get("num_potential_evals", -1)), int(info.get("num_grad_evals", -1)))
    if cost <= 0:  # a sampler that does not count its evaluations
        return 10
    return max(1, math.ceil((track_samples + 1) / (TRACK_BUDGET * cost)))


def _keep_rule(keep_draws: str | Sequence[int] | None) -> Callable[[int], bool]:
    """Which outer steps' draws ``run`` keeps ("last" keeps each and drops the previous)."""
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


def _resume_source(resume: Any, checkpoint: str | None) -> str | None:
    """The checkpoint file ``run`` continues from, or ``None`` for a fresh run."""
    if resume is None or resume is False:
        return None
    if resume is True:
        if checkpoint is None:
            raise ValueError(
                "resume=True continues the run saved in `checkpoint`, but no checkpoint "
                "path was given."
            )
        return checkpoint if os.path.exists(checkpoint) else None
    path = check.path("resume", resume)
    if not os.path.exists(path):
        raise FileNotFoundError(f"resume: there is no checkpoint file {path!r}.")
    return path


def _is_key_like(x: Any) -> bool:
    return hasattr(x, "dtype") and is_prng_key(x)


def _concat(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step diagnostics of two consecutive stretches of a run, stacked."""
    if not first:
        return second
    if not second:
        return dict(first)
    return {k: np.concatenate([first[k], second[k]]) for k in second}


def _jsonable(value: Any) -> Any:
    """A JSON-friendly description of an option (callables by name)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        return f"<{name}>"
    return repr(value)
