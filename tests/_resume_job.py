"""Small training runs for the kill-and-resume test, each run in a subprocess.

``python -m tests._resume_job run NAME CKPT`` runs job ``NAME`` for :data:`NUM_STEPS`
outer steps, saving a checkpoint to ``CKPT`` after every step (the test kills it).

``python -m tests._resume_job finish NAME CKPT OUT`` finishes that run from ``CKPT`` with
a fresh scheme, then runs it again uninterrupted from the same key, and saves both
results (state, info, draws) to ``OUT.resumed`` and ``OUT.whole`` in the checkpoint
format, for the test to compare.

Both run with the same ``PYTHONHASHSEED``: NumPyro's ``Trace_ELBO`` adds up the ELBO's
site terms in the iteration order of a ``set`` of site names, which depends on the hash
seed, so SVI results agree bitwise across processes only when it is fixed.
"""

from __future__ import annotations

import sys
from functools import partial

from jax import random

from tests.conftest import linreg_data, linreg_model
from vi_entropy import HeatRegularization, LocalEntropy
from vi_entropy import checkpoint as checkpoint_io

NUM_STEPS = 60
SEED = 11
X, Y = linreg_data(n=20, d=3)
JOBS = {
    "le-sgld": partial(
        LocalEntropy,
        linreg_model,
        0.01,
        sampler="sgld",
        num_chains=2,
        num_samples=10,
        num_warmup=10,
        sampler_kwargs={"step_size": 1e-3},
        progress_bar=False,
    ),
    "hr-svi": partial(
        HeatRegularization,
        linreg_model,
        0.01,
        num_inner_steps=20,
        num_particles=2,
        progress_bar=False,
    ),
}


def run(name: str, ckpt: str) -> None:
    JOBS[name]().run(random.PRNGKey(SEED), NUM_STEPS, X, Y, checkpoint=ckpt, checkpoint_every=1)


def finish(name: str, ckpt: str, out: str) -> None:
    scheme = JOBS[name]()  # fresh, as after a crash
    resumed = scheme.run(None, NUM_STEPS, X, Y, resume=ckpt)
    whole = scheme.run(random.PRNGKey(SEED), NUM_STEPS, X, Y)
    for suffix, result in (("resumed", resumed), ("whole", whole)):
        checkpoint_io.save(
            f"{out}.{suffix}", result.state, meta={}, info=result.info, draws=result.draws
        )


if __name__ == "__main__":
    {"run": run, "finish": finish}[sys.argv[1]](*sys.argv[2:])
