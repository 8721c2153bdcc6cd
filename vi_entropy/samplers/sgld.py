"""Stochastic-gradient Langevin dynamics (SGLD) as a NumPyro ``MCMCKernel``.

One transition, with a fresh mini-batch ``B_t`` for every ``numpyro.plate`` that sets
``subsample_size`` (Welling & Teh 2011; the inner loop of Entropy-SGD, the paper's
Algorithm 4 when run on the tilted posterior):

.. math::

    z_{t+1} = z_t - \\eta_t \\nabla U_{B_t}(z_t) + s \\sqrt{2 \\eta_t}\\, \\xi_t,
    \\qquad \\xi_t \\sim N(0, I),

with step size ``η_t`` (a float, or a schedule ``t -> η_t``) and noise scale ``s``
(``s = 1`` is Langevin dynamics for ``exp(-U)``; Entropy-SGD's "thermal noise" uses
``s < 1``, which samples a colder density).  There is no Metropolis correction: the
draws are biased by ``O(η)``, so keep ``η`` small against the curvature of ``U``.
"""

from __future__ import annotations

import copy
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model, potential_energy
from numpyro.util import is_prng_key

SGLDState = namedtuple("SGLDState", ["i", "z", "potential_energy", "grad_norm", "rng_key"])
"""State of :class:`SGLD`.

- **i** - iteration count.
- **z** - current draw (a pytree of unconstrained values when the kernel has a model).
- **potential_energy** - mini-batch potential at the point where the last gradient was
  taken (the previous draw; a diagnostic, not used by the dynamics).
- **grad_norm** - Euclidean norm of that gradient (a diagnostic).
- **rng_key** - random key for the next transition.

Example: ``SGLD(model).init(jax.random.PRNGKey(0), 0, {"x": jnp.zeros(())})`` is
``SGLDState(i=0, z={"x": 0.0}, ...)``.
"""


class SGLD(MCMCKernel):
    """Stochastic-gradient Langevin dynamics, with a fresh mini-batch at every step.

    ``z ← z − η ∇U_B(z) + s √(2η) ξ``.  Works inside :class:`numpyro.infer.MCMC`
    (vectorized chains included) and as the inner sampler of
    :class:`~vi_entropy.LocalEntropy`, where it is the paper's Algorithm 4
    (Entropy-SGD's inner loop) applied to the tilted posterior.

    Parameters
    ----------
    model : callable, optional
        NumPyro model.  Exactly one of ``model`` and ``potential_fn`` must be given.
        Plates with ``subsample_size`` draw a new mini-batch at every step (the
        potential then scales the likelihood by ``N / B``, an unbiased estimate).
    potential_fn : callable, optional
        Potential energy ``z -> U(z)`` when no model is given.
    step_size : float or callable, default 1e-3
        ``η``; a callable ``t -> η_t`` gives a schedule (e.g. ``a (b + t)^{-γ}`` for the
        decreasing steps of Welling & Teh, or any Optax schedule).
    noise_scale : float, default 1.0
        ``s``; 1 samples ``exp(-U)``, smaller values sample a colder density.
    init_strategy : callable, default ``init_to_uniform``
        NumPyro init strategy, used when ``init_params`` is not given.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(1.0, 0.5))
    >>> mcmc = MCMC(SGLD(model, step_size=0.01), num_warmup=200, num_samples=2000,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0))
    >>> round(float(mcmc.get_samples()["x"].mean()), 1)
    1.0
    """

    sample_field = "z"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        step_size: float | Callable[[Any], Any] = 1e-3,
        noise_scale: float = 1.0,
        init_strategy: Callable = init_to_uniform,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("SGLD: give exactly one of `model` and `potential_fn`.")
        if not callable(step_size):
            step_size = float(step_size)
            if not (jnp.isfinite(step_size) and step_size > 0):
                raise ValueError(f"step_size: expected a finite float > 0, got {step_size}.")
        noise_scale = float(noise_scale)
        if not (jnp.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale: expected a finite float >= 0, got {noise_scale}.")
        self._model = model
        self._potential_fn = potential_fn
        self.step_size = step_size
        self.noise_scale = noise_scale
        self._init_strategy = init_strategy
        self._postprocess_fn: Callable | None = None

    @property
    def model(self) -> Callable | None:
        return self._model

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("z",)

    def _potential(self, z: Any, key: Any, model_args: tuple, model_kwargs: dict) -> Any:
        if self._model is None:
            return self._potential_fn(z)
        # Seeding the model draws a fresh subsample for every subsampled plate.
        seeded = handlers.seed(self._model, rng_seed=key)
        return potential_energy(seeded, model_args, model_kwargs, z)

    def init(
        self,
        rng_key: Any,
        num_warmup: int,
        init_params: Any = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> SGLDState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        if self._model is not None:
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
            )
            self._postprocess_fn = info.postprocess_fn
            if init_params is None:
                init_params = info.param_info.z
        elif init_params is None:
            raise ValueError("SGLD: `init_params` is required when using `potential_fn`.")

        def one(z: Any, key: Any) -> SGLDState:
            zero = jnp.zeros((), ravel_pytree(z)[0].dtype)
            return SGLDState(jnp.array(0), z, zero, zero, key)

        if vectorized:
            return jax.vmap(one)(init_params, rng_key)
        return one(init_params, rng_key)

    def _step_size(self, i: Any) -> Any:
        return self.step_size(i) if callable(self.step_size) else self.step_size

    def _sample_one(self, state: SGLDState, model_args: tuple, model_kwargs: dict) -> SGLDState:
        key, key_batch, key_noise = random.split(state.rng_key, 3)
        pe, grad = jax.value_and_grad(self._potential)(state.z, key_batch, model_args, model_kwargs)
        eta = self._step_size(state.i)
        flat, unravel = ravel_pytree(state.z)
        g_flat = ravel_pytree(grad)[0]
        noise = random.normal(key_noise, flat.shape, flat.dtype)
        new = flat - eta * g_flat + self.noise_scale * jnp.sqrt(2.0 * eta) * noise
        return SGLDState(state.i + 1, unravel(new), pe, jnp.linalg.norm(g_flat), key)

    def sample(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        key = state.rng_key
        vectorized = key.ndim > (0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1)
        if vectorized:
            return jax.vmap(self._sample_one, in_axes=(0, None, None))(
                state, model_args, model_kwargs
            )
        return self._sample_one(state, model_args, model_kwargs)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict) -> Callable:
        if self._postprocess_fn is None:
            return lambda z: z
        return self._postprocess_fn(*model_args, **model_kwargs)

    def refresh(self, state: SGLDState, model_args: tuple, model_kwargs: dict | None) -> SGLDState:
        """Nothing cached depends on the model arguments: every step recomputes its gradient."""
        return state

    def wrap_model(self, wrapper: Callable) -> SGLD:
        """A copy of this kernel bound to ``wrapper(self.model)``."""
        if self._model is None:
            raise ValueError("`wrap_model` needs a kernel built from a model.")
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._postprocess_fn = None
        return kernel

    def get_diagnostics_str(self, state: SGLDState) -> str:
        return f"step size {float(jnp.mean(jnp.asarray(self._step_size(state.i)))):.2e}"
