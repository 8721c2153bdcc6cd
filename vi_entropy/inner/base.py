"""What local entropy's samplers share beyond :class:`~vi_entropy.types.InnerStep`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Self

import jax
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.util import is_prng_key

from vi_entropy.types import Context, Draws

#: The evaluation counts among a sampler's ``info``.
COUNT_KEYS = ("num_potential_evals", "num_grad_evals", "num_potential_evals_executed")


class Sampler:
    """A sampler of the tilted posterior as an inner step (``init``/``step``), with the
    draws-only form ``sample`` of earlier versions."""

    def sample(
        self,
        state: Any,
        rng_key: Any,
        centre: jax.Array,
        tau: Any,
        model_args: tuple,
        model_kwargs: Mapping[str, Any],
        batch_key: Any,
    ) -> tuple[Any, Draws, dict[str, jax.Array]]:
        """:meth:`step`'s draws and evaluation counts: ``(state, Draws, counts)``."""
        ctx = Context(tuple(model_args), dict(model_kwargs), batch_key, True)
        _, state, info, draws = self.step(state, rng_key, centre, tau, ctx)
        return state, draws, {k: v for k, v in info.items() if k in COUNT_KEYS}


class ModelKernel(MCMCKernel):
    """What our kernels on a model or a ``potential_fn`` share (:class:`~vi_entropy.SGLD`,
    :class:`~vi_entropy.PCN`, :class:`~vi_entropy.EllipticalSlice`): NumPyro's
    ``MCMCKernel`` interface around ``_model``, ``_potential_fn`` and ``_postprocess_fn``
    (set by the subclass's constructor), and the starting point of :meth:`init`."""

    sample_field = "z"
    #: The kernel's name in error messages.
    _name = "ModelKernel"
    _model: Callable | None
    _potential_fn: Callable | None
    _init_strategy: Callable
    _postprocess_fn: Callable | None

    @property
    def model(self) -> Callable | None:
        return self._model

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("z",)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict) -> Callable:
        if self._postprocess_fn is None:
            return lambda z: z
        return self._postprocess_fn(*model_args, **model_kwargs)

    def wrap_model(self, wrapper: Callable) -> Self:
        """A copy of this kernel bound to ``wrapper(self.model)``."""
        if self._model is None:
            raise ValueError("`wrap_model` needs a kernel built from a model.")
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._postprocess_fn = None
        return kernel

    def _sample_one(self, state: Any, model_args: tuple, model_kwargs: dict) -> Any:
        raise NotImplementedError

    def _sample_chains(self, state: Any, model_args: tuple, model_kwargs: dict) -> Any:
        """One transition of every chain: ``_sample_one`` mapped over vectorized chains."""
        if not is_prng_key(state.rng_key):  # one key per chain: vectorized chains
            return jax.vmap(self._sample_one, in_axes=(0, None, None))(
                state, model_args, model_kwargs
            )
        return self._sample_one(state, model_args, model_kwargs)

    def _initial_params(
        self,
        rng_key: Any,
        init_params: Any,
        model_args: tuple,
        model_kwargs: dict,
        *,
        validate_grad: bool,
    ) -> Any:
        """``init_params``, or the model's initialization when they are not given; on a
        model, also keeps its ``postprocess_fn``."""
        if self._model is not None:
            vectorized = not is_prng_key(rng_key)
            # One initialization per chain only when no init_params are given.
            keys = (
                rng_key
                if (vectorized and init_params is None)
                else (rng_key[0] if vectorized else rng_key)
            )
            info = initialize_model(
                keys,
                self._model,
                init_strategy=self._init_strategy,
                dynamic_args=True,
                model_args=model_args,
                model_kwargs=model_kwargs,
                validate_grad=validate_grad,
            )
            self._postprocess_fn = info.postprocess_fn
            if init_params is None:
                init_params = info.param_info.z
        elif init_params is None:
            raise ValueError(f"{self._name}: `init_params` is required when using `potential_fn`.")
        return init_params
