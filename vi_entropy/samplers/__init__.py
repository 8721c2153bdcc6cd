"""Samplers of the tilted posterior (public names; they live in :mod:`vi_entropy.inner`).

The kernels (:class:`SGLD`, :class:`PCN`, :class:`EllipticalSlice`, :class:`SA`, also
``MCMCKernel``s for :class:`numpyro.infer.MCMC`), local entropy's samplers as inner steps
(:class:`MCMCSampler`, :class:`ImportanceSampler`) and the :class:`Draws` they return.
"""

from vi_entropy.inner import *  # noqa: F403 - the same public names
from vi_entropy.inner import __all__  # noqa: F401
