"""Heat regularization: step 2 is a reverse-KL fit (an implicit step on ``f_τ``).

``x_{k+1} = argmin_m KL(N(m, τI) ‖ φ_k) = argmin_m f_τ(m) + |m − x_k|²/(2τ)``, a proximal
step of size ``τ`` on the heat-regularized loss ``f_τ(x) = E_{N(x, τI)}[f]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpyro.optim
import optax

from vi_entropy import _validation as check
from vi_entropy._numpyro_compat import is_numpyro_optimizer
from vi_entropy.driver import TwoStepScheme
from vi_entropy.inner.rm import ESTIMATORS, RobbinsMonroFit
from vi_entropy.inner.svi import INNER_GAP_THRESHOLD, SVIFit

METHODS = ("svi", "robbins_monro")
# Other names of the methods: "rm" is how the docs and the paper abbreviate Robbins-Monro.
METHOD_ALIASES = {"rm": "robbins_monro", "robbins-monro": "robbins_monro"}


class HeatRegularization(TwoStepScheme):
    """Train a NumPyro model by heat-regularization steps (reverse-KL Gaussian fits).

    Each outer step fits ``N(m, τI)`` (free mean, fixed covariance) to the tilted
    posterior by minimizing ``KL(N(m, τI) ‖ φ_k)`` and moves the centre to ``m``: an
    implicit step ``x_{k+1} = argmin_m f_τ(m) + |m − x_k|²/(2τ)`` on the smoothed loss
    ``f_τ = E_{N(·, τI)} f`` (García Trillos, Kaplan & Sanz-Alonso 2019).

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites.
    tau : float or callable, default 1e-2
        Variance ``τ``, or a schedule ``step -> τ``.
        A variance on the unconstrained scale; see :ref:`Choosing τ <choosing-tau>`.
    method : {"svi", "robbins_monro" (or "rm")}, default "svi"
        ``"svi"``: NumPyro ``SVI`` with ``Trace_ELBO`` on the tilted model and the guide
        :class:`~vi_entropy.guide.GaussianGuide`, warm-started from the previous
        step (guide means and optimizer state carried over).  ``"robbins_monro"``: the
        paper's Algorithm 5 on the mean
        (:class:`~vi_entropy.inner.rm.RobbinsMonroFit`).
    optim : NumPyro optimizer or Optax transformation, default ``numpyro.optim.Adam(0.1 √τ₀)``
        Optimizer of the SVI fit.  The default learning rate is a tenth of the guide's
        standard deviation at step 0 (``1e-2`` at the default ``τ = 1e-2``): Adam moves
        each coordinate by about its learning rate per inner step, so a fixed rate
        caps the step of the centre at ``num_inner_steps × rate`` whatever ``τ``; this
        one scales with the Gaussian being fitted.  ``info["inner_gap"]`` and a warning
        say when the fit stopped short of its optimum.
    num_inner_steps : int, default 100
        SVI steps, or Robbins-Monro iterations, per outer step.
    num_particles : int, default 8
        Draws of ``N(m, τI)`` per inner step (ELBO particles; RM gradient samples).
    gain : float, optional
        Robbins-Monro gains ``a_j = gain · τ · (1 + j/gain_t0)^(−gain_kappa)``.  By
        default ``a_j = 0.5 · τ/(1 + τ λ) · (1 + j/gain_t0)^(−gain_kappa)``, with ``λ`` the
        top eigenvalue of ``∇²f`` estimated by power iteration (and followed from step to
        step): stable whatever ``τ λ``, where a fixed gain diverges once ``τ λ > 3``
        (with ``estimator="gradient_free"``, which evaluates no gradient, ``0.5``).
        Either way a fit that diverges is run again with smaller gains (see
        :class:`~vi_entropy.inner.rm.RobbinsMonroFit`).
    gain_t0, gain_kappa : float, defaults 10.0, 0.6
        The decay of the gains.
    estimator : {"gradient", "gradient_free"}, default "gradient"
        Robbins-Monro estimate of ``∇f_τ``: reparameterized gradients, or Stein's
        identity with forward evaluations only.
    devices : None, int, sequence of devices or Mesh, default None
        Split the particles over these devices (default: all devices
        when there are several); see ``docs/scaling.md``.
    shard_data : bool, default False
        Split the rows of the model's data arguments over the devices instead.
    beta, alpha, outer_optim, init_strategy, progress_bar, max_rejections
        See :class:`~vi_entropy.driver.TwoStepScheme`.

    Notes
    -----
    Mini-batches (``numpyro.plate(..., subsample_size=B)``) are redrawn at every inner
    step by both methods.

    Example
    -------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", 20):
    ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> y = 3.0 + jax.random.normal(jax.random.PRNGKey(1), (20,))
    >>> hr = HeatRegularization(model, tau=0.1, optim=numpyro.optim.Adam(0.05),
    ...                         num_inner_steps=50, progress_bar=False)
    >>> result = hr.run(jax.random.PRNGKey(0), 20, y)
    >>> bool(abs(result.params["mu"] - y.mean()) < 0.2)
    True
    """

    regularized_loss_name = "heat_loss"

    def __init__(
        self,
        model: Callable,
        tau: float | Callable[[Any], Any] = 1e-2,
        *,
        method: str = "svi",
        optim: Any = None,
        num_inner_steps: int = 100,
        num_particles: int = 8,
        gain: float | None = None,
        gain_t0: float = 10.0,
        gain_kappa: float = 0.6,
        estimator: str = "gradient",
        **driver_kwargs: Any,
    ) -> None:
        check.keywords(type(self), driver_kwargs)
        super().__init__(model, tau, **driver_kwargs)
        if isinstance(method, str):
            method = METHOD_ALIASES.get(method.lower(), method.lower())
        self.method = check.choice("method", method, METHODS)
        if optim is not None and self.method != "svi":
            raise ValueError("optim: only used with method='svi'.")
        if optim is None:
            tau0 = self.tau0 if self.tau0 is not None else float(self.tau(0))
            optim = numpyro.optim.Adam(math.sqrt(tau0) / 10)  # exactly 1e-2 at tau = 1e-2
        if not (is_numpyro_optimizer(optim) or isinstance(optim, optax.GradientTransformation)):
            raise TypeError(
                "optim: expected a NumPyro optimizer (numpyro.optim.*) or an Optax "
                f"GradientTransformation, got {type(optim).__name__}."
            )
        self.optim = optim
        self.num_inner_steps = check.count("num_inner_steps", num_inner_steps)
        self.num_particles = check.count("num_particles", num_particles)
        self.gain = None if gain is None else check.positive_float("gain", gain)
        self.gain_t0 = check.positive_float("gain_t0", gain_t0)
        self.gain_kappa = check.positive_float("gain_kappa", gain_kappa)
        if not 0.5 < self.gain_kappa <= 1.0:
            raise ValueError(f"gain_kappa: expected a float in (0.5, 1], got {gain_kappa!r}.")
        self.estimator = check.choice("estimator", estimator, ESTIMATORS)

    def _make_inner(self) -> SVIFit | RobbinsMonroFit:
        if self.method == "svi":
            return SVIFit(
                self.tilted,
                self.optim,
                self.num_inner_steps,
                self.num_particles,
                self.batch_sharding,
            )
        return RobbinsMonroFit(
            self.tilted,
            self.num_inner_steps,
            self.num_particles,
            self.gain,
            self.gain_t0,
            self.gain_kappa,
            self.estimator,
            self.batch_sharding,
        )

    def _stall_advice(self, info: Mapping[str, Any]) -> list[str]:
        advice = super()._stall_advice(info)
        gap = float(np.nanmedian(np.asarray(info.get("inner_gap", np.nan))))
        if self.method == "svi" and gap > INNER_GAP_THRESHOLD:
            advice.insert(
                0,
                f"more SVI steps per outer step or a larger learning rate: the fit stopped "
                f"short of its optimum (median info['inner_gap'] {gap:.2g} > "
                f"{INNER_GAP_THRESHOLD:g}), so each step moved the centre less than heat "
                f"regularization prescribes (num_inner_steps={self.num_inner_steps}, "
                "optim=numpyro.optim.Adam(...))",
            )
        if self.method == "robbins_monro":
            advice.insert(1, "a larger gain (gain=...)")
        return advice

    def _checkpoint_structure(self) -> dict[str, Any]:
        optim = None if self.method != "svi" else type(self.optim).__name__
        return {**super()._checkpoint_structure(), "method": self.method, "optim": optim}

    def _checkpoint_options(self) -> dict[str, Any]:
        return {
            **super()._checkpoint_options(),
            "num_inner_steps": self.num_inner_steps,
            "num_particles": self.num_particles,
            "gain": self.gain,
            "gain_t0": self.gain_t0,
            "gain_kappa": self.gain_kappa,
            "estimator": self.estimator,
        }
