"""Samplers of the tilted posterior: NumPyro kernels, SGLD, importance sampling."""

from vi_entropy.samplers.importance import ImportanceSampler, ImportanceState, effective_sample_size
from vi_entropy.samplers.mcmc import Draws, MCMCSampler, make_kernel
from vi_entropy.samplers.sa import SA
from vi_entropy.samplers.sgld import SGLD, SGLDState

__all__ = [
    "SA",
    "SGLD",
    "Draws",
    "ImportanceSampler",
    "ImportanceState",
    "MCMCSampler",
    "SGLDState",
    "effective_sample_size",
    "make_kernel",
]
