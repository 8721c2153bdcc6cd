"""Local entropy: step 2 is moment matching (forward KL).

``x_{k+1} = E_{φ_k}[y]`` (paper, LE), equivalently a gradient step of size ``τ`` on the
local entropy ``F_τ(x) = −log ∫ e^{−f(y)} N(y; x, τI) dy``:
``x_{k+1} = x_k − τ ∇F_τ(x_k)``.  The mean is estimated from draws of the tilted
posterior by NUTS, HMC, SA, SGLD, pCN, elliptical slice (any NumPyro ``MCMCKernel``) or
importance sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax
from numpyro.infer.mcmc import MCMCKernel

from vi_entropy import _validation as check
from vi_entropy.checkpoint import jsonable
from vi_entropy.driver import TwoStepScheme
from vi_entropy.inner.averaging import AVERAGING
from vi_entropy.inner.importance import ImportanceSampler
from vi_entropy.inner.mcmc import SAMPLERS, MCMCSampler, check_sampler_kwargs, make_kernel

#: Defaults of ``num_chains``, ``num_samples`` and ``num_warmup`` per sampler (``None``:
#: all others).  SGLD's are Entropy-SGD's, and what trains a network at the fewest
#: gradients: one chain of 20 steps per update, no warm-up (its step size comes from
#: the curvature; see ``docs/choosing.md``).
SAMPLER_DEFAULTS: dict[str | None, dict[str, int]] = {
    None: {"num_chains": 4, "num_samples": 50, "num_warmup": 100},
    "sgld": {"num_chains": 1, "num_samples": 20, "num_warmup": 0},
}


class LocalEntropy(TwoStepScheme):
    """Train a NumPyro model by local-entropy steps (moment matching of the tilted posterior).

    Each outer step draws from ``φ_k(y) ∝ exp(−f(y) − |y − x_k|²/(2τ))`` and moves the
    centre to the draws' mean, ``x_{k+1} = x_k − τ ∇F_τ(x_k)`` (García Trillos, Kaplan &
    Sanz-Alonso 2019).  It seeks wide minima: ``F_τ`` smooths ``e^{−f}`` over a τ-ball.

    Parameters
    ----------
    model : callable
        NumPyro model with continuous latent sites (constraints and plates allowed).
    tau : float or callable, default 1e-2
        Variance ``τ`` (not a standard deviation), or a schedule ``step -> τ``.
        A variance on the unconstrained scale; see :ref:`Choosing τ <choosing-tau>`.
    sampler : str, MCMCKernel or callable, default "nuts"
        ``"nuts"``, ``"hmc"``, ``"sa"`` (gradient-free), ``"sgld"`` (mini-batch
        gradients, Entropy-SGD's inner loop), ``"pcn"`` (gradient-free,
        :class:`~vi_entropy.PCN`: preconditioned Crank-Nicolson MH whose reference is
        ``N(x_k, τI)``, acceptance ``min(1, e^{f(y) − f(y')})``), ``"elliptical_slice"``
        (gradient-free, tuning-free, :class:`~vi_entropy.EllipticalSlice`) or
        ``"importance"`` (gradient-free, proposal ``N(x_k, τI)``); the gradient-free
        samplers for networks are ``"pcn"`` and ``"elliptical_slice"``, which use the
        tilted posterior's Gaussian factor and do not degrade with the dimension as
        SA and importance sampling do; or a kernel built on ``model`` (e.g.
        ``NUTS(model, max_tree_depth=6)``), or a factory ``model -> MCMCKernel``.
    num_chains : int, optional
        Vectorized chains (MCMC samplers; ignored by importance sampling).  Default 4;
        1 for ``"sgld"`` (see :data:`SAMPLER_DEFAULTS`).
    num_samples : int, optional
        Draws per chain and outer step (the SGLD inner steps; the importance
        proposals).  Default 50; 20 for ``"sgld"`` (Entropy-SGD's ``L``).
    num_warmup : int, optional
        Warm-up transitions run once, at the start of the first outer step, in the
        same compiled loop as its draws (adaptation of NUTS/HMC step size and mass
        matrix, of pCN's ``ρ``, of SGLD's step size when it is ``None``; burn-in for
        SA/elliptical slice); every outer step with ``readapt=True``.  Step 0's
        evaluation counts include them.
        Default 100; 0 for ``"sgld"`` with its default step size (nothing to adapt:
        the chain starts at the centre, where the tilted posterior has its mass).
    thinning : int, default 1
        Keep every ``thinning``-th transition.
    readapt : bool, default False
        Re-initialize and re-adapt the kernel at every outer step (costs ``num_warmup``
        transitions per step); by default adaptation happens once and chains continue
        from one outer step to the next.
    sampler_kwargs : dict, optional
        Options for a sampler given by name: NumPyro's ``NUTS``/``HMC`` arguments;
        ``SA``'s ``adapt_state_size`` (default ``min(2d, 64)``) and ``dense_mass``
        (default ``False``); :class:`~vi_entropy.inner.SGLD`'s ``step_size`` (default
        ``"curvature"``: ``step_scale / λ`` with ``λ`` the top Hessian eigenvalue of
        the tilted potential at the start, ``step_scale`` default 0.5; ``None``
        adapts it with a diagonal mass matrix during the warm-up, as NUTS adapts its
        own, for ordinary models where that samples more accurately), ``noise_scale``
        (default 1) and ``target_accept_prob`` of that adaptation (default 0.95);
        :class:`~vi_entropy.PCN`'s
        ``rho`` (initial ``ρ``, default 0.2), ``target_accept_prob`` (default 0.25),
        ``adapt_rho`` (during warm-up, default ``True``), ``rho_gain`` (keep adapting
        after warm-up, default 0), ``antithetic`` (mirrored pairs, default ``False``) and
        ``adapt_reference`` (a diagonal reference adapted between outer steps, default
        0: off); :class:`~vi_entropy.EllipticalSlice`'s
        ``max_shrinks`` (default 16); for importance sampling, ``batch_size`` (proposals
        evaluated at a time, default all).
    averaging : {"arithmetic", "exponential"}, default "arithmetic"
        How draws estimate the mean (see :func:`~vi_entropy.inner.averaging.moment_match`);
        ``"exponential"`` is Entropy-SGD's moving average ``μ ← ρμ + (1 − ρ)y``.
    ema_decay : float, default 0.75
        ``ρ`` of the exponential average.
    ess_threshold : float in (0, 1] or None, default 0.01
        Importance sampling: :meth:`run` warns (:class:`~vi_entropy.VIEntropyWarning`,
        once per run) when an outer step's effective sample size falls below
        ``max(ess_threshold · num_samples, min(2, num_samples / 2))``, i.e. when the step rests on a handful of
        proposals; ``None`` turns the warning off.
    devices : None, int, sequence of devices or Mesh, default None
        Split the chains (or the importance proposals) over these devices (default: all devices
        when there are several); see ``docs/scaling.md``.
    shard_data : bool, default False
        Split the rows of the model's data arguments over the devices instead.
    beta, alpha, outer_optim, init_strategy, progress_bar, max_rejections
        See :class:`~vi_entropy.driver.TwoStepScheme`.

    Notes
    -----
    Faults (see :mod:`vi_entropy.faults`): an outer step is rejected, and the centre and
    chains stay, when a draw is not finite, a chain's state (potential energy, gradient,
    SA population energies) is not finite, a chain is stuck (every transition diverged
    and it never moved: NUTS/HMC/SA), or every importance weight is zero.  Proposals with a non-finite
    potential get weight zero (``info["num_zero_weights"]``); NUTS/HMC reject
    transitions into such points themselves (counted in ``info["num_divergent"]``);
    pCN rejects them, elliptical slice shrinks past them.

    Counts: ``info["num_potential_evals"]`` and ``info["num_grad_evals"]`` are the
    evaluations each chain needs.  pCN makes ``chains × (num_samples × thinning + 1)``
    per step (the ``+ 1`` refreshes the potential for the new centre and batch) and
    reports ``info["acceptance_rate"]`` and ``info["rho"]``; elliptical slice makes
    ``1 +`` shrinks per transition, reports ``info["num_potential_evals_executed"]``
    (vectorized chains run the shrinking loop in lockstep, so every chain evaluates as
    often as the slowest) and ``info["num_slice_capped"]`` (transitions that hit
    ``max_shrinks`` and stayed).

    Mini-batches: for a model with ``numpyro.plate(..., subsample_size=B)``, SGLD draws a
    new batch at every inner step; NUTS, HMC, SA, pCN, elliptical slice and importance
    sampling need a
    deterministic potential, so they use one batch per outer step, fixed for all chains
    and draws of that step (a new one at the next step).

    Example
    -------
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> def model(y=None):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", 20):
    ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> y = 3.0 + jax.random.normal(jax.random.PRNGKey(1), (20,))
    >>> le = LocalEntropy(model, tau=0.01, sampler="importance", num_samples=500,
    ...                   progress_bar=False)
    >>> result = le.run(jax.random.PRNGKey(0), 20, y, init_params={"mu": 2.5})
    >>> bool(abs(result.params["mu"] - y.mean()) < 0.2)
    True
    >>> bool(result.info["importance_ess"].min() > 50)  # the weights did not degenerate
    True
    """

    def __init__(
        self,
        model: Callable,
        tau: float | Callable[[Any], Any] = 1e-2,
        *,
        sampler: str | MCMCKernel | Callable[[Callable], MCMCKernel] = "nuts",
        num_chains: int | None = None,
        num_samples: int | None = None,
        num_warmup: int | None = None,
        thinning: int = 1,
        readapt: bool = False,
        sampler_kwargs: Mapping[str, Any] | None = None,
        averaging: str = "arithmetic",
        ema_decay: float = 0.75,
        ess_threshold: float | None = 0.01,
        **driver_kwargs: Any,
    ) -> None:
        check.keywords(type(self), driver_kwargs)
        super().__init__(model, tau, **driver_kwargs)
        if isinstance(sampler, str):
            if sampler.lower() not in SAMPLERS:
                raise ValueError(
                    f"sampler: unknown name {sampler!r}; expected one of {SAMPLERS}, an "
                    "MCMCKernel or a factory model -> MCMCKernel."
                )
            sampler = sampler.lower()
            sampler_kwargs = check_sampler_kwargs(sampler, sampler_kwargs)
        elif not (isinstance(sampler, MCMCKernel) or callable(sampler)):
            raise TypeError(
                f"sampler: expected one of {SAMPLERS}, an MCMCKernel or a factory "
                f"model -> MCMCKernel, got {type(sampler).__name__} {sampler!r}."
            )
        elif sampler_kwargs:
            raise ValueError(
                "sampler_kwargs: only used with a sampler given by name; give the options "
                f"to the kernel itself, got {sorted(sampler_kwargs)}."
            )
        self.sampler = sampler
        defaults = _sampler_defaults(sampler, sampler_kwargs)
        num_chains = defaults["num_chains"] if num_chains is None else num_chains
        num_samples = defaults["num_samples"] if num_samples is None else num_samples
        num_warmup = defaults["num_warmup"] if num_warmup is None else num_warmup
        self.num_chains = check.count("num_chains", num_chains)
        self.num_samples = check.count("num_samples", num_samples)
        self.num_warmup = check.count("num_warmup", num_warmup, minimum=0)
        self.thinning = check.count("thinning", thinning)
        self.readapt = check.flag("readapt", readapt)
        self.sampler_kwargs = dict(sampler_kwargs or {})
        self.averaging = check.choice("averaging", averaging, AVERAGING)
        self.ema_decay = check.unit_interval("ema_decay", ema_decay)
        self.ess_threshold = (
            None if ess_threshold is None else check.unit_interval("ess_threshold", ess_threshold)
        )

    @classmethod
    def entropy_sgd(
        cls,
        model: Callable,
        tau: float,
        *,
        learning_rate: float | None = None,
        step_size: float | None = None,
        num_steps: int = 20,
        noise_scale: float = 0.01,
        ema_decay: float = 0.75,
        scoping: float = 1e-3,
        momentum: float = 0.9,
        **kwargs: Any,
    ) -> LocalEntropy:
        """Entropy-SGD as its authors run it (Chaudhari et al., ICLR 2017), in one line.

        ``num_steps`` SGLD steps on the tilted posterior with small thermal noise, an
        exponential average of them (``μ ← αμ + (1 − α)y``, ``α = ema_decay``), an outer
        step along ``(x_k − μ)/τ`` by SGD with Nesterov momentum, and γ-scoping as the τ
        schedule ``τ_k = τ (1 + scoping)^(−k)`` (γ = 1/τ grows by ``1 + scoping`` a step).

        Their parameters on the mean loss ``f̄ = f/N`` map to ours on the summed loss
        ``f``: coupling ``γ = 1/(Nτ)``, inner step ``η' = N · step_size``, outer learning
        rate ``η = N · learning_rate``; their thermal noise is ``noise_scale``'s role
        (1 would be the tilted posterior itself).

        Parameters
        ----------
        model : callable
            The NumPyro model.
        tau : float
            ``τ_0``, the variance at step 0.
        learning_rate : float, optional
            Of the outer SGD; default ``0.1 τ``: with momentum 0.9, about a full step to
            ``μ`` per update once the momentum builds up.
        step_size : float, optional
            Of the SGLD steps on ``f``; default: ``0.5 / λ``, ``λ`` the top Hessian
            eigenvalue of the tilted potential at the start (SGLD's ``"curvature"``).
        num_steps, noise_scale, ema_decay, scoping, momentum
            ``L = 20``, 0.01, ``α = 0.75``, ``γ_1 = 10⁻³``, 0.9: the authors' values.
        **kwargs
            Any other option of :class:`LocalEntropy` (``num_warmup``, ``progress_bar``, …).

        Returns
        -------
        LocalEntropy

        Example
        -------
        >>> import numpyro, numpyro.distributions as dist
        >>> def model(y=None):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", 20):
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> le = LocalEntropy.entropy_sgd(model, 1e-2, step_size=1e-3, progress_bar=False)
        >>> le.num_samples, le.averaging, le.sampler_kwargs["noise_scale"]
        (20, 'exponential', 0.01)
        """
        tau = check.positive_float("tau", tau)
        lr = (
            0.1 * tau
            if learning_rate is None
            else check.positive_float("learning_rate", learning_rate)
        )
        sampler_kwargs = {"noise_scale": noise_scale}
        if step_size is not None:
            sampler_kwargs["step_size"] = check.positive_float("step_size", step_size)
        schedule = optax.exponential_decay(
            tau,
            transition_steps=1,
            decay_rate=1.0 / (1.0 + check.positive_float("scoping", scoping, allow_zero=True)),
        )
        return cls(
            model,
            schedule,
            sampler="sgld",
            num_chains=kwargs.pop("num_chains", 1),
            num_samples=check.count("num_steps", num_steps),
            sampler_kwargs=sampler_kwargs,
            averaging="exponential",
            ema_decay=ema_decay,
            outer_optim=optax.sgd(lr, momentum=momentum, nesterov=True),
            **kwargs,
        )

    def _make_inner(self) -> MCMCSampler | ImportanceSampler:
        if self.sampler == "importance":
            batch = self.sampler_kwargs.get("batch_size")
            return ImportanceSampler(
                self.tilted, self.num_samples, batch, self.batch_sharding, self.ess_threshold
            )
        kernel = make_kernel(
            self.sampler,
            self.model,
            self.tilted.tilted_model,
            self.tilted.dim,
            self.sampler_kwargs,
            self.tau0,
        )
        return MCMCSampler(
            kernel,
            self.tilted,
            self.num_chains,
            self.num_samples,
            self.num_warmup,
            self.thinning,
            self.readapt,
            self.batch_sharding,
            self.averaging,
            self.ema_decay,
        )

    def _stall_advice(self, info: Mapping[str, Any]) -> list[str]:
        advice = super()._stall_advice(info)
        if self.sampler == "sgld" and "step_size" in info:
            step = float(np.nanmean(np.asarray(info["step_size"])))
            advice.insert(
                1,
                f"a larger SGLD step (now about {step:.2g}: "
                "sampler_kwargs={'step_scale': ...} or {'step_size': ...})",
            )
        return advice

    def _checkpoint_structure(self) -> dict[str, Any]:
        sampler = self.sampler if isinstance(self.sampler, str) else jsonable(self.sampler)
        if isinstance(self.sampler, MCMCKernel):
            sampler = type(self.sampler).__name__
        return {
            **super()._checkpoint_structure(),
            "sampler": sampler,
            "num_chains": self.num_chains,
        }

    def _checkpoint_options(self) -> dict[str, Any]:
        return {
            **super()._checkpoint_options(),
            "num_samples": self.num_samples,
            "num_warmup": self.num_warmup,
            "thinning": self.thinning,
            "readapt": self.readapt,
            "sampler_kwargs": jsonable(self.sampler_kwargs),
            "averaging": self.averaging,
            "ema_decay": self.ema_decay,
        }


def _sampler_defaults(sampler: Any, sampler_kwargs: Mapping[str, Any] | None) -> dict[str, int]:
    """:data:`SAMPLER_DEFAULTS` for ``sampler``; SGLD asked to adapt its step size
    (``step_size=None``) gets the others' warm-up, in which it adapts."""
    name = sampler if isinstance(sampler, str) else None
    defaults = dict(SAMPLER_DEFAULTS.get(name, SAMPLER_DEFAULTS[None]))
    if name == "sgld" and "step_size" in (sampler_kwargs or {}):
        if (sampler_kwargs or {})["step_size"] is None:
            defaults["num_warmup"] = SAMPLER_DEFAULTS[None]["num_warmup"]
    return defaults
