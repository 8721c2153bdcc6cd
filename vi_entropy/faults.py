"""Numerical faults that make the driver reject an outer step.

Every outer step reports ``info["fault"]``, a bit mask of :class:`Fault` flags (0 when
the step is good).  A step with any fault is rejected: the centre and the inner state
(chains, optimizer, ...) stay as they were, so a NaN never reaches the centre, and the
next step tries again with fresh randomness.  What counts as a fault:

========================  ==============================================================
flag                      raised when
========================  ==============================================================
``NONFINITE_PROPOSAL``    the proposed centre ``(1 − α) x_k + α m`` is not finite (any
                          scheme; e.g. Robbins-Monro diverged, or a NaN gradient)
``NONFINITE_DRAWS``       a draw of the inner sampler is not finite (MCMC samplers: a
                          chain that blew up, e.g. SGLD with too large a step size)
``NONFINITE_STATE``       a floating-point leaf of the new inner state is not finite:
                          a kernel's cached potential energy or gradient (NUTS/HMC), a
                          population energy (SA), SVI parameters or optimizer moments
``DIVERGENT_CHAIN``       a chain is stuck: every one of its transitions in this step
                          diverged and it never left its starting point (kernels that
                          report divergences: NUTS, HMC, SA), so its draws say nothing
                          about the tilted posterior (typically a step size adapted for
                          a larger ``τ`` than the current one); or SGLD refused every
                          proposal of the step's last quarter (a non-finite potential
                          or gradient at each: the chain blew up, or sits at a NaN cliff)
``ZERO_WEIGHTS``          importance sampling: every weight is zero (``f`` infinite or
                          NaN at all proposals) or some weight is infinite (``f = −∞``)
``NONFINITE_LOSS``        SVI: the loss of the last inner step is not finite
                          (``SVI.stable_update`` skips such inner steps and keeps the
                          previous parameters; ``info["num_skipped_inner"]`` counts them)
``BAD_TAU``               the ``τ`` schedule gave a value that is not finite and positive
========================  ==============================================================
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp


class Fault(enum.IntFlag):
    """Bit flags of ``info["fault"]`` (see the module docstring for when each is raised)."""

    NONFINITE_PROPOSAL = 1
    NONFINITE_DRAWS = 2
    NONFINITE_STATE = 4
    DIVERGENT_CHAIN = 8
    ZERO_WEIGHTS = 16
    NONFINITE_LOSS = 32
    BAD_TAU = 64


_DESCRIPTIONS = {
    Fault.NONFINITE_PROPOSAL: "the proposed centre was not finite",
    Fault.NONFINITE_DRAWS: "the inner sampler produced non-finite draws",
    Fault.NONFINITE_STATE: (
        "the inner sampler's or optimizer's state became non-finite "
        "(potential energy, gradient or parameters)"
    ),
    Fault.DIVERGENT_CHAIN: (
        "a chain was stuck (every transition diverged and it never moved, or SGLD refused "
        "all its last proposals)"
    ),
    Fault.ZERO_WEIGHTS: "all importance weights were zero (or one was infinite)",
    Fault.NONFINITE_LOSS: "the SVI loss of the last inner step was not finite",
    Fault.BAD_TAU: "the tau schedule gave a value that is not finite and positive",
}


_ADVICE = {
    Fault.NONFINITE_PROPOSAL: "lower tau, alpha, the Robbins-Monro gain or the learning rate",
    Fault.NONFINITE_DRAWS: (
        "lower the inner sampler's step size (sampler_kwargs['step_size']; SGLD: "
        "sampler_kwargs['step_scale'], or step_size=None to adapt it in the warm-up)"
    ),
    Fault.NONFINITE_STATE: (
        "look for parameter values where the model's potential or its gradient is NaN or "
        "infinite (data, constraints, numerically unstable log densities)"
    ),
    Fault.DIVERGENT_CHAIN: (
        "re-adapt the step size (readapt=True, needed when tau shrinks), or use more "
        "warm-up (num_warmup); SGLD: lower its step size (sampler_kwargs['step_scale'] "
        "or ['step_size'])"
    ),
    Fault.ZERO_WEIGHTS: (
        "the potential is NaN or infinite around the centre: check the model and data, or lower tau"
    ),
    Fault.NONFINITE_LOSS: "lower the SVI learning rate, or check the model for NaN",
    Fault.BAD_TAU: "make the tau schedule stay finite and positive",
}


def advise(mask: int) -> list[str]:
    """What to try against the faults in ``mask``."""
    return [text for flag, text in _ADVICE.items() if int(mask) & flag]


def describe(mask: int) -> list[str]:
    """Plain-language descriptions of the faults in ``mask``."""
    return [text for flag, text in _DESCRIPTIONS.items() if int(mask) & flag]


def flag(condition: jax.Array, fault: Fault) -> jax.Array:
    """``fault`` as an int32 bit where ``condition`` holds, else 0 (traceable)."""
    return jnp.where(condition, jnp.int32(fault), jnp.int32(0))


def all_finite(tree: object) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (integers, keys ignored)."""
    ok = jnp.asarray(True)
    for leaf in jax.tree.leaves(tree):
        leaf = leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf)
        if jax.dtypes.issubdtype(leaf.dtype, jnp.inexact):
            ok = ok & jnp.all(jnp.isfinite(leaf))
    return ok
