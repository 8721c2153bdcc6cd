"""Every use of NumPyro's private internals, in one place.

NumPyro has no public API for the three things below, so we read its internals here and
nowhere else.  Each touch says what it reads, why, and what happens on a NumPyro release
that moves it: the code checks that the attribute is there and, if not, either falls
back to a public route or raises an error naming the NumPyro version, instead of an
``AttributeError`` deep inside a compiled function.  The touches were written against
NumPyro ``TESTED_NUMPYRO``; ``tests/test_architecture.py`` checks that no other module
reaches into NumPyro's private names.

1. :func:`unconstrained_values_on_stack`: ``numpyro.infer.util._unconstrain_params`` and
   ``numpyro.primitives._PYRO_STACK`` (the tilted model reads the unconstrained values
   ``potential_energy`` substitutes).
2. :func:`is_numpyro_optimizer`: ``numpyro.optim._NumPyroOptim`` (argument checking).
3. :class:`SAInternals`: :class:`numpyro.infer.SA`'s ``_init_state``, ``_init_fn``,
   ``_sample_fn``, ``_postprocess_fn``, ``_potential_fn_gen`` and its constructor's
   settings (the warm-started SA kernel of :mod:`vi_entropy.inner.sa`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpyro
import numpyro.optim
from numpyro.infer import sa as _numpyro_sa

#: The NumPyro minor version these touches were checked against.
TESTED_NUMPYRO = "0.22"
NUMPYRO_VERSION = tuple(int(part) for part in re.findall(r"\d+", numpyro.__version__)[:2])


def _missing(what: str, use: str) -> RuntimeError:
    return RuntimeError(
        f"vi_entropy needs NumPyro's internal {what} ({use}), which numpyro "
        f"{numpyro.__version__} does not have; vi_entropy was checked against numpyro "
        f"{TESTED_NUMPYRO}. Install that version (pip install 'numpyro=={TESTED_NUMPYRO}.*')."
    )


# -- 1. the unconstrained values `potential_energy` substitutes ---------------------------
# NumPyro >= 0.16 wraps the model in the handler `_unconstrain_params`, which exposes
# `.params`; its own `hmc_gibbs.estimate_likelihood` finds it on the handler stack the
# same way.  On a release without it we return None and the caller inverts the transforms
# instead (slower, same values), so this touch degrades rather than fails.
_UNCONSTRAIN_HANDLER = getattr(numpyro.infer.util, "_unconstrain_params", None)


def unconstrained_values_on_stack() -> Mapping[str, Any] | None:
    """Unconstrained values NumPyro's ``potential_energy`` is substituting, if any."""
    if _UNCONSTRAIN_HANDLER is None:  # pragma: no cover - other NumPyro releases
        return None
    for handler in reversed(getattr(numpyro.primitives, "_PYRO_STACK", ())):
        if isinstance(handler, _UNCONSTRAIN_HANDLER):
            return handler.params
    return None


# -- 2. is this a NumPyro optimizer? -------------------------------------------------------
# `numpyro.optim._NumPyroOptim` is the base of every `numpyro.optim.*` class and the type
# `SVI` accepts besides Optax transformations.  Without it, duck typing on the three
# methods `SVI` calls is the public equivalent.
_NUMPYRO_OPTIM = getattr(numpyro.optim, "_NumPyroOptim", None)


def is_numpyro_optimizer(obj: object) -> bool:
    """Whether ``obj`` is a NumPyro optimizer (``numpyro.optim.Adam(...)`` and the like)."""
    if _NUMPYRO_OPTIM is not None:
        return isinstance(obj, _NUMPYRO_OPTIM)
    return all(callable(getattr(obj, name, None)) for name in ("init", "update", "get_params"))


# -- 3. SA's transition functions ----------------------------------------------------------
# `numpyro.infer.SA` builds its transition functions in `_init_state` and keeps them in
# `_init_fn` / `_sample_fn` / `_postprocess_fn`, and the model's potential generator in
# `_potential_fn_gen`; its settings live in `_model`, `_potential_fn`, `_adapt_state_size`,
# `_dense_mass`, `_init_strategy`.  None of that is public, and a warm-started inner
# sampler needs (a) `init` to honour given `init_params` (NumPyro replaces them by a fresh
# initialization when SA has a model), (b) the initial population's scale (NumPyro's
# `init_kernel` takes it as `inverse_mass_matrix`), (c) the potential at new model
# arguments (to refresh the population's cached energies when the target moves).
_SA_SETTINGS = ("_model", "_potential_fn", "_adapt_state_size", "_dense_mass", "_init_strategy")
_SA_FUNCTIONS = ("_init_fn", "_sample_fn", "_postprocess_fn", "_potential_fn_gen")


def _check_sa(kernel: _numpyro_sa.SA) -> None:
    for name in (*_SA_SETTINGS, *_SA_FUNCTIONS):
        if name not in vars(kernel):
            raise _missing(f"SA.{name}", "the warm-started SA kernel")
    if not callable(getattr(_numpyro_sa.SA, "_init_state", None)):
        raise _missing("SA._init_state", "the warm-started SA kernel")


class SAInternals(_numpyro_sa.SA):
    """:class:`numpyro.infer.SA` with its private parts behind three small methods.

    Subclasses override :meth:`wrap_init_fn` (to change NumPyro's ``init_kernel``); they
    get :meth:`potential_fn_at` and :meth:`settings_of`, and ``init`` keeps the given
    ``init_params``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_sa(self)

    @staticmethod
    def settings_of(kernel: _numpyro_sa.SA) -> dict[str, Any]:
        """The constructor arguments a NumPyro ``SA`` kernel was built with."""
        _check_sa(kernel)
        return {name.lstrip("_"): vars(kernel)[name] for name in _SA_SETTINGS}

    def wrap_init_fn(self, init_fn: Callable) -> Callable:
        """Hook: return a replacement for NumPyro's ``init_kernel`` (default: itself)."""
        return init_fn

    def _init_state(
        self, rng_key: Any, model_args: tuple, model_kwargs: dict, init_params: Any
    ) -> Any:
        # NumPyro's `_init_state` runs `initialize_model` and returns its fresh point when
        # SA has a model; we keep its transition functions and the caller's point.
        initialized = super()._init_state(rng_key, model_args, model_kwargs, init_params)
        self._init_fn = self.wrap_init_fn(self._init_fn)
        return initialized if init_params is None else init_params

    def potential_fn_at(self, model_args: tuple = (), model_kwargs: dict | None = None) -> Callable:
        """The potential energy function at these model arguments (after ``init``)."""
        if self._model is None:
            return self._potential_fn
        if self._potential_fn_gen is None:
            raise ValueError("potential_fn_at: call `init` first.")
        return self._potential_fn_gen(*model_args, **({} if model_kwargs is None else model_kwargs))
