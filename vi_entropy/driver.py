"""The two-step driver shared by local entropy and heat regularization.

Every outer step ``k``: (1) shift: form the tilted posterior ``φ_k`` around ``x_k``;
(2) fit ``N(m, τI)`` to it (the subclass's step 2); then
``x_{k+1} = (1 − α) x_k + α m`` (``α = 1`` is the paper; ``α < 1`` is our damping).

The driver mirrors :class:`numpyro.infer.SVI`: :meth:`~TwoStepScheme.init`,
:meth:`~TwoStepScheme.update`, :meth:`~TwoStepScheme.run`,
:meth:`~TwoStepScheme.get_params` and a :class:`RunResult` namedtuple.  ``update`` is
compiled once: the centre, ``τ`` (evaluated from its schedule inside the compiled step)
and the model's array arguments are traced data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model
from tqdm.auto import trange

from vi_entropy import _validation as check
from vi_entropy.gaussian_fit import GaussianGuide
from vi_entropy.samplers.mcmc import Draws
from vi_entropy.sharding import BatchSharding
from vi_entropy.tilted import TiltedPosterior


class VIEntropyWarning(UserWarning):
    """Warnings raised by vi_entropy (turned into errors in its own test suite)."""


class TwoStepState(NamedTuple):
    """State of a two-step scheme (a pytree).

    - **centre** - the current centre ``x_k``, a flat vector in the model's unconstrained
      space (``scheme.get_params(state)`` gives it named and constrained).
    - **inner** - the step-2 state: MCMC kernel states of all chains, the SVI state, ...
    - **step** - the outer step count ``k``.
    - **rng_key** - key for the next outer step.
    - **num_rejected** - consecutive rejected outer steps (non-finite proposals).
    """

    centre: jax.Array
    inner: Any
    step: jax.Array
    rng_key: jax.Array
    num_rejected: jax.Array


class RunResult(NamedTuple):
    """What :meth:`TwoStepScheme.run` returns.

    - **params** - dict: latent site name -> final centre, constrained.
    - **state** - the final :class:`TwoStepState` (pass it as ``init_state`` to continue).
    - **info** - dict of per-outer-step diagnostics, each stacked over steps.
    - **draws** - dict: outer step -> :class:`~vi_entropy.samplers.Draws` kept by ``run``
      (``keep_draws``), empty for heat regularization.
    """

    params: dict[str, jax.Array]
    state: TwoStepState
    info: dict[str, np.ndarray]
    draws: dict[int, Draws]


class RejectedStepsError(RuntimeError):
    """Too many consecutive outer steps were rejected; ``.result`` holds the last good run."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


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


def partition_args(args: tuple, kwargs: Mapping[str, Any]) -> tuple[list, _Static]:
    """Split model arguments into arrays (traced) and everything else (static)."""
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    dynamic = [leaf if _is_array(leaf) else None for leaf in leaves]
    static = tuple(None if _is_array(leaf) else leaf for leaf in leaves)
    return dynamic, _Static(treedef, static)


def merge_args(dynamic: Sequence, static: _Static) -> tuple[tuple, dict]:
    leaves = [d if s is None else s for d, s in zip(dynamic, static.leaves, strict=True)]
    args, kwargs = jax.tree.unflatten(static.treedef, leaves)
    return args, kwargs


def _stack(infos: list[dict]) -> dict[str, np.ndarray]:
    """Stack per-step diagnostics on the host (one transfer, no compilation per length)."""
    if not infos:
        return {}
    infos = jax.device_get(infos)
    return {k: np.stack([i[k] for i in infos]) for k in infos[0]}


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
    init_strategy : callable, default ``init_to_median``
        NumPyro init strategy for the first centre when ``init_params`` is not given.
    progress_bar : bool, default True
        Show a tqdm progress bar in :meth:`run`.
    max_rejections : int, default 10
        :meth:`run` stops with :class:`RejectedStepsError` after this many consecutive
        rejected outer steps (non-finite proposals); the centre never takes a
        non-finite value.
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
    """

    def __init__(
        self,
        model: Callable,
        tau: float | Callable[[Any], Any] = 1e-2,
        *,
        beta: float = 1.0,
        alpha: float = 1.0,
        init_strategy: Callable = init_to_median,
        progress_bar: bool = True,
        max_rejections: int = 10,
        devices: Any = None,
        shard_data: bool = False,
    ) -> None:
        if not callable(model):
            raise TypeError(
                f"model: expected a callable NumPyro model, got {type(model).__name__}."
            )
        self.model = model
        self.tau = check.schedule("tau", tau)
        self.beta = check.positive_float("beta", beta)
        self.alpha = check.unit_interval("alpha", alpha)
        self.init_strategy = init_strategy
        self.progress_bar = bool(progress_bar)
        self.max_rejections = check.count("max_rejections", max_rejections)
        self.shard_data = bool(shard_data)
        self.sharding = BatchSharding.for_devices(devices)
        # What the step-2 machinery splits over the devices (nothing in data-parallel mode).
        self.batch_sharding = BatchSharding(None) if self.shard_data else self.sharding
        self.tilted = TiltedPosterior(model, self.beta)
        self.guide = GaussianGuide(self.tilted)
        self._built_for: tuple | None = None
        self._init_jit = jax.jit(self._init_impl, static_argnames=("static",))
        self._update_jit = jax.jit(self._update_impl, static_argnames=("static", "with_draws"))

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
        if self._built_for == signature:
            return
        self.tilted.setup(rng_key, args, kwargs)
        self._build()
        self._built_for = signature

    def _place_args(self, dynamic: list) -> list:
        """Model arguments inside the compiled step: whole, or split by rows (shard_data)."""
        return self.sharding.constrain_rows(dynamic) if self.shard_data else dynamic

    def _init_impl(self, rng_key: Any, centre: jax.Array, dynamic: list, static: _Static) -> Any:
        args, kwargs = merge_args(self._place_args(dynamic), static)
        key_inner, key_batch = random.split(rng_key)
        tau = self.tau_at(0, centre.dtype)
        return self._init_inner(key_inner, centre, tau, args, kwargs, key_batch)

    def _update_impl(
        self, state: TwoStepState, dynamic: list, static: _Static, with_draws: bool = True
    ) -> tuple[TwoStepState, dict, Draws | None]:
        args, kwargs = merge_args(self._place_args(dynamic), static)
        key, key_step, key_batch = random.split(state.rng_key, 3)
        tau = self.tau_at(state.step, state.centre.dtype)
        mean, inner, info, draws = self._step2(
            state.inner, key_step, state.centre, tau, args, kwargs, key_batch, with_draws
        )
        proposal = (1 - self.alpha) * state.centre + self.alpha * mean
        ok = jnp.all(jnp.isfinite(proposal))
        centre = jnp.where(ok, proposal, state.centre)
        inner = jax.tree.map(lambda new, old: jnp.where(ok, new, old), inner, state.inner)
        info = dict(info)
        info["tau"] = tau
        info["displacement"] = jnp.linalg.norm(centre - state.centre)
        info["rejected"] = ~ok
        new_state = TwoStepState(
            centre, inner, state.step + 1, key, jnp.where(ok, 0, state.num_rejected + 1)
        )
        if self.sharding.active:
            # Same placement in as out, so that step k + 1 reuses step k's compilation.
            whole = self.sharding.constrain_replicated
            new_state = TwoStepState(whole(new_state.centre), inner, *whole(new_state[2:]))
            info = whole(info)
        return new_state, info, draws

    # -- public API ------------------------------------------------------------------------
    def init(
        self, rng_key: Any, *args: Any, init_params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> TwoStepState:
        """Set up the scheme and return the initial :class:`TwoStepState`.

        ``init_params`` are constrained values keyed by latent site name (as in
        ``SVI.init``); without them ``init_strategy`` picks the first centre.
        """
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
        dynamic, static = partition_args(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        key_batch = random.split(key_state)[1] if self.tilted.subsamples else None
        value = self.tilted.potential(centre, args, kwargs, key_batch)
        if not bool(jnp.isfinite(value)):
            raise ValueError(
                "init_params: the potential energy at the starting point is not finite "
                f"(f = {float(value)}); check init_params and the model arguments."
            )
        centre, key_state = self.sharding.put((centre, key_state))
        inner = self._init_jit(key_inner, centre, dynamic, static=static)
        zero = self.sharding.put(jnp.zeros((), jnp.int32))
        return TwoStepState(centre, inner, zero, key_state, zero)

    def update(self, state: TwoStepState, *args: Any, **kwargs: Any) -> tuple[TwoStepState, dict]:
        """One outer step (shift, then fit); returns ``(state, info)``."""
        self._require_setup()
        dynamic, static = partition_args(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        state, info, _ = self._update_jit(state, dynamic, static=static, with_draws=False)
        return state, info

    def run(
        self,
        rng_key: Any,
        num_steps: int,
        *args: Any,
        init_params: Mapping[str, Any] | None = None,
        init_state: TwoStepState | None = None,
        progress_bar: bool | None = None,
        keep_draws: str | Sequence[int] | None = "last",
        **kwargs: Any,
    ) -> RunResult:
        """Run ``num_steps`` outer steps, like ``SVI.run(rng_key, num_steps, *args)``.

        Parameters
        ----------
        rng_key : PRNG key
            Used by :meth:`init` (ignored when ``init_state`` is given).
        num_steps : int
            Outer steps to run.
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
            ``O(chains × num_samples × d)``; the iterates agree up to rounding.
        """
        num_steps = check.count("num_steps", num_steps, minimum=0)
        if init_state is not None and init_params is not None:
            raise ValueError("init_params: give either init_params or init_state, not both.")
        if init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
        else:
            self._setup(rng_key, args, kwargs)
            state = init_state
        keep = _keep_rule(keep_draws)
        start = int(state.step)
        dynamic, static = partition_args(args, kwargs)
        dynamic = self.sharding.put(dynamic, rows=self.shard_data)
        show = self.progress_bar if progress_bar is None else bool(progress_bar)
        infos: list[dict] = []
        draws: dict[int, Draws] = {}
        good = state
        # Steps are checked one behind: step i+1 is dispatched before step i's rejection
        # count is read, so the device never idles while Python waits on the host.
        pending: tuple[int, TwoStepState, Draws | None] | None = None

        def settle(i: int, state: TwoStepState, d: Draws | None) -> None:
            nonlocal good
            if d is not None and keep(start + i):
                if keep_draws == "last":
                    draws.clear()
                draws[start + i] = d
            rejected = int(state.num_rejected)
            if rejected == 0:
                good = state
            elif rejected >= self.max_rejections:
                result = RunResult(self.get_params(good), good, _stack(infos[: i + 1]), draws)
                raise RejectedStepsError(
                    f"{type(self).__name__}: {rejected} consecutive outer steps were rejected "
                    f"(non-finite proposal) up to step {int(state.step)}; the last good "
                    f"centre is from step {int(good.step)}. Lower tau, the step sizes or "
                    "the learning rate. The last good state is in `err.result`.",
                    result,
                )

        for i in trange(num_steps, disable=not show, desc=type(self).__name__):
            with_draws = keep(start + i)
            state, info, d = self._update_jit(state, dynamic, static=static, with_draws=with_draws)
            infos.append(info)
            if pending is not None:
                settle(*pending)
            pending = (i, state, d)
        if pending is not None:
            settle(*pending)
        return RunResult(self.get_params(state), state, _stack(infos), draws)

    def get_params(self, state: TwoStepState) -> dict[str, jax.Array]:
        """The centre ``x_k`` of ``state`` as a dict of constrained site values."""
        self._require_setup()
        return self.tilted.constrain(state.centre)

    def get_guide_params(self, state: TwoStepState) -> dict[str, jax.Array]:
        """Parameters of :attr:`guide` for ``N(x_k, τ_k I)``, for ``Predictive``.

        ``Predictive(model, guide=scheme.guide, params=scheme.get_guide_params(state),
        num_samples=100)(rng_key, *args)`` draws parameters from the fitted Gaussian,
        pushed through the model's constraints, and the model's predictions.
        """
        self._require_setup()
        return self.guide.params(state.centre, self.tau_at(state.step, state.centre.dtype))

    def _require_setup(self) -> None:
        if self._built_for is None:
            raise RuntimeError(
                f"{type(self).__name__}: call init(rng_key, *args) or run(...) first, so "
                "the model's latent sites are known."
            )


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
