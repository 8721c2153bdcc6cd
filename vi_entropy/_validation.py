"""Argument checks shared by the public classes: each error names the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.ndarray | jnp.ndarray):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"{name}: expected a scalar, got shape {np.shape(value)}.")
    x = float(value)
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
        return value
    return positive_float(name, value)


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """``value`` as one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}.")
    return value
