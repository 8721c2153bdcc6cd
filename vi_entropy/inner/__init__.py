"""Inner steps (step 2 of an outer step) and the kernels of ours they run.

Each inner step implements :class:`~vi_entropy.types.InnerStep`; the kernels (SGLD, pCN,
elliptical slice, SA) are also NumPyro ``MCMCKernel``s for :class:`numpyro.infer.MCMC`.
"""

from vi_entropy.inner.elliptical_slice import EllipticalSlice, EllipticalSliceState
from vi_entropy.inner.importance import ImportanceSampler, ImportanceState, effective_sample_size
from vi_entropy.inner.mcmc import MCMCSampler, make_kernel
from vi_entropy.inner.pcn import PCN, PCNState
from vi_entropy.inner.sa import SA
from vi_entropy.inner.sgld import SGLD, SGLDState
from vi_entropy.types import Draws

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
