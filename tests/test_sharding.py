"""Several devices give the result of one: chains, proposals, particles and data rows split.

JAX fixes its device count when it is first imported, so the check runs in a fresh
interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU
devices) and compares, in that process, each scheme on all four devices with the same
scheme on one (``devices=1``).  A second check runs JAX's multi-controller mode: two
processes of two CPU devices each, joined by ``jax.distributed.initialize()``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# One group: the four-device run (a module fixture) runs once, on one worker.
pytestmark = pytest.mark.xdist_group("sharding")

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax import random
    from tests.conftest import linreg_data, linreg_model
    from tests.test_compile import count_compilations
    from vi_entropy import HeatRegularization, LocalEntropy

    assert len(jax.devices()) == 4, jax.devices()
    X, y = linreg_data(n=42, d=3)  # 42 rows: not a multiple of 4 (uneven split)
    common = {"progress_bar": False}
    schemes = {
        "le-nuts": lambda **kw: LocalEntropy(
            linreg_model, 0.01, sampler="nuts", num_chains=4, num_samples=4, num_warmup=4,
            sampler_kwargs={"max_tree_depth": 3}, **common, **kw),
        "le-importance": lambda **kw: LocalEntropy(
            linreg_model, 0.01, sampler="importance", num_samples=64, **common, **kw),
        "hr-svi": lambda **kw: HeatRegularization(
            linreg_model, 0.01, num_inner_steps=4, num_particles=4, **common, **kw),
        "hr-svi-data": lambda **kw: HeatRegularization(
            linreg_model, 0.01, num_inner_steps=4, num_particles=4, shard_data=True,
            **common, **kw),
    }
    out = {}
    for name, make in schemes.items():
        one = make(devices=1).run(random.PRNGKey(0), 3, X, y)
        four_scheme = make()
        with count_compilations() as first:
            four = four_scheme.run(random.PRNGKey(0), 3, X, y)
        with count_compilations() as more:
            four_scheme.run(None, 4, X, y, init_state=four.state)
        specs = sorted({str(getattr(leaf.sharding, "spec", None))
                        for leaf in jax.tree.leaves(four.state.inner)})
        out[name] = {
            "one": np.asarray(one.state.centre).tolist(),
            "four": np.asarray(four.state.centre).tolist(),
            "num_devices": four_scheme.sharding.num_devices,
            "inner_specs": specs,
            "compiles_first": first["n"],
            "compiles_more": more["n"],
        }
    json.dump(out, sys.stdout)
    """
)


def cpu_env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={num_devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def four_devices():
    env = cpu_env(4)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", ["le-nuts", "le-importance", "hr-svi", "hr-svi-data"])
def test_four_devices_give_the_one_device_result(four_devices, name):
    import numpy as np

    r = four_devices[name]
    assert r["num_devices"] == 4
    # Same random numbers (partitionable Threefry); only reduction order may differ.
    np.testing.assert_allclose(r["four"], r["one"], rtol=1e-5, atol=1e-6)
    # Continuing the run compiles nothing: placements are stable from step to step.
    assert r["compiles_more"] == 0


def test_chains_are_split_over_the_devices(four_devices):
    assert "P('batch',)" in four_devices["le-nuts"]["inner_specs"]


MULTI = textwrap.dedent(
    """
    import json, sys
    import jax

    process_id, port = int(sys.argv[1]), sys.argv[2]
    if process_id >= 0:
        jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    import numpy as np
    from jax import random
    from tests.conftest import linreg_data, linreg_model
    from vi_entropy import LocalEntropy

    X, y = linreg_data(n=40, d=3)
    le = LocalEntropy(linreg_model, 0.01, sampler="sgld", num_chains=4, num_samples=3,
                      num_warmup=2, sampler_kwargs={"step_size": 1e-3}, progress_bar=False)
    result = le.run(random.PRNGKey(0), 2, X, y, keep_draws=None)
    print(json.dumps({"devices": jax.device_count(),
                      "centre": np.asarray(result.state.centre).tolist()}))
    """
)


def test_two_processes_give_the_one_process_result():
    """Multi-controller JAX (as on several hosts): 2 processes x 2 CPU devices."""
    import numpy as np

    with socket.socket() as sock:  # a free port for the coordinator
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    run = {"cwd": ROOT, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [
        subprocess.Popen([sys.executable, "-c", MULTI, str(i), port], env=cpu_env(2), **run)
        for i in (0, 1)
    ]
    single = subprocess.run(
        [sys.executable, "-c", MULTI, "-1", port], env=cpu_env(1), timeout=600, **run
    )
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-4000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert single.returncode == 0, single.stderr[-4000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    assert [o["devices"] for o in outs] == [4, 4] and one["devices"] == 1
    for o in outs:
        np.testing.assert_allclose(o["centre"], one["centre"], rtol=1e-5, atol=1e-6)
