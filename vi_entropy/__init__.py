"""vi_entropy: local-entropy and heat-regularization training for NumPyro models.

Two schemes from García Trillos, Kaplan & Sanz-Alonso, "Variational characterizations of
local entropy and heat regularization in deep learning" (Entropy 21(5):511, 2019):
each outer step tilts the model's posterior towards the current centre ``x_k`` with a
factor ``N(x_k, τI)`` and fits ``N(x_{k+1}, τI)`` to it, by forward KL
(:class:`LocalEntropy`, moment matching of samples) or reverse KL
(:class:`HeatRegularization`, SVI or Robbins-Monro).
"""

from vi_entropy.checkpoint import CheckpointError

# The estimators `local_entropy` and `heat_loss` live in `vi_entropy.diagnostics`: a
# top-level `local_entropy` would shadow the module `vi_entropy.local_entropy`.
from vi_entropy.diagnostics import Estimate, MonotonicityReport, monotonicity
from vi_entropy.driver import (
    OuterOptimState,
    RejectedStepsError,
    RunResult,
    TwoStepScheme,
    TwoStepState,
    VIEntropyWarning,
)
from vi_entropy.faults import Fault
from vi_entropy.guide import GaussianGuide
from vi_entropy.heat import HeatRegularization
from vi_entropy.inner import PCN, SA, SGLD, EllipticalSlice
from vi_entropy.inner.averaging import moment_match
from vi_entropy.local_entropy import LocalEntropy
from vi_entropy.tilted import TiltedPosterior, tilt_model

__version__ = "0.1.0"

# ArviZ and matplotlib are imported only when their functions are first used.
_LAZY = {
    "to_inference_data": "vi_entropy.arviz",
    "plot_trajectory": "vi_entropy.plots",
    "plot_sampler_health": "vi_entropy.plots",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vi_entropy' has no attribute {name!r}")


#: Submodules whose ``__all__`` is public API too (documented in the API reference, whose
#: build fails when one of their names is missing).
__public_modules__ = ("diagnostics", "inner", "data", "models", "experiment")

__all__ = [
    "PCN",
    "SA",
    "SGLD",
    "CheckpointError",
    "EllipticalSlice",
    "Estimate",
    "Fault",
    "GaussianGuide",
    "HeatRegularization",
    "LocalEntropy",
    "MonotonicityReport",
    "OuterOptimState",
    "RejectedStepsError",
    "RunResult",
    "TiltedPosterior",
    "TwoStepScheme",
    "TwoStepState",
    "VIEntropyWarning",
    "moment_match",
    "monotonicity",
    "plot_sampler_health",
    "plot_trajectory",
    "tilt_model",
    "to_inference_data",
]
