"""What local entropy's samplers share beyond :class:`~vi_entropy.types.InnerStep`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

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
