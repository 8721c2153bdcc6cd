"""The paper's experiment (see :mod:`vi_entropy.experiment.run`)."""

from vi_entropy.experiment.run import *  # noqa: F403
from vi_entropy.experiment.run import GRADIENT_FREE, __all__, make_trainer  # noqa: F401
