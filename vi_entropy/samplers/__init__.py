"""Samplers of the tilted posterior: NumPyro kernels, SGLD, pCN, elliptical slice,
importance sampling."""

from vi_entropy.samplers.elliptical_slice import EllipticalSlice, EllipticalSliceState
from vi_entropy.samplers.importance import ImportanceSampler, ImportanceState, effective_sample_size
from vi_entropy.samplers.mcmc import Draws, MCMCSampler, make_kernel
from vi_entropy.samplers.pcn import PCN, PCNState
from vi_entropy.samplers.sa import SA
from vi_entropy.samplers.sgld import SGLD, SGLDState

__all__ = [
    "PCN",
    "SA",
    "SGLD",
    "Draws",
    "EllipticalSlice",
    "EllipticalSliceState",
    "ImportanceSampler",
    "ImportanceState",
    "MCMCSampler",
    "PCNState",
    "SGLDState",
    "effective_sample_size",
    "make_kernel",
]
