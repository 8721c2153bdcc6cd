"""The paper's experiment: a dense network on real digits, trained by every method.

García Trillos, Kaplan & Sanz-Alonso (2019, Table 1 and Figure 4) train dense networks
on MNIST from one random initialization for 500 updates and compare, per update, SGD
with learning rate ``τ`` against local entropy (importance sampling, SGLD) and heat
regularization (Robbins-Monro).  This module runs that comparison, extended to the
samplers and baselines a user would compare today, all on the same NumPyro model from
the same initialization:

================ ==============================================================
``sgd``           SGD with learning rate ``τ`` on ``f`` (mini-batches)
``adam``          Adam (mini-batches)
``sam``           sharpness-aware minimization, ``optax.contrib.sam`` (2 gradients)
``le-is``         local entropy, importance sampling (gradient-free)
``le-sgld``       local entropy, SGLD inner loop (Entropy-SGD-equivalent)
``le-nuts``       local entropy, NUTS
``le-sa``         local entropy, sample-adaptive MCMC (gradient-free)
``hr-svi``        heat regularization, SVI on the Gaussian guide
``hr-rm``         heat regularization, Robbins-Monro (the paper's Algorithm 5)
``le-pcn``        local entropy, preconditioned Crank-Nicolson MCMC (gradient-free)
``le-slice``      local entropy, elliptical slice sampling (gradient-free)
``le-pcn-adam``   ``le-pcn`` with Adam as outer optimizer (``outer_optim``; ours)
``le-sgld-adam``  ``le-sgld`` with Adam as outer optimizer
``hr-svi-adam``   ``hr-svi`` with Adam as outer optimizer
``es-openes``     OpenAI evolution strategy (evosax ``Open_ES``, Adam; gradient-free)
``es-snes``       separable natural evolution strategy (evosax ``SNES``, Adam)
================ ==============================================================

The gradient-free methods run at one forward-evaluation budget per update: the
evolution strategies' population is ``le-pcn``'s chains × (transitions + 1), and
``le-slice`` is set to about as many evaluations (its count varies).  The evolution
strategies are peers, not local entropy: they have no ``τ``; they evaluate the same
loss, on a fresh mini-batch per update shared by the whole population.

The loss is the model's potential ``f`` (softmax negative log-likelihood summed over
the ``N`` training images, plus the Gaussian prior), so SGD with learning rate ``τ`` and
the local-entropy step ``x − τ∇F_τ`` move on the same scale (``τN`` per unit of the
mean loss).  One "update" is one outer step of a scheme or one optimizer step.

The package: :mod:`~vi_entropy.experiment.methods` (the registry of methods and their
settings), :mod:`~vi_entropy.experiment.trainers` (one trainer interface over Optax, the
two schemes and evosax), :mod:`~vi_entropy.experiment.run` (:func:`train_one`,
:func:`run_experiment`) and :mod:`~vi_entropy.experiment.report` (tables, figures,
ArviZ files).  The command line (:mod:`vi_entropy.cli`) is built on it.
"""

# Besides __all__ (the documented API, docs/api.md), the names the command line and the
# tests use are importable from here: ``name as name`` marks them as re-exported.
from vi_entropy.experiment.methods import GRADIENT_FREE as GRADIENT_FREE
from vi_entropy.experiment.methods import METHODS as METHODS
from vi_entropy.experiment.methods import REGISTRY as REGISTRY
from vi_entropy.experiment.methods import method_settings
from vi_entropy.experiment.report import as_float_array as as_float_array
from vi_entropy.experiment.report import config_dict as config_dict
from vi_entropy.experiment.report import markdown_table, save_draws, save_figures, summary_rows
from vi_entropy.experiment.run import (
    Config,
    MethodRun,
    complete_settings,
    run_experiment,
    train_one,
)
from vi_entropy.experiment.run import make_trainer as make_trainer
from vi_entropy.experiment.trainers import ESTrainer as ESTrainer
from vi_entropy.experiment.trainers import OptaxTrainer as OptaxTrainer
from vi_entropy.experiment.trainers import SchemeTrainer as SchemeTrainer

__all__ = [
    "Config",
    "MethodRun",
    "complete_settings",
    "markdown_table",
    "method_settings",
    "run_experiment",
    "save_draws",
    "save_figures",
    "summary_rows",
    "train_one",
]
