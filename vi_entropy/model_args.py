"""How the model's arguments enter compiled code: traced, or compiled in as constants.

Array arguments are traced (new data of the same shapes reuses the compiled step), and
everything else is jit-static; with ``jit_model_args=False`` (or a model that needs its
data concrete, e.g. ``len(np.unique(dept))``) the arrays are compiled in too, as
:class:`numpyro.infer.MCMC` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import random


class StaticArgs:
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
            isinstance(other, StaticArgs)
            and self.treedef == other.treedef
            and len(self.leaves) == len(other.leaves)
            and all(
                a is b or (type(a) is type(b) and a == b)
                for a, b in zip(self.leaves, other.leaves, strict=True)
            )
        )


def is_array(x: Any) -> bool:
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
) -> tuple[list, StaticArgs]:
    """Split model arguments into arrays (traced) and everything else (static).

    With ``concrete`` the arrays are static too (compiled in as constants), so that the
    model sees them as the NumPy or JAX arrays it was given (``jit_model_args=False``).
    """
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    if concrete:
        static = tuple(_Concrete(leaf) if is_array(leaf) else leaf for leaf in leaves)
        return [None] * len(leaves), StaticArgs(treedef, static)
    dynamic = [leaf if is_array(leaf) else None for leaf in leaves]
    static = tuple(None if is_array(leaf) else leaf for leaf in leaves)
    return dynamic, StaticArgs(treedef, static)


def merge_args(dynamic: Sequence, static: StaticArgs) -> tuple[tuple, dict]:
    leaves = [
        d if s is None else (s.value if isinstance(s, _Concrete) else s)
        for d, s in zip(dynamic, static.leaves, strict=True)
    ]
    args, kwargs = jax.tree.unflatten(static.treedef, leaves)
    return args, kwargs


# What JAX raises when a model needs a concrete value of a traced argument: NumPy on it
# (``np.unique(dept)``), ``int()``/``bool()`` of it, Python control flow or boolean
# indexing with it.
TRACING_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


def needs_concrete_args(
    potential: Callable, dim: int, dtype: Any, subsamples: bool, args: tuple, kwargs: Mapping
) -> Exception | None:
    """The tracing error of a model that fails on traced array arguments, else ``None``.

    Traces ``∇potential`` once (``jax.eval_shape``: nothing is compiled or run).  Any
    other failure is left to show where it belongs (``None``).
    """
    dynamic, static = partition_args(args, kwargs)
    if all(d is None for d in dynamic):
        return None
    centre = jax.ShapeDtypeStruct((dim,), dtype)

    def probe(centre: jax.Array, dynamic: list) -> jax.Array:
        args, kwargs = merge_args(dynamic, static)
        batch_key = random.PRNGKey(0) if subsamples else None
        return jax.grad(potential)(centre, args, kwargs, batch_key)

    try:
        jax.eval_shape(probe, centre, dynamic)
    except TRACING_ERRORS as err:
        return err
    except Exception:  # noqa: BLE001 - any other failure shows where it belongs
        return None
    return None


def tracing_failed(owner: str, jit_model_args: Any, shard_data: bool, err: Exception) -> TypeError:
    """The error for a model that needs concrete data when it gets traced data."""
    return TypeError(
        f"{owner}: tracing the model with its array arguments as traced "
        "values failed: the model needs their concrete values (it calls NumPy, int(), "
        "bool() or Python control flow on its data, e.g. len(np.unique(x))), but "
        f"jit_model_args={jit_model_args} traces them"
        + (" (shard_data=True needs traced arguments)" if shard_data else "")
        + ". Use jit_model_args=False (or the default None) to compile them in as "
        "constants, as numpyro.infer.MCMC(jit_model_args=False) does, or make the model "
        f"work on traced arrays (jnp instead of np). JAX said: {type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}"
    )
