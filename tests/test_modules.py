"""Neural networks as NumPyro's examples build them (``numpyro.contrib.module``).

``random_flax_module``, ``random_nnx_module`` and ``random_eqx_module`` put a prior on a
network's weights and always add a ``numpyro.param`` site (``"nn$params"``) whose value
the sampled weights replace.  Such a site is held at its initial value, as NumPyro's
MCMC holds it: the networks train under both schemes (every sampler), ``Predictive``
predicts with the result, and nothing warns.  A param or mutable site that does enter
the density is held too, with a warning naming it.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import linen, nnx
from jax import random
from numpyro.contrib.module import random_eqx_module, random_flax_module, random_nnx_module
from numpyro.infer import Predictive

from vi_entropy import HeatRegularization, LocalEntropy, VIEntropyWarning, to_inference_data

try:  # in the `dev` extra; the Equinox network is skipped without it
    import equinox as eqx
except ImportError:  # pragma: no cover
    eqx = None

# The module's runs are shared by its tests (made once, on one worker).
pytestmark = pytest.mark.xdist_group("modules")

HIDDEN = 4
NUM_STEPS = 10
WEIGHTS = {  # the latent sites of each network: the sampled weights
    "flax": {"nn/Dense_0.kernel", "nn/Dense_0.bias", "nn/Dense_1.kernel", "nn/Dense_1.bias"},
    "nnx": {"nn/hidden.kernel", "nn/hidden.bias", "nn/out.kernel", "nn/out.bias"},
    "eqx": {"nn/layers[0].weight", "nn/layers[0].bias", "nn/layers[1].weight", "nn/layers[1].bias"},
}  # fmt: skip


def classification_data(n=64, seed=0):
    """Two features, labels on either side of a line: a tiny net separates them."""
    x = random.normal(random.PRNGKey(seed), (n, 2))
    return x, (x[:, 0] + x[:, 1] > 0).astype(jnp.float32)


def bernoulli_likelihood(logits, y):
    logits = numpyro.deterministic("logits", logits)
    with numpyro.plate("data", logits.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


# -- the networks, as NumPyro's documentation writes them -----------------------------------
class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(1)(jnp.tanh(linen.Dense(HIDDEN)(x))).squeeze(-1)


def flax_model(x, y=None):
    net = random_flax_module("nn", LinenMLP(), dist.Normal(0.0, 1.0), input_shape=(1, 2))
    bernoulli_likelihood(net(x), y)


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(2, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x))).squeeze(-1)


NNX_NET = NNXMLP(nnx.Rngs(0))  # eager initialization, outside the model


def nnx_model(x, y=None):
    net = random_nnx_module("nn", NNX_NET, dist.Normal(0.0, 1.0))
    bernoulli_likelihood(net(x), y)


EQX_NET = None if eqx is None else eqx.nn.MLP(2, "scalar", HIDDEN, 1, jnp.tanh, key=random.PRNGKey(0))  # fmt: skip


def eqx_model(x, y=None):
    net = random_eqx_module("nn", EQX_NET, dist.Normal(0.0, 1.0))
    bernoulli_likelihood(jax.vmap(net)(x), y)


MODELS = {"flax": flax_model, "nnx": nnx_model, "eqx": eqx_model}


def accuracy(logits, y):
    return float(jnp.mean((logits > 0) == (y > 0.5)))


def point_logits(model, params, x):
    """The logits at ``params`` (the result's centre), by ``Predictive``."""
    samples = jax.tree.map(lambda v: v[None], params)
    return Predictive(model, posterior_samples=samples, return_sites=["logits"])(
        random.PRNGKey(2), x
    )["logits"][0]


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request):
    """Each network trained by LE (SGLD, as a network is) and by HR (SVI)."""
    if request.param == "eqx" and eqx is None:
        pytest.skip("equinox is not installed (it is in the `dev` extra)")
    model = MODELS[request.param]
    x, y = classification_data()
    schemes = {
        "le": LocalEntropy(model, 0.05, sampler="sgld", progress_bar=False),
        "hr": HeatRegularization(
            model, 0.05, num_inner_steps=20, num_particles=2, progress_bar=False
        ),
    }
    # Untracked: a net's e^-f varies too much over N(x_k, τI) for a tracked F_τ this small.
    starts = {k: s.init(random.PRNGKey(1), x, y) for k, s in schemes.items()}
    with warnings.catch_warnings():
        # Short runs on purpose: that they trained is tested here, not that they converged.
        warnings.filterwarnings("ignore", "[A-Za-z]+: the run ended still moving", VIEntropyWarning)
        results = {k: s.run(None, NUM_STEPS, x, y, init_state=starts[k], track_every=0) for k, s in schemes.items()}  # fmt: skip
    return request.param, model, (x, y), schemes, starts, results


def cross_entropy(logits, y):
    """Mean binary cross-entropy: log 2 = 0.69 at chance."""
    return float(jnp.mean(jnp.logaddexp(0.0, logits) - y * logits))


def test_a_network_trains_under_both_schemes(trained):
    name, model, (x, y), schemes, starts, results = trained
    for key, result in results.items():
        assert set(result.params) == WEIGHTS[name], key
        assert not schemes[key].tilted.held_in_density  # its weights replace nn$params
        before = point_logits(model, schemes[key].get_params(starts[key]), x)
        after = point_logits(model, result.params, x)
        # From chance (about 0.69 and 50 %) to a fit: about 0.15 and 98 % here.
        assert cross_entropy(after, y) < min(0.35, cross_entropy(before, y) / 2), key
        assert accuracy(before, y) < 0.7 and accuracy(after, y) >= 0.9, key


def test_predictive_predicts_with_the_fitted_guide(trained):
    _, model, (x, y), schemes, _, results = trained
    for key, scheme in schemes.items():
        state = results[key].state
        predictive = Predictive(
            model,
            guide=scheme.guide,
            params=scheme.get_guide_params(state),
            num_samples=20,
            return_sites=["logits", "y"],
        )
        draws = predictive(random.PRNGKey(3), x)
        assert draws["logits"].shape == draws["y"].shape == (20, x.shape[0])
        assert accuracy(draws["logits"].mean(0), y) >= 0.9, key
        sites = scheme.get_sites(state, x, y)
        np.testing.assert_allclose(sites["logits"], point_logits(model, results[key].params, x), rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LocalEntropy(m, 0.05, sampler="nuts", num_chains=1, num_samples=5, num_warmup=5, sampler_kwargs={"max_tree_depth": 3}, progress_bar=False),
        lambda m: LocalEntropy(m, 0.05, sampler="pcn", num_chains=2, num_samples=10, num_warmup=10, progress_bar=False),
        lambda m: LocalEntropy(m, 1e-3, sampler="importance", num_samples=64, progress_bar=False),
        lambda m: HeatRegularization(m, 0.05, method="robbins_monro", num_inner_steps=5, progress_bar=False),
    ],
    ids=["le-nuts", "le-pcn", "le-importance", "hr-robbins_monro"],
)  # fmt: skip
def test_every_algorithm_runs_a_flax_network(make):
    x, y = classification_data()
    scheme = make(flax_model)
    result = scheme.run(random.PRNGKey(0), 3, x, y, track_every=0)
    assert set(result.params) == WEIGHTS["flax"]
    assert all(np.all(np.isfinite(v)) for v in result.params.values())
    assert not np.any(result.info["rejected"])
    assert scheme.get_sites(result.state, x, y)["logits"].shape == (x.shape[0],)
    idata = to_inference_data(result, scheme, model_args=(x,), model_kwargs={"y": y})
    assert set(WEIGHTS["flax"]) | {"logits"} <= set(idata.posterior.data_vars)


# -- Flax's mutable state (batch statistics) --------------------------------------------------
class BatchNormMLP(linen.Module):
    train: bool

    @linen.compact
    def __call__(self, x):
        h = linen.BatchNorm(use_running_average=not self.train)(linen.Dense(HIDDEN)(x))
        return linen.Dense(1)(jnp.tanh(h)).squeeze(-1)


def batch_norm_model(x, y=None, train=True):
    net = random_flax_module(
        "nn", BatchNormMLP(train), dist.Normal(0.0, 1.0), input_shape=(1, 2), mutable=["batch_stats"]
    )  # fmt: skip
    bernoulli_likelihood(net(x), y)


def test_batch_statistics_are_held_and_said_only_when_they_enter_the_density():
    x, y = classification_data()
    # Training mode normalizes by the batch's own statistics: the state does not enter.
    le = LocalEntropy(batch_norm_model, 1e-3, sampler="importance", num_samples=32, progress_bar=False)  # fmt: skip
    result = le.run(random.PRNGKey(0), 2, x, y, track_every=0)
    assert set(le.tilted.held_values) == {"nn$params", "nn$state"}
    assert not le.tilted.held_in_density and not np.any(result.info["rejected"])
    # Evaluation mode reads the running averages, held at their initial values.
    with pytest.warns(VIEntropyWarning, match=r"'nn\$state' \(numpyro.mutable\) enters its density"):  # fmt: skip
        le.init(random.PRNGKey(0), x, y, train=False)
    assert le.tilted.held_in_density == ["nn$state"]
    state = le.tilted.held_values["nn$state"]["batch_stats"]["BatchNorm_0"]
    np.testing.assert_array_equal(state["mean"], np.zeros(HIDDEN))  # never updated


# -- a plain numpyro.param in the density ------------------------------------------------------
def with_param(y=None):
    loc = numpyro.param("loc", 2.0)
    mu = numpyro.sample("mu", dist.Normal(loc, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def with_constant(y=None):
    mu = numpyro.sample("mu", dist.Normal(2.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LocalEntropy(m, 0.1, sampler="importance", num_samples=64, progress_bar=False),
        lambda m: HeatRegularization(m, 0.1, num_inner_steps=10, num_particles=2, progress_bar=False),
    ],
    ids=["le-importance", "hr-svi"],
)  # fmt: skip
def test_a_param_in_the_density_warns_with_its_name_and_is_held(make):
    scheme = make(with_param)
    with pytest.warns(VIEntropyWarning, match=r"site 'loc' \(numpyro.param\) enters its density.*numpyro.sample\('loc'"):  # fmt: skip
        result = scheme.run(random.PRNGKey(0), 5, -1.0, track_every=0)
    # Held at 2.0 all run long (SVI does not train it): the run of loc = 2.0 as a constant.
    expected = make(with_constant).run(random.PRNGKey(0), 5, -1.0, track_every=0)
    np.testing.assert_allclose(result.params["mu"], expected.params["mu"], rtol=1e-6)
    assert float(result.params["mu"]) < 1.75  # it moved from about 2 (the prior) towards y
    guide_params = scheme.get_guide_params(result.state)
    assert float(guide_params["loc"]) == 2.0  # Predictive runs the model with it
    draws = Predictive(with_param, guide=scheme.guide, params=guide_params, num_samples=10)(
        random.PRNGKey(1)
    )
    assert draws["y"].shape == (10,)
