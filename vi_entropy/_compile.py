"""Less compilation: a ``jax.jit`` whose XLA compilation can start early, on a worker
thread, and Gaussian draws in the shape XLA compiles fastest.

A first ``run`` compiles several programs one after the other (init, the outer step,
the tracking estimator).  :class:`BackgroundJit` lets a program that is needed later be
traced and lowered now, on the calling thread, and compiled by XLA on a worker thread
while the calling thread traces and compiles the next one: a first run's tracking
estimator compiles while the first outer step does.

Only XLA's compilation leaves the calling thread.  Tracing runs the model's Python code
under NumPyro's effect handlers, whose stack is global: it never runs on two threads at
once.  The executable is the one ``jax.jit`` compiles for the same arguments (the same
lowered program, the same options), so what it computes is bitwise the same.

:func:`normal` (and :func:`uniform`) draw ``jax.random.normal``'s (``uniform``'s) values
as one flat vector, then reshape them: the same values bit for bit (JAX's threefry numbers the draws by their flat
index), at a third of XLA's CPU compile time for a ``(256, 10)`` block (0.18 s against
0.62 s); the random bits of a many-dimensional shape compile slowly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from jax import random

_WORKER: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    global _WORKER
    if _WORKER is None:
        _WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vi_entropy-compile")
    return _WORKER


def _leaf(x: Any) -> Hashable:
    """What a compiled program depends on in one argument: its abstract value (shape,
    dtype, weak type) and its placement."""
    return jax.typeof(x), getattr(x, "sharding", None)


class BackgroundJit:
    """``jax.jit(fn, static_argnames=...)``, with :meth:`prepare` to compile ahead.

    Calls with arguments of a prepared signature (the same static values, and dynamic
    arguments of the same tree, shapes, dtypes, weak types and placement) run the
    executable compiled for it, once it is ready; any other call is the jit's own (a
    compilation that failed on the worker is made again there, which raises its error).

    Example
    -------
    >>> import jax.numpy as jnp
    >>> square = BackgroundJit(lambda x, power: x**power, static_argnames=("power",))
    >>> square.prepare(jnp.arange(3.0), power=2)  # compiles on the worker thread
    >>> square(jnp.arange(3.0), power=2).tolist()  # that executable
    [0.0, 1.0, 4.0]
    """

    def __init__(self, fn: Callable, static_argnames: Sequence[str] = ()) -> None:
        self.static_argnames = tuple(static_argnames)
        self.jit = jax.jit(fn, static_argnames=self.static_argnames)
        self._compiled: dict[Hashable, Future] = {}
        self._called: set[Hashable] = set()  # signatures the jit itself compiled

    def _signature(self, args: tuple, kwargs: dict) -> Hashable:
        static = tuple((k, kwargs[k]) for k in self.static_argnames if k in kwargs)
        dynamic = (args, {k: v for k, v in kwargs.items() if k not in self.static_argnames})
        leaves, tree = jax.tree.flatten(dynamic)
        return tree, tuple(_leaf(x) for x in leaves), static

    def prepare(self, *args: Any, **kwargs: Any) -> None:
        """Trace and lower for these arguments here; compile on the worker thread.
        Nothing is done for a signature already compiled."""
        key = self._signature(args, kwargs)
        if key not in self._compiled and key not in self._called:
            lowered = self.jit.lower(*args, **kwargs)
            self._compiled[key] = _worker().submit(lowered.compile)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = self._signature(args, kwargs)
        future = self._compiled.get(key)
        if future is not None and future.exception() is None:
            dynamic = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
            return future.result()(*args, **dynamic)
        self._called.add(key)
        return self.jit(*args, **kwargs)


def _drawn_flat(draw: Callable, rng_key: Any, shape: Sequence[int], **kwargs: Any) -> jax.Array:
    """``draw(rng_key, shape, **kwargs)`` as one flat vector, reshaped (scalar options)."""
    shape = tuple(shape)
    if len(shape) < 2:
        return draw(rng_key, shape, **kwargs)
    return draw(rng_key, (int(np.prod(shape)),), **kwargs).reshape(shape)


def normal(rng_key: Any, shape: Sequence[int], dtype: Any = float) -> jax.Array:
    """``jax.random.normal(rng_key, shape, dtype)``, bit for bit, drawn flat.

    Example
    -------
    >>> import numpy as np
    >>> key = jax.random.key(0)
    >>> bool(np.array_equal(normal(key, (3, 4)), jax.random.normal(key, (3, 4))))
    True
    """
    return _drawn_flat(random.normal, rng_key, shape, dtype=dtype)


def uniform(
    rng_key: Any, shape: Sequence[int], dtype: Any = float, minval: float = 0.0, maxval: float = 1.0
) -> jax.Array:
    """``jax.random.uniform(rng_key, shape, dtype, minval, maxval)`` with scalar bounds,
    bit for bit, drawn flat (e.g. a network's initial weights, one compilation per layer
    shape).

    Example
    -------
    >>> import numpy as np
    >>> key = jax.random.key(0)
    >>> want = jax.random.uniform(key, (3, 4), minval=-0.5, maxval=0.5)
    >>> bool(np.array_equal(uniform(key, (3, 4), minval=-0.5, maxval=0.5), want))
    True
    """
    return _drawn_flat(random.uniform, rng_key, shape, dtype=dtype, minval=minval, maxval=maxval)
