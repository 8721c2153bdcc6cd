"""Step 2 of both schemes, by its earlier module name (the code lives in :mod:`vi_entropy.inner`).

Local entropy's moment matching is :mod:`vi_entropy.inner.averaging`; heat
regularization's fits are :mod:`vi_entropy.inner.svi` and :mod:`vi_entropy.inner.rm`.
"""

from vi_entropy.guide import GaussianGuide
from vi_entropy.inner.averaging import AVERAGING, moment_match, running_average
from vi_entropy.inner.rm import ESTIMATORS, RobbinsMonroFit
from vi_entropy.inner.svi import SVIFit

__all__ = [
    "AVERAGING",
    "ESTIMATORS",
    "GaussianGuide",
    "RobbinsMonroFit",
    "SVIFit",
    "moment_match",
    "running_average",
]
