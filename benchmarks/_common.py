"""Shared pieces of the benchmark scripts: command line, machine, timing, tables, JSON.

Timings on a shared machine are noisy, so every script measures *ratios* inside one
process: the two things compared run interleaved (A, B, A, B, ...), each pair of
neighbours gives a ratio, and the median ratio over repeats is reported.  Both wall-clock
and process CPU time (all threads, ``time.process_time``) are recorded: when other
processes compete for the cores, wall-clock ratios wander with the load, while CPU-time
ratios stay put (on a GPU only wall-clock means anything).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes (``--quick``, ``--out``, ``--repeats``)."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, for CI (seconds)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (median is reported)")
    return p


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import jax
    import numpyro

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "num_devices": len(devices),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def block(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


def interleaved(
    fns: Mapping[str, Callable[[], Any]], repeats: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, run in turn ``repeats`` times (all warmed up).

    Process CPU seconds of the same runs go to ``cpu`` when it is given.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    if cpu is not None:
        cpu.update({k: [] for k in fns})
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
            if cpu is not None:
                cpu[name].append(time.process_time() - c0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def ratio_median(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the per-repeat ratios (pairs measured back to back share the noise)."""
    return median([a / b for a, b in zip(num, den, strict=True)])


def fmt(x: Any) -> str:
    if isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"
        return f"{x:.2e}"
    return str(x)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Print rows as a Markdown table (and return it)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(
    name: str, payload: Mapping[str, Any], out: Path | None, quick: bool, quiet: bool = False
) -> Path:
    """Write ``payload`` (plus the machine) to ``out`` or ``benchmarks/results/<name>.json``."""
    path = out or RESULTS / f"{name}{'-quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "quick": quick, "machine": machine(), **payload}
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    if not quiet:
        print(f"wrote {path}", flush=True)
    return path


def _jsonable(x: Any) -> Any:
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def digits_problem(hidden: Sequence[int], batch_size: int | None = None):
    """The dense network on scikit-learn's digits with ``β = 1/N`` (``f`` = mean loss).

    Returns ``(model, args, kwargs, beta, data, num_parameters)``.
    """
    import jax.numpy as jnp

    from vi_entropy.data import load_digits
    from vi_entropy.models import dense_network, model_sizes, num_parameters

    data = load_digits()
    model = dense_network(data.num_features, hidden=tuple(hidden), num_classes=data.num_classes)
    args = (jnp.asarray(data.X_train), jnp.asarray(data.y_train))
    kwargs = {} if batch_size is None else {"batch_size": int(batch_size)}
    beta = 1.0 / len(data.y_train)
    return model, args, kwargs, beta, data, num_parameters(model_sizes(model))


def hidden_for(num_params: int, num_features: int = 64, num_classes: int = 10) -> int:
    """Width of one hidden layer that gives about ``num_params`` parameters."""
    return max(1, round((num_params - num_classes) / (num_features + 1 + num_classes)))


EVENTS = {
    "/jax/core/compile/backend_compile_duration": "backend",
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
}


@contextlib.contextmanager
def compile_stats() -> Iterator[dict[str, Any]]:
    """Count backend compilations and sum trace/lower/compile seconds while active."""
    import jax

    stats = {"compilations": 0, "trace_s": 0.0, "lower_s": 0.0, "backend_s": 0.0}

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        kind = EVENTS.get(event)
        if kind is None:
            return
        stats[f"{kind}_s"] += duration
        if kind == "backend":
            stats["compilations"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield stats
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def in_subprocess(script: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``script --child SPEC`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, script, "--child", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {dict(spec)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
