"""Checkpoint and resume: interrupted runs end bitwise where uninterrupted ones do.

Three ways a run stops early: ``KeyboardInterrupt`` (saved on the way out), a process
killed with SIGKILL (only the periodic saves survive), and a failed write (the previous
checkpoint survives).  Bad checkpoint files are refused with the file's name and left
as they are.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import random

from tests import _resume_job as resume_job
from tests.conftest import OK, RELIABILITY_SCHEMES, linreg_data, linreg_model, poisoned_linreg
from vi_entropy import HeatRegularization, LocalEntropy, VIEntropyWarning
from vi_entropy import checkpoint as checkpoint_io
from vi_entropy.checkpoint import CheckpointError, read_meta

ROOT = Path(__file__).resolve().parents[1]
X, Y = linreg_data(n=10, d=3)


def assert_results_equal(a, b):
    """Bitwise equality of two RunResults: params, every state leaf, info, draws."""

    def same(x, y):
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    jax.tree.map(same, a.params, b.params)
    assert jax.tree.structure(a.state) == jax.tree.structure(b.state)
    jax.tree.map(same, a.state, b.state)
    assert sorted(a.info) == sorted(b.info)
    for k in a.info:
        np.testing.assert_array_equal(a.info[k], b.info[k], err_msg=k)
    assert sorted(a.draws) == sorted(b.draws)
    for k in a.draws:
        jax.tree.map(same, a.draws[k], b.draws[k])


@contextlib.contextmanager
def interrupted_at_step(scheme, n):
    """Raise ``KeyboardInterrupt`` (as Ctrl-C does) when ``scheme`` starts outer step ``n``
    of a run (white box: wraps the scheme's update, which run repeats)."""
    calls = itertools.count()
    update = scheme._update

    def flaky(*args, **kwargs):
        if next(calls) == n:
            raise KeyboardInterrupt
        return update(*args, **kwargs)

    scheme._update = flaky
    try:
        yield
    finally:
        del scheme._update


@pytest.mark.x64
@pytest.mark.parametrize("name", RELIABILITY_SCHEMES)
def test_interrupted_run_resumes_bitwise(reliability_scheme, name, tmp_path, float_dtype):
    scheme = reliability_scheme(name)
    key = random.PRNGKey(3)
    whole = scheme.run(key, 5, X, Y, OK, keep_draws="all")
    # Same key, same bits (and the dtype of the centre throughout).
    assert_results_equal(scheme.run(key, 5, X, Y, OK, keep_draws="all"), whole)
    assert whole.state.centre.dtype == float_dtype
    assert all(v.dtype == float_dtype for v in whole.params.values())
    for leaf in jax.tree.leaves(whole.state.inner):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            assert leaf.dtype == float_dtype

    # Mid-run, and before step 0 (a state before the MCMC warm-up, which step 0 runs).
    for stop in (3, 0):
        path = tmp_path / f"run{stop}.ckpt"
        with interrupted_at_step(scheme, stop), pytest.raises(KeyboardInterrupt):
            scheme.run(key, 5, X, Y, OK, keep_draws="all", checkpoint=path, checkpoint_every=2)
        meta = read_meta(path)
        assert (meta["step"], meta["run_start"], meta["num_steps"]) == (stop, 0, 5)
        resumed = scheme.run(None, 5, X, Y, OK, keep_draws="all", checkpoint=path, resume=True)
        assert_results_equal(resumed, whole)
        assert read_meta(path)["step"] == 5


def wait_for_checkpoint(path, proc, log, min_step, timeout):
    """Poll until the checkpoint at ``path`` is at ``min_step`` or later; return its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the job ended before it was killed:\n{log.read_text()}")
        if path.exists():
            step = read_meta(path)["step"]
            if step >= min_step:
                return step
        time.sleep(0.005)
    pytest.fail(f"no checkpoint at step {min_step} after {timeout} s")


def job(*args, log, **popen):
    """Start ``python -m tests._resume_job *args`` with a fixed hash seed (see there)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "tests._resume_job", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        **popen,
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("name", list(resume_job.JOBS))
def test_killed_run_resumes_bitwise(name, tmp_path):
    """SIGKILL a training process mid-run; a new process finishing it from its checkpoint
    ends exactly where an uninterrupted run does."""
    path = tmp_path / "run.ckpt"
    log = tmp_path / "job.log"
    with open(log, "wb") as stderr:
        proc = job("run", name, str(path), log=stderr)
        try:
            wait_for_checkpoint(path, proc, log, min_step=2, timeout=300)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_meta(path)["step"]
    assert 2 <= killed_at < resume_job.NUM_STEPS

    out = tmp_path / "result"
    with open(log, "wb") as stderr:
        finisher = job("finish", name, str(path), str(out), log=stderr)
        assert finisher.wait(timeout=600) == 0, log.read_text()
    resumed = checkpoint_io.load(f"{out}.resumed")
    whole = checkpoint_io.load(f"{out}.whole")
    paths = [leaf["path"] for leaf in resumed.meta["state"]["leaves"]]
    assert int(resumed.leaves[paths.index(".step")]) == resume_job.NUM_STEPS
    assert resumed.meta["state"] == whole.meta["state"]
    for a, b in zip(resumed.leaves, whole.leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sorted(resumed.info) == sorted(whole.info)
    for k in whole.info:
        np.testing.assert_array_equal(resumed.info[k], whole.info[k], err_msg=k)
    assert sorted(resumed.draws) == sorted(whole.draws)
    for step, d in whole.draws.items():
        np.testing.assert_array_equal(resumed.draws[step].values, d.values)


# -- bad checkpoint files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def importance():
    return LocalEntropy(
        linreg_model, 0.01, sampler="importance", num_samples=16, ess_threshold=None,
        progress_bar=False,
    )  # fmt: skip


@pytest.fixture
def saved(importance, tmp_path):
    """A checkpoint of a finished 2-step run; returns ``(path, result)``."""
    path = tmp_path / "run.ckpt"
    result = importance.run(random.PRNGKey(0), 2, X, Y, checkpoint=path)
    return path, result


def rewrite(data, change):
    """A copy of checkpoint bytes ``data`` with its arrays edited by ``change(arrays)``."""
    with np.load(io.BytesIO(data)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def set_meta(arrays, **fields):
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(fields)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def test_corrupt_checkpoints_are_refused_and_left_untouched(importance, saved):
    path, _ = saved
    good = path.read_bytes()
    middle = len(good) // 2
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))

    def tamper(arrays):
        arrays["state/0"] = arrays["state/0"] + 1.0

    variants = {
        "truncated": (good[:middle], "cannot be read"),
        "empty": (b"", "cannot be read"),
        "garbage": (b"not a checkpoint " * 64, "cannot be read"),
        "flipped byte": (good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :], ""),
        "bare .npy": (npy.getvalue(), "not an .npz archive"),
        "edited array": (rewrite(good, tamper), "do not match their digest"),
        "newer format": (rewrite(good, lambda a: set_meta(a, version=99)), "format version 99"),
        "other format": (rewrite(good, lambda a: set_meta(a, format="x")), "no format marker"),
        "no metadata": (rewrite(good, lambda a: a.pop("meta")), "no metadata"),
    }
    for name, (data, match) in variants.items():
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + match) as err:
            importance.run(None, 4, X, Y, checkpoint=path, resume=True)
        assert err.value.path == str(path), name
        assert path.read_bytes() == data, f"{name}: the file was changed"


@pytest.mark.xdist_group("le-sgld")  # shares the compiled "le-sgld" scheme
def test_mismatched_checkpoints_say_what_differs(saved, reliability_scheme, tmp_path):
    path, _ = saved
    X4, Y4 = linreg_data(n=10, d=4)
    cases = [
        (HeatRegularization(linreg_model, 0.01), (X, Y), "scheme: checkpoint 'LocalEntropy', this run 'HeatRegularization'"),
        (LocalEntropy(linreg_model, 0.01, sampler="sgld", sampler_kwargs={"step_size": 1e-3}), (X, Y), "sampler: checkpoint 'importance', this run 'sgld'"),
        (LocalEntropy(poisoned_linreg, 0.01, sampler="importance"), (X, Y), "model: checkpoint 'linreg_model', this run 'poisoned_linreg'"),
        (LocalEntropy(linreg_model, 0.01, sampler="importance"), (X4, Y4), r"sites: checkpoint \{'w': \[\[3\], '(float32|float64)'\]\}, this run \{'w': \[\[4\]"),
    ]  # fmt: skip
    before = path.read_bytes()
    for scheme, args, match in cases:
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + match):
            scheme.run(None, 4, *args, checkpoint=path, resume=True, progress_bar=False)
        assert path.read_bytes() == before
    # The number of chains is part of the state.
    chains = tmp_path / "chains.ckpt"
    reliability_scheme("le-sgld").run(random.PRNGKey(0), 1, X, Y, OK, checkpoint=chains)
    more = LocalEntropy(
        poisoned_linreg, 0.01, sampler="sgld", num_chains=3, num_samples=4, num_warmup=4,
        sampler_kwargs={"step_size": 1e-3},
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="num_chains: checkpoint 2, this run 3"):
        more.run(None, 2, X, Y, OK, resume=chains)


def test_state_that_does_not_fit_names_the_leaf(saved):
    path, result = saved
    ck = checkpoint_io.load(path)
    template = jax.eval_shape(lambda s: s, result.state)
    wider = template._replace(centre=jax.ShapeDtypeStruct((4,), template.centre.dtype))
    with pytest.raises(CheckpointError, match=r"state leaf \.centre has shape \(3,\)"):
        checkpoint_io.restore_state(ck, wider)
    renamed = template._replace(inner={"other": template.inner})
    with pytest.raises(CheckpointError, match=r"state leaves missing \[\"\.inner\['other'\]"):
        checkpoint_io.restore_state(ck, renamed)
    restored = checkpoint_io.restore_state(ck, template)
    np.testing.assert_array_equal(np.asarray(restored.centre), np.asarray(result.state.centre))


def test_changed_options_warn_and_run(saved):
    path, _ = saved
    le = LocalEntropy(
        linreg_model, 0.01, sampler="importance", num_samples=32, ess_threshold=None,
        progress_bar=False,
    )  # fmt: skip
    with pytest.warns(VIEntropyWarning, match="num_samples: checkpoint 16, now 32"):
        result = le.run(None, 3, X, Y, resume=path)
    assert int(result.state.step) == 3


def test_resume_semantics(importance, saved, tmp_path):
    path, first = saved
    # num_steps is the total of the run: a finished run resumes to itself, no steps run...
    assert_results_equal(importance.run(None, 2, X, Y, resume=path), first)
    # ...a larger total extends it, exactly as a longer run would have gone...
    longer = importance.run(None, 4, X, Y, resume=path)
    assert_results_equal(longer, importance.run(random.PRNGKey(0), 4, X, Y))
    # ...and a smaller one is an error.
    with pytest.raises(ValueError, match="num_steps: the run in checkpoint .* has already done 2"):
        importance.run(None, 1, X, Y, resume=path)
    # resume=True starts afresh (from rng_key) when the checkpoint does not exist yet.
    fresh = tmp_path / "new.ckpt"
    started = importance.run(random.PRNGKey(0), 2, X, Y, checkpoint=fresh, resume=True)
    assert_results_equal(started, first)
    assert read_meta(fresh)["step"] == 2
    with pytest.raises(FileNotFoundError, match="resume: there is no checkpoint file"):
        importance.run(None, 2, X, Y, resume=tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="resume=True continues the run saved in `checkpoint`"):
        importance.run(None, 2, X, Y, resume=True)
    with pytest.raises(ValueError, match="resume: the state comes from the checkpoint"):
        importance.run(None, 2, X, Y, resume=path, init_params={"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="resume: the state comes from the checkpoint"):
        importance.run(None, 2, X, Y, resume=path, init_state=first.state)


def test_failed_write_keeps_the_previous_checkpoint(importance, saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def disk_full(file, **arrays):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        importance.run(random.PRNGKey(1), 2, X, Y, checkpoint=path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
