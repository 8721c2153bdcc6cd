"""Argument checks shared by the public classes: each error names the argument."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.util import is_prng_key


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``), else ``ValueError``."""
    if isinstance(value, np.ndarray | jax.Array):
        real = jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
    else:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    if not real:
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"{name}: expected a scalar, got shape {np.shape(value)}.")
    try:
        x = float(value)
    except OverflowError:  # an int too large for a float
        x = math.inf
    ok = math.isfinite(x) and (x >= 0 if allow_zero else x > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite float {bound}, got {value!r}.")
    return x


def unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in (0, 1]."""
    x = positive_float(name, value)
    if x > 1:
        raise ValueError(f"{name}: expected a float in (0, 1], got {value!r}.")
    return x


def count(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}.")
    return int(value)


def schedule(name: str, value: Any) -> float | Callable[[Any], Any]:
    """A positive float or a callable ``step -> value`` whose value at step 0 is positive."""
    if callable(value):
        try:
            first = value(jnp.asarray(0))
        except Exception as err:  # noqa: BLE001 - report any failure of the user's schedule
            raise ValueError(f"{name}: the schedule failed at step 0: {err}") from err
        positive_float(f"{name}(0)", np.asarray(first))
        try:
            # It is evaluated inside compiled code, on a traced step count.
            jax.eval_shape(value, jax.ShapeDtypeStruct((), jnp.int32))
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"{name}: the schedule must be a JAX function of the step (it is evaluated "
                f"inside compiled code; use jnp.where instead of if/else): {err}"
            ) from err
        return value
    return positive_float(name, value)


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """``value`` as one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}.")
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool (``True``/``False`` or a NumPy bool, not a string or a number)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


def open_unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in (0, 1) (e.g. a target acceptance probability)."""
    x = positive_float(name, value)
    if x >= 1:
        raise ValueError(f"{name}: expected a float in (0, 1), got {value!r}.")
    return x


def fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1) (e.g. a weight of a moving average, 0 for none)."""
    x = positive_float(name, value, allow_zero=True)
    if x >= 1:
        raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}.")
    return x


def function(name: str, value: Any, expected: str) -> Callable:
    """``value`` if it is callable, else a ``TypeError`` saying what was ``expected``."""
    if not callable(value):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}.")
    return value


def rng_key(name: str, value: Any) -> Any:
    """``value`` if it is a JAX PRNG key (``random.PRNGKey(0)`` or ``random.key(0)``)."""
    is_array = isinstance(value, jax.Array | np.ndarray)
    if not (is_array and is_prng_key(value)):
        shown = (
            f"an array of shape {value.shape} and dtype {value.dtype}"
            if is_array
            else (f"{type(value).__name__} {value!r}")
        )
        raise TypeError(
            f"{name}: expected a single PRNG key (jax.random.PRNGKey(0) or "
            f"jax.random.key(0)), got {shown}."
        )
    return value


def path(name: str, value: Any) -> str:
    """``value`` as a file-system path string (``str`` or ``os.PathLike``)."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise TypeError(f"{name}: expected a file path, got {type(value).__name__} {value!r}.")
    return os.fspath(value)


def keywords(cls: type, given: Any) -> None:
    """Unknown keyword arguments of ``cls(...)``: a ``TypeError`` in the words of ``cls``.

    The accepted names are those of every ``__init__`` along ``cls.__mro__`` (a scheme
    passes the driver's options on to its base class); the error suggests the closest.
    """
    accepted: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if klass is object or init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                accepted.add(p.name)
    for name in given:
        if name not in accepted:
            close = difflib.get_close_matches(str(name), sorted(accepted), n=1)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"expected one of {sorted(accepted)}."
            )
            raise TypeError(f"{cls.__name__}: unknown keyword {name!r}; {hint}")
