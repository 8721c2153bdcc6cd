"""vi_entropy: local-entropy and heat-regularization training for NumPyro models.

Two schemes from García Trillos, Kaplan & Sanz-Alonso, "Variational characterizations of
local entropy and heat regularization in deep learning" (Entropy 21(5):511, 2019):
each outer step tilts the model's posterior towards the current centre ``x_k`` with a
factor ``N(x_k, τI)`` and fits ``N(x_{k+1}, τI)`` to it, by forward KL
(:class:`LocalEntropy`, moment matching of samples) or reverse KL
(:class:`HeatRegularization`, SVI or Robbins-Monro).
"""

from vi_entropy.checkpoint import CheckpointError
from vi_entropy.driver import (
    RejectedStepsError,
    RunResult,
    TwoStepScheme,
    TwoStepState,
    VIEntropyWarning,
)
from vi_entropy.faults import Fault
from vi_entropy.gaussian_fit import GaussianGuide, moment_match
from vi_entropy.heat import HeatRegularization
from vi_entropy.local_entropy import LocalEntropy
from vi_entropy.samplers import SA, SGLD
from vi_entropy.tilted import TiltedPosterior, tilt_model

__version__ = "0.1.0"

__all__ = [
    "SA",
    "SGLD",
    "CheckpointError",
    "Fault",
    "GaussianGuide",
    "HeatRegularization",
    "LocalEntropy",
    "RejectedStepsError",
    "RunResult",
    "TiltedPosterior",
    "TwoStepScheme",
    "TwoStepState",
    "VIEntropyWarning",
    "moment_match",
    "tilt_model",
]
