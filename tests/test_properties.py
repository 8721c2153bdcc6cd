"""Property-based tests (hypothesis).

Valid inputs: any layout of latent sites (scalars, vectors, matrices, several sites,
each with a real, positive or unit-interval support), any float dtype of ``init_params``
and any τ over eight orders of magnitude train without a non-finite centre, and the
parameters keep the sites' names, shapes, dtype and supports.  Invalid inputs: every
option, sampler option and ``init_params`` mistake raises ``ValueError`` or
``TypeError`` whose message starts with the argument's name, never an error from inside
JAX or NumPyro.  Examples are few and derandomized: each valid example compiles a model.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jax import random

from vi_entropy import HeatRegularization, LocalEntropy

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SUPPORTS = {
    "real": (lambda: dist.Normal(0.0, 1.0), lambda v: np.isfinite(v)),
    "positive": (lambda: dist.LogNormal(0.0, 0.5), lambda v: v > 0),
    "unit": (lambda: dist.Beta(2.0, 2.0), lambda v: (v > 0) & (v < 1)),
}
SHAPES = [(), (2,), (2, 3)]
sites = st.lists(
    st.tuples(st.sampled_from(SHAPES), st.sampled_from(list(SUPPORTS))), min_size=1, max_size=3
)


def make_model(spec):
    """Latent sites ``s0, s1, ...`` of the given shapes and supports, one observation."""

    def model(y=None):
        total = 0.0
        for i, (shape, support) in enumerate(spec):
            prior = SUPPORTS[support][0]().expand(shape).to_event(len(shape))
            total = total + jnp.sum(numpyro.sample(f"s{i}", prior))
        numpyro.sample("y", dist.Normal(total, 1.0), obs=y)

    return model


def start_values(spec, dtype):
    """Valid constrained values of every site, in ``dtype``."""
    value = {"real": 0.3, "positive": 1.5, "unit": 0.4}
    return {f"s{i}": np.full(shape, value[sup], dtype) for i, (shape, sup) in enumerate(spec)}


@pytest.mark.x64
# A large τ may get a step rejected (warned at once); this is about names, shapes, dtypes.
@pytest.mark.filterwarnings("ignore:.* outer step .* was rejected:vi_entropy.VIEntropyWarning")
@settings(max_examples=5, **SETTINGS)
@example(spec=[((2, 3), "unit")], log10_tau=-6.0, init_dtype=np.float16, heat=False)
@example(
    spec=[((), "real"), ((2,), "positive"), ((2, 3), "unit")],
    log10_tau=2.0,
    init_dtype=np.float64,
    heat=True,
)
@given(
    spec=sites,
    log10_tau=st.floats(-6.0, 2.0),
    init_dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    heat=st.booleans(),
)
def test_any_site_layout_trains_and_keeps_names_shapes_dtypes(spec, log10_tau, init_dtype, heat):
    model = make_model(spec)
    tau = 10.0**log10_tau
    if heat:
        scheme = HeatRegularization(
            model, tau, method="robbins_monro", num_inner_steps=3, num_particles=2,
            progress_bar=False,
        )  # fmt: skip
    else:
        scheme = LocalEntropy(
            model, tau, sampler="importance", num_samples=8, ess_threshold=None,
            progress_bar=False,
        )  # fmt: skip
    init = start_values(spec, init_dtype)
    result = scheme.run(random.PRNGKey(0), 2, jnp.asarray(1.0), init_params=init)
    float_dtype = jnp.asarray(1.0).dtype
    assert sorted(result.params) == sorted(init)
    for i, (shape, support) in enumerate(spec):
        value = result.params[f"s{i}"]
        assert value.shape == shape and value.dtype == float_dtype
        # A large τ may get steps rejected, but the centre is never non-finite.
        assert bool(np.all(SUPPORTS[support][1](np.asarray(value, np.float64))))
    assert bool(jnp.all(jnp.isfinite(result.state.centre)))
    assert result.state.centre.dtype == float_dtype
    assert result.info["rejected"].shape == (2,)


# -- invalid options ------------------------------------------------------------------------

not_positive = st.one_of(
    st.floats(max_value=0.0),
    st.integers(max_value=0),
    st.just(math.nan),
    st.just(math.inf),
)
not_a_number = st.one_of(
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.floats(0.1, 1.0), min_size=2, max_size=2).map(np.asarray),
    st.complex_numbers(allow_nan=False, min_magnitude=0.1).map(np.asarray),
)
outside_unit = st.one_of(
    not_positive, st.floats(min_value=1.0, exclude_min=True), st.integers(min_value=2)
)


def not_a_count(minimum):
    return st.one_of(
        st.integers(max_value=minimum - 1),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
    )


def not_one_of(options):
    return st.one_of(st.text(max_size=6), st.integers(), st.none()).filter(
        lambda v: v not in options
    )


not_a_flag = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats())

LE_OPTIONS = {
    "tau": st.one_of(not_positive, not_a_number),
    "beta": st.one_of(not_positive, not_a_number),
    "alpha": st.one_of(outside_unit, not_a_number),
    "ema_decay": st.one_of(outside_unit, not_a_number),
    "ess_threshold": st.one_of(outside_unit, st.text(max_size=3), st.booleans()),
    # None: the sampler's default (see local_entropy.SAMPLER_DEFAULTS).
    "num_chains": not_a_count(1).filter(lambda v: v is not None),
    "num_samples": not_a_count(1).filter(lambda v: v is not None),
    "num_warmup": not_a_count(0).filter(lambda v: v is not None),
    "thinning": not_a_count(1),
    "max_rejections": not_a_count(1),
    "averaging": not_one_of(("arithmetic", "exponential")),
    "readapt": not_a_flag,
    "progress_bar": not_a_flag,
    "sampler": st.one_of(not_one_of(("nuts", "hmc", "sa", "sgld", "importance")), st.floats()),
}
HR_OPTIONS = {
    "tau": st.one_of(not_positive, not_a_number),
    "num_inner_steps": not_a_count(1),
    "num_particles": not_a_count(1),
    "gain": st.one_of(not_positive, not_a_number.filter(lambda v: v is not None)),  # None: scaled
    "gain_t0": st.one_of(not_positive, not_a_number),
    "gain_kappa": st.one_of(not_positive, st.floats(0.0, 0.5), st.floats(min_value=1.01)),
    "method": not_one_of(("svi", "robbins_monro")),
    "estimator": not_one_of(("gradient", "gradient_free")),
}


def model_1d(y=None):
    numpyro.sample("mu", dist.Normal(0.0, 1.0))


def assert_names(err, name):
    assert str(err.value).startswith(name), str(err.value)


@settings(max_examples=120, **SETTINGS)
@given(data=st.data(), name=st.sampled_from(sorted(LE_OPTIONS)))
def test_invalid_local_entropy_option_is_named(data, name):
    value = data.draw(LE_OPTIONS[name], label=name)
    kwargs = {"tau": 0.1, name: value}
    if name == "gain_kappa":
        kwargs["method"] = "robbins_monro"
    with pytest.raises((ValueError, TypeError)) as err:
        LocalEntropy(model_1d, **kwargs)
    assert_names(err, name)


@settings(max_examples=80, **SETTINGS)
@given(data=st.data(), name=st.sampled_from(sorted(HR_OPTIONS)))
def test_invalid_heat_regularization_option_is_named(data, name):
    value = data.draw(HR_OPTIONS[name], label=name)
    kwargs = {"tau": 0.1, name: value}
    if name in ("gain", "gain_t0", "gain_kappa", "estimator"):
        kwargs.setdefault("method", "robbins_monro")
    with pytest.raises((ValueError, TypeError)) as err:
        HeatRegularization(model_1d, **kwargs)
    assert_names(err, name)


SAMPLER_OPTIONS = {
    ("nuts", "step_size"): st.one_of(not_positive, not_a_number),
    ("nuts", "target_accept_prob"): st.one_of(outside_unit, st.just(1.0), not_a_number),
    ("nuts", "max_tree_depth"): not_a_count(1),
    ("hmc", "num_steps"): st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=2)),
    ("hmc", "trajectory_length"): st.one_of(not_positive, st.text(max_size=2)),
    ("sa", "adapt_state_size"): st.one_of(st.integers(max_value=1), st.floats()),
    ("sa", "dense_mass"): not_a_flag,
    # None: adapted in the warm-up; "curvature" (longer than 2): the default.
    ("sgld", "step_size"): st.one_of(not_positive, st.text(max_size=2)),
    ("sgld", "noise_scale"): st.one_of(st.floats(max_value=0.0, exclude_max=True), not_a_number),
    ("importance", "batch_size"): st.one_of(st.integers(max_value=0), st.floats(), st.text()),
}


@settings(max_examples=80, **SETTINGS)
@given(data=st.data(), option=st.sampled_from(sorted(SAMPLER_OPTIONS)))
def test_invalid_sampler_option_is_named(data, option):
    sampler, name = option
    value = data.draw(SAMPLER_OPTIONS[option], label=name)
    with pytest.raises((ValueError, TypeError)) as err:
        LocalEntropy(model_1d, 0.1, sampler=sampler, sampler_kwargs={name: value})
    assert_names(err, f"sampler_kwargs[{name!r}]")


@settings(max_examples=30, **SETTINGS)
@given(
    sampler=st.sampled_from(["nuts", "hmc", "sa", "sgld", "importance"]),
    name=st.text(min_size=1, max_size=8),
)
def test_unknown_sampler_option_is_named(sampler, name):
    if name in ("step_size", "batch_size", "noise_scale", "dense_mass"):
        return
    with pytest.raises(ValueError) as err:
        LocalEntropy(model_1d, 0.1, sampler=sampler, sampler_kwargs={name: 1.0})
    assert_names(err, f"sampler_kwargs: sampler={sampler!r} takes only")


# -- invalid init_params ------------------------------------------------------------------


def two_sites(y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(jnp.sum(w), s), obs=y)


VALID = {"w": np.zeros(3, np.float32), "s": np.float32(1.0)}

mistakes = st.one_of(
    st.just(("drop", "w")),
    st.just(("drop", "s")),
    st.tuples(st.just("extra"), st.text(min_size=1, max_size=4).filter(lambda k: k not in VALID)),
    st.tuples(st.just("shape"), st.sampled_from([(), (2,), (4,), (3, 1), (1, 3)])),
    st.tuples(st.just("nonfinite"), st.sampled_from([math.nan, math.inf, -math.inf])),
    st.tuples(st.just("support"), st.floats(-1e30, 0.0, exclude_max=True)),
    st.tuples(st.just("dtype"), st.sampled_from([np.int32, np.int64, np.bool_, np.complex64])),
    st.tuples(st.just("type"), st.sampled_from([[0.0, 0.0, 0.0], "w", 1.0, ("w", "s")])),
)


@pytest.fixture(scope="module")
def two_site_scheme():
    return LocalEntropy(two_sites, 0.1, sampler="importance", num_samples=4, ess_threshold=None)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mistake=mistakes)
def test_invalid_init_params_are_named(two_site_scheme, mistake):
    kind, arg = mistake
    params = dict(VALID)
    if kind == "drop":
        del params[arg]
    elif kind == "extra":
        params[arg] = 0.0
    elif kind == "shape":
        params["w"] = np.zeros(arg, np.float32)
    elif kind == "nonfinite":
        params["w"] = np.array([0.0, arg, 0.0], np.float32)
    elif kind == "support":
        params["s"] = np.float32(arg)
    elif kind == "dtype":
        params["w"] = np.zeros(3, arg)
    else:
        params = arg
    with pytest.raises((ValueError, TypeError)) as err:
        two_site_scheme.init(random.PRNGKey(0), 1.0, init_params=params)
    assert_names(err, "init_params")
