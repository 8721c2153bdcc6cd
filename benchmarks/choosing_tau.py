"""Choosing τ: how far the centre gets in 30 outer steps, for τ against the posterior's variance.

On a Gaussian posterior with variance ``σ²`` along a direction, the tilted posterior at
``x_k`` has precision ``1/σ² + 1/τ`` and mean ``(τ μ + σ² x_k)/(σ² + τ)``, so an outer step
of local entropy (that mean) or of heat regularization (the mean of the ``N(m, τI)``
closest to it in reverse KL: the same point, for a Gaussian) contracts the distance to
the posterior mean by ``σ²/(σ² + τ)``.  This script measures it on two models written as
NumPyro's examples write them:

* ``regression``: ``y ~ Normal(α + X β, σ)``, 5 coefficients, 100 rows, a ``HalfNormal``
  noise scale (7 unconstrained coordinates, ``log σ`` among them);
* ``local_level``: a 50-step latent path with a ``GaussianRandomWalk`` prior and a
  ``HalfNormal`` scale, observed with noise 0.5 (51 coordinates).

For each, NumPyro's NUTS (``MCMC``, one chain) gives the posterior mean ``μ``, sds and
covariance ``Σ`` of the unconstrained coordinates.  ``LocalEntropy(model, τ)`` with its
default inner sampler, NUTS (4 chains × 50 draws a step, so that a step is the tilted
mean up to Monte Carlo error: what is measured is τ, not a short inner fit), then runs 30
outer steps from the prior's centre (coefficients and path at 0, scales at 1) for
``τ = c · median_i σ_i²``, ``c`` in :data:`RATIOS`, and for the default ``τ = 1e-2``.
Recorded at every step: the distance of the centre to ``μ`` in posterior sds (RMS and
max over the coordinates) and the distance that the Gaussian ``N(μ, Σ)`` predicts,
``|(Σ(Σ + τI)⁻¹)^k (x_0 − μ)|`` in the same units; whether ``run`` warned that the run
ended still moving; the scale site at every step; and, from a second start ``μ ± 3 sd``
(signs alternating over the coordinates), closer to the mode, the first 10 steps against
the prediction.

    python benchmarks/choosing_tau.py          # 2 models × 5 τ × 30 steps (~2 CPU minutes)
    python benchmarks/choosing_tau.py --quick  # 1 model, 1 τ, 6 steps, short chains (seconds)
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from _common import parser, print_table, write_json

#: τ over the median posterior variance of the unconstrained coordinates.
RATIOS = (0.01, 0.1, 1.0, 10.0)
#: The package's default τ, run on top of the grid.
DEFAULT_TAU = 1e-2
#: The near start: this many posterior sds from the mean in every coordinate, and the
#: outer steps run from it.
NEAR_SDS = 3.0
NEAR_STEPS = 10


#: Each model's scale site: its value at the end of a run is compared with NUTS's.
SCALE_SITES = {"regression": "sigma", "local_level": "scale"}


def problems() -> dict[str, tuple]:
    """The two models, their data and the start: ``name -> (model, args, init_params)``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def regression(X, y=None):
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(alpha + X @ beta, sigma), obs=y)

    def local_level(y):
        scale = numpyro.sample("scale", dist.HalfNormal(1.0))
        path = numpyro.sample("path", dist.GaussianRandomWalk(scale, num_steps=y.shape[0]))
        with numpyro.plate("time", y.shape[0]):
            numpyro.sample("y", dist.Normal(path, 0.5), obs=y)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5))
    y = 1.0 + X @ np.array([1.0, -0.5, 0.3, 0.0, 2.0]) + rng.normal(size=100)
    walk = np.cumsum(0.3 * rng.normal(size=50)) + 0.5 * rng.normal(size=50)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {
        "regression": (
            regression,
            (f32(X), f32(y)),
            {"alpha": f32(0.0), "beta": f32(np.zeros(5)), "sigma": f32(1.0)},
        ),
        "local_level": (local_level, (f32(walk),), {"scale": f32(1.0), "path": f32(np.zeros(50))}),
    }


def flat(model, args, params) -> Any:
    """Constrained ``params`` (by site) as the flat unconstrained vector; dicts ravel in
    sorted key order, as the scheme's centre does."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    return ravel_pytree(unconstrain_fn(model, args, {}, params))[0]


def posterior(model, args, params0, key, num_warmup: int, num_samples: int) -> dict[str, Any]:
    """NUTS draws of the unconstrained coordinates: mean, sds, covariance, and the map
    from a flat vector back to constrained values."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import constrain_fn, unconstrain_fn

    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(key, *args)
    samples = mcmc.get_samples()
    draws = np.asarray(jax.vmap(lambda p: flat(model, args, p))(samples))
    _, unravel = ravel_pytree(unconstrain_fn(model, args, {}, params0))
    cov = np.cov(draws.T)
    return {
        "mean": draws.mean(0),
        "sd": draws.std(0),
        "cov": cov,
        "constrain": lambda u: constrain_fn(model, args, {}, unravel(u)),
        "sites": {k: int(np.size(v)) for k, v in sorted(params0.items())},
        "constrained_mean": {k: np.asarray(v).mean(0) for k, v in samples.items()},
    }


def distances(centres: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> dict[str, list[float]]:
    """RMS and max over the coordinates of ``|x − μ| / sd``, per row of ``centres``."""
    z = np.abs(np.atleast_2d(centres) - mean) / sd
    return {"rms": rounded(np.sqrt(np.mean(z**2, 1))), "max": rounded(z.max(1))}


def rounded(x: Any) -> list[float]:
    """Four significant digits: the JSON holds every step of every run."""
    return [float(f"{v:.4g}") for v in np.ravel(x)]


def predicted(x0: np.ndarray, post: dict[str, Any], tau: float, steps: int) -> dict:
    """The distances of the Gaussian ``N(μ, Σ)``'s steps ``x_k − μ = (Σ(Σ + τI)⁻¹)^k (x_0 − μ)``:
    along an eigenvector of ``Σ`` with eigenvalue ``λ`` the factor is ``λ/(λ + τ)``."""
    lam, vec = np.linalg.eigh(post["cov"])
    e0 = vec.T @ (x0 - post["mean"])
    k = np.arange(steps + 1)[:, None]
    path = post["mean"] + ((lam / (lam + tau)) ** k * e0) @ vec.T
    return distances(path, post["mean"], post["sd"])


def run_le(scheme, key, steps: int, args: tuple, init_params: dict) -> tuple[Any, np.ndarray, bool]:
    """``steps`` outer steps of ``scheme.run``: its result, the centre at every step (the
    tracked trace), and whether it warned that the run ended still moving."""
    from vi_entropy import VIEntropyWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", VIEntropyWarning)
        # Tracking every step records the centre (few draws: only the centre is read);
        # the still-moving check reads f from the same trace.
        result = scheme.run(
            key, steps, *args, init_params=init_params, track_every=1, track_samples=64
        )
    centres = np.asarray(result.trace["centre"])
    said = [str(w.message) for w in seen if issubclass(w.category, VIEntropyWarning)]
    return result, centres, any("ended still moving" in m for m in said)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=None, help="outer steps (30)")
    a = p.parse_args(argv)

    import jax

    from vi_entropy import LocalEntropy

    steps = a.steps or (6 if a.quick else 30)
    ratios = (1.0,) if a.quick else RATIOS
    nuts = (100, 200) if a.quick else (500, 1000)
    inner = {"num_chains": 2, "num_samples": 20, "num_warmup": 50} if a.quick else {}
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    chosen = list(problems().items())[: 1 if a.quick else None]
    for name, (model, args, init) in chosen:
        start = time.process_time()
        scale = SCALE_SITES[name]
        post = posterior(model, args, init, jax.random.PRNGKey(0), *nuts)
        var = post["sd"] ** 2
        lam = np.linalg.eigvalsh(post["cov"])
        x0 = np.asarray(flat(model, args, init))
        signs = np.where(np.arange(x0.size) % 2 == 0, 1.0, -1.0)
        near = post["mean"] + NEAR_SDS * post["sd"] * signs
        near_params = post["constrain"](near)
        median_var = float(np.median(var))
        taus = [(c, c * median_var) for c in ratios]
        if not a.quick:
            taus.append((DEFAULT_TAU / median_var, DEFAULT_TAU))
        models[name] = {
            "sites": post["sites"],
            "dim": int(x0.size),
            "posterior_var": rounded(var),
            "median_var": median_var,
            "max_var": float(var.max()),
            "top_eigenvalue": float(lam[-1]),
            "scale_site": scale,
            "scale_nuts_mean": float(post["constrained_mean"][scale]),
            "start_distance": distances(x0, post["mean"], post["sd"]),
            "nuts_cpu_s": round(time.process_time() - start, 1),
            "runs": [],
        }
        for c, tau in sorted(taus):
            start = time.process_time()
            scheme = LocalEntropy(model, tau, progress_bar=False, **inner)
            result, centres, warned = run_le(scheme, jax.random.PRNGKey(1), steps, args, init)
            _, near_centres, _ = run_le(
                scheme, jax.random.PRNGKey(2), min(NEAR_STEPS, steps), args, near_params
            )
            measured = distances(centres, post["mean"], post["sd"])
            gauss = predicted(x0, post, tau, steps)
            near_measured = distances(near_centres, post["mean"], post["sd"])
            near_gauss = predicted(near, post, tau, len(near_centres) - 1)
            run = {
                "tau": tau,
                "tau_over_median_var": c,
                "default_tau": tau == DEFAULT_TAU,
                "factor_median": median_var / (median_var + tau),
                "factor_slowest": float(lam[-1] / (lam[-1] + tau)),
                "measured": measured,
                "predicted": gauss,
                "near_measured": near_measured,
                "near_predicted": near_gauss,
                "final_z": rounded((centres[-1] - post["mean"]) / post["sd"]),
                "scale": float(result.params[scale]),
                "scale_path": rounded([post["constrain"](u)[scale] for u in centres]),
                "still_moving_warning": warned,
                "cpu_s": round(time.process_time() - start, 1),
            }
            models[name]["runs"].append(run)
            rows.append(
                {
                    "model": name,
                    "tau": tau,
                    "tau/var": c,
                    "factor": run["factor_median"],
                    "rms sd, start": measured["rms"][0],
                    f"rms sd, step {steps}": measured["rms"][-1],
                    f"max sd, step {steps}": measured["max"][-1],
                    f"predicted rms, step {steps}": gauss["rms"][-1],
                    "near: rms step 3": near_measured["rms"][min(3, len(near_centres) - 1)],
                    "predicted": near_gauss["rms"][min(3, len(near_centres) - 1)],
                    "scale site": scale,
                    "scale": run["scale"],
                    "scale, NUTS mean": models[name]["scale_nuts_mean"],
                    "warned still moving": run["still_moving_warning"],
                    "cpu s": run["cpu_s"],
                }
            )
            print(rows[-1], flush=True)
    print_table(rows)
    write_json(
        "choosing_tau",
        {
            "steps": steps,
            "ratios": list(ratios),
            "default_tau": DEFAULT_TAU,
            "near_sds": NEAR_SDS,
            "scheme": "LocalEntropy(model, tau), sampler='nuts'",
            "inner": inner or "the defaults: 4 chains x 50 draws a step, 100 warm-up",
            "nuts_reference": {"num_warmup": nuts[0], "num_samples": nuts[1]},
            "rows": rows,
            "models": models,
        },
        a.out,
        a.quick,
    )


if __name__ == "__main__":
    main()
