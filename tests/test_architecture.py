"""The seams of the package: a scheme of one's own from a shell and an inner step; a
sampler by name from its kernel and one registry entry; no import circle among the
package's modules; no function over 80 lines of code."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random

from tests._zoo import ZOO
from vi_entropy import PCN, HeatRegularization, LocalEntropy, TwoStepScheme, tilt_model
from vi_entropy.checkpoint import read_meta
from vi_entropy.loop import Observers
from vi_entropy.observers import DrawKeeper, FaultGuard
from vi_entropy.types import Context, InnerStep

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vi_entropy"
SIGMA, TAU, NUM_PAIRS = 2.0, 0.5, 4


class ExplicitHeatStep:
    """A third scheme's inner step: ``m = x − τ ĝ``, ``ĝ`` the reparameterized estimate
    of ``∇f_τ(x)`` from antithetic pairs ``x ± √τ ξ`` (exact for a quadratic ``f``)."""

    def __init__(self, tilted):
        self.tilted = tilted

    def init(self, rng_key, centre, tau, ctx: Context):
        return jnp.zeros(())  # no inner state worth the name

    def step(self, state, rng_key, centre, tau, ctx: Context):
        xi = random.normal(rng_key, (NUM_PAIRS, centre.shape[0]), centre.dtype)
        xi = jnp.concatenate([xi, -xi])

        def grad(y):
            return jax.grad(self.tilted.potential)(y, ctx.args, ctx.kwargs, None)

        g = jnp.mean(jax.vmap(grad)(centre + jnp.sqrt(tau) * xi), axis=0)
        info = {"num_grad_evals": jnp.asarray(2 * NUM_PAIRS), "grad_norm": jnp.linalg.norm(g)}
        return centre - tau * g, state, info, None


class ExplicitHeat(TwoStepScheme):
    """The whole scheme: its inner step and the loss it tracks."""

    regularized_loss_name = "heat_loss"

    def _make_inner(self):
        return ExplicitHeatStep(self.tilted)


def gaussian():
    numpyro.sample("x", dist.Normal(0.0, SIGMA))


def test_a_scheme_of_ones_own_is_a_shell_and_an_inner_step(tmp_path):
    scheme = ExplicitHeat(gaussian, TAU, progress_bar=False)
    result = scheme.run(
        random.PRNGKey(0), 4, init_params={"x": 3.0}, checkpoint=tmp_path / "run.ckpt"
    )
    assert isinstance(scheme.inner_step, InnerStep)
    # f = x²/(2σ²): ∇f_τ(x) = x/σ², so x_k = x_0 (1 − τ/σ²)^k.
    expected = 3.0 * (1 - TAU / SIGMA**2) ** np.arange(1, 5)
    np.testing.assert_allclose(result.trace["centre"][:, 0], [3.0, expected[-1]], rtol=1e-5)
    np.testing.assert_allclose(result.params["x"], expected[-1], rtol=1e-5)
    assert {"displacement", "fault", "grad_norm", "rejected", "tau"} <= set(result.info)
    assert result.trace["step"].tolist() == [0, 4]
    resumed = scheme.run(None, 4, resume=tmp_path / "run.ckpt")
    np.testing.assert_array_equal(resumed.state.centre, result.state.centre)
    # update with run's observers: the same iterates, the same result
    obs = Observers([FaultGuard()])
    state = scheme.init(random.PRNGKey(0), init_params={"x": 3.0})
    for _ in range(4):
        state, _ = scheme.update(state, observers=obs)
    by_update = obs.close(state)
    np.testing.assert_array_equal(by_update.state.centre, result.state.centre)
    np.testing.assert_array_equal(by_update.info["displacement"], result.info["displacement"])


class FixedPCN(PCN):
    """A new kernel, as a module of ``vi_entropy/inner/`` would hold it: pCN at a fixed
    ``ρ``, its one option."""

    def __init__(
        self, model=None, potential_fn=None, fixed_rho=0.5, reference_loc=None, reference_scale=None
    ):
        super().__init__(
            model,
            potential_fn,
            fixed_rho,
            adapt_rho=False,
            reference_loc=reference_loc,
            reference_scale=reference_scale,
        )


def _fraction(name, value):
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: expected a float in (0, 1], got {value!r}.")


def test_a_sampler_by_name_is_its_kernel_and_one_registry_entry(monkeypatch, tmp_path):
    """Every sampler name resolves through one registry, ``KERNELS``; a kernel entered
    there runs by name with no other change: ``make_kernel``, the option checks,
    ``LocalEntropy`` and its checkpoints read the table."""
    from vi_entropy import local_entropy
    from vi_entropy.inner import mcmc

    assert mcmc.SAMPLERS == (*mcmc.KERNELS, "importance")
    assert local_entropy.SAMPLERS is mcmc.SAMPLERS
    for name, entry in mcmc.KERNELS.items():
        kernel = mcmc.make_kernel(name, gaussian, tilt_model(gaussian), 1, {}, TAU)
        assert type(kernel) is entry.kernel, name

    entry = mcmc.KernelEntry(FixedPCN, lambda dim: {"fixed_rho": 0.3}, {"fixed_rho": _fraction})
    monkeypatch.setitem(mcmc.KERNELS, "fixed_pcn", entry)
    # SAMPLERS is made from KERNELS at import: an entry in the file is in it from the start.
    for module in (mcmc, local_entropy):
        monkeypatch.setattr(module, "SAMPLERS", (*mcmc.KERNELS, "importance"))
    with pytest.raises(ValueError, match=r"sampler='fixed_pcn' takes only \['fixed_rho'\]"):
        LocalEntropy(gaussian, TAU, sampler="fixed_pcn", sampler_kwargs={"rho": 0.3})
    with pytest.raises(ValueError, match=r"sampler_kwargs\['fixed_rho'\]: expected a float"):
        LocalEntropy(gaussian, TAU, sampler="fixed_pcn", sampler_kwargs={"fixed_rho": 2.0})
    scheme = LocalEntropy(
        gaussian,
        TAU,
        sampler="fixed_pcn",
        num_chains=2,
        num_samples=8,
        num_warmup=4,
        progress_bar=False,
    )
    result = scheme.run(
        random.PRNGKey(0), 2, init_params={"x": 1.0}, checkpoint=tmp_path / "run.ckpt"
    )
    kernel = scheme.inner_step.kernel
    assert type(kernel) is FixedPCN and kernel.rho == 0.3 and not kernel.adapt_rho
    assert np.all(np.isfinite(result.trace["centre"]))
    assert read_meta(tmp_path / "run.ckpt")["structure"]["sampler"] == "fixed_pcn"


def _imports():
    """Module -> package modules it imports at module level."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps = set()
        for node in ast.parse(
            path.read_text()
        ).body:  # module level only: lazy imports are not circles
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("vi_entropy")
            ):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("vi_entropy"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_circle_among_the_modules():
    graph = _imports()
    done, path = set(), []

    def visit(module):
        if module in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            if not module.startswith(dep + "."):  # a package's __init__ importing a child
                visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "vi_entropy.cli" not in {
        d for m, deps in graph.items() if m.startswith("vi_entropy.experiment") for d in deps
    }


def test_no_function_is_over_80_lines_of_code():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    lines -= first.end_lineno - first.lineno + 1  # the docstring
                if lines > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def _numpyro_private_uses(tree: ast.AST) -> list[int]:
    """Lines that reach a private name through a NumPyro import (``numpyro.x._y``)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {
                a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("numpyro")
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numpyro"):
            bound |= {a.asname or a.name for a in node.names}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numpyro"):
            if any(a.name.startswith("_") for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if not node.attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in bound:
                    lines.append(node.lineno)
    return lines


# NumPyro's private attributes of the SA kernel that the SA subclass used to set directly.
_SA_PRIVATE = {"_init_fn", "_sample_fn", "_postprocess_fn", "_potential_fn_gen", "_model"}


def test_numpyro_internals_are_touched_in_one_module():
    """Only ``_numpyro_compat`` reaches into NumPyro's private names."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_numpyro_compat.py":
            continue
        tree = ast.parse(path.read_text())
        found += [f"{path.name}:{line}" for line in _numpyro_private_uses(tree)]
        if path.name == "sa.py":
            found += [
                f"{path.name}:{node.lineno} .{node.attr}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr in _SA_PRIVATE
            ]
    assert not found, found
    # the checker itself finds such a use
    assert _numpyro_private_uses(ast.parse("import numpyro\nnumpyro.optim._NumPyroOptim")) == [2]


def test_compat_says_which_internal_is_missing():
    import numpyro.optim
    import optax

    from vi_entropy import _numpyro_compat as compat
    from vi_entropy.inner.sa import SA

    assert compat.is_numpyro_optimizer(numpyro.optim.Adam(1e-3))
    assert not compat.is_numpyro_optimizer(optax.adam(1e-3))
    kernel = numpyro.infer.SA(potential_fn=lambda z: 0.0)
    copied = SA.from_numpyro(kernel)
    assert type(copied) is SA and copied.init_scale is None
    del kernel._potential_fn_gen  # as if a NumPyro release had renamed it
    with pytest.raises(RuntimeError, match=r"SA\._potential_fn_gen.*numpyro 0\.22"):
        SA.from_numpyro(kernel)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LocalEntropy(
            m, 1e-3, sampler="pcn", num_chains=2, num_samples=8, num_warmup=8, progress_bar=False
        ),
        lambda m: HeatRegularization(
            m, 1e-3, num_inner_steps=5, num_particles=2, progress_bar=False
        ),
    ],
    ids=["le-pcn", "hr-svi"],
)
def test_update_with_runs_observers_is_run_on_a_hierarchical_model(make):
    """Plates, a batch-dimension latent, constrained scales, a latent named ``tau``."""
    case = ZOO["hierarchical"]
    scheme = make(case.model)
    result = scheme.run(random.PRNGKey(0), 3, *case.args, **case.kwargs)
    obs = Observers([DrawKeeper("last"), FaultGuard()])
    state = scheme.init(random.PRNGKey(0), *case.args, **case.kwargs)
    for _ in range(3):
        state, _ = scheme.update(state, *case.args, observers=obs, **case.kwargs)
    by_update = obs.close()
    np.testing.assert_array_equal(by_update.state.centre, result.state.centre)
    for key in ("displacement", "fault", "num_potential_evals", "tau"):
        np.testing.assert_array_equal(by_update.info[key], result.info[key])
    assert sorted(by_update.draws) == sorted(result.draws)
    params = by_update.params
    assert {k: tuple(np.shape(v)) for k, v in params.items()} == case.latent
    assert float(params["tau"]) > 0 and float(params["sigma"]) > 0
