"""Checkpoints of a training run: atomic writes, verified reads, resumption.

:meth:`~vi_entropy.TwoStepScheme.run` writes one with ``checkpoint=path`` and continues
from one with ``resume=path`` (or ``resume=True``); this module is the file format and
the resumption: :func:`resume_source` (which file, if any), :func:`resume` (the checked
state and the run's record so far) and :func:`check_state` (``init_state`` fits the
scheme).  A scheme takes part through three small methods: ``_checkpoint_structure``
(what a checkpoint must match), ``_checkpoint_options`` (what a resumed run may change)
and ``_state_template`` (the shapes and dtypes of its state).

A checkpoint is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays), read with
``allow_pickle=False``, so loading one never runs code.  Format version 1 holds

- ``meta``: UTF-8 JSON stored as a ``uint8`` array: the format name and version, the
  library and JAX versions, what the run must match (scheme, sampler or method, model,
  latent sites) and the options it was run with, the step counters of the run, the
  tree structure, paths, shapes and dtypes of the state's leaves, and a SHA-256 digest
  of every other member;
- ``state/<i>``: the leaves of the :class:`~vi_entropy.TwoStepState` (centre, kernel
  or SVI/optimizer states, RNG keys, counters) in tree order; typed PRNG keys
  (``jax.random.key``) are stored as their key data and re-wrapped on reading;
- ``info/<name>``: the per-outer-step diagnostics of the run so far, stacked over steps;
- ``draws/<step>/<field>``: the inner draws the run has kept so far.

A file is written to a temporary file in the same directory, flushed and synced to
disk, then renamed over ``path`` (``os.replace``, atomic on POSIX and Windows): a
process killed at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from jax.tree_util import keystr, tree_flatten_with_path
from numpyro.util import is_prng_key

from vi_entropy import _validation as check
from vi_entropy.types import Draws, TwoStepState, VIEntropyWarning

if TYPE_CHECKING:  # the driver and the observers import this module
    from vi_entropy.driver import TwoStepScheme
    from vi_entropy.observers import RunRecord

FORMAT = "vi_entropy.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or made by another run.

    The message names the file and what is wrong; the file is left as it is.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"checkpoint {path}: {message}")
        self.path = path


class Checkpoint(NamedTuple):
    """A checkpoint read by :func:`load` (the state still as flat leaves)."""

    path: str
    meta: dict[str, Any]
    leaves: list[Any]
    info: dict[str, np.ndarray]
    draws: dict[int, Draws]
    trace: dict[str, np.ndarray]


# -- writing ------------------------------------------------------------------------------


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    state: Any,
    *,
    meta: Mapping[str, Any],
    info: Mapping[str, np.ndarray],
    draws: Mapping[int, Draws],
    trace: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``state`` (any pytree of arrays), ``info``, ``draws`` and the tracked
    ``trace`` to ``path``, atomically.

    ``meta`` is recorded as given (it must be JSON-serializable), with the format
    version, the state's structure and a digest added.
    """
    path = os.fspath(path)
    leaves_with_path, treedef = tree_flatten_with_path(state)
    arrays: dict[str, np.ndarray] = {}
    leaf_meta = []
    for i, (key_path, leaf) in enumerate(leaves_with_path):
        leaf = leaf if hasattr(leaf, "dtype") else np.asarray(leaf)
        entry = {"path": keystr(key_path), "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)}
        if _is_key(leaf):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        else:
            entry["key_impl"] = None
        leaf_meta.append(entry)
        arrays[f"state/{i}"] = np.asarray(jax.device_get(leaf))
    for name, value in info.items():
        arrays[f"info/{name}"] = np.asarray(value)
    for name, value in (trace or {}).items():
        arrays[f"trace/{name}"] = np.asarray(value)
    for step, d in draws.items():
        d = jax.device_get(d)
        arrays[f"draws/{step}/values"] = np.asarray(d.values)
        if d.log_weights is not None:
            arrays[f"draws/{step}/log_weights"] = np.asarray(d.log_weights)
        for name, value in d.stats.items():
            arrays[f"draws/{step}/stats/{name}"] = np.asarray(value)
    full_meta = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "state": {"treedef": str(treedef), "leaves": leaf_meta},
        "draws_steps": sorted(int(s) for s in draws),
        "digest": _digest(arrays),
    }
    arrays["meta"] = np.frombuffer(json.dumps(full_meta).encode(), np.uint8)
    _atomic_write(path, arrays)


def _atomic_write(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write to a temporary file beside ``path``, sync it, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (POSIX; directories cannot be opened on Windows).
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- reading ------------------------------------------------------------------------------

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError)


def _read_arrays(path: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a bare array, not an .npz archive")
        with npz:
            return {n: npz[n] for n in (npz.files if names is None else names)}
    except FileNotFoundError:
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(
            path,
            f"cannot be read ({type(err).__name__}: {err}); the file is corrupt, "
            "truncated or not a vi_entropy checkpoint. It was left unchanged.",
        ) from err


def _parse_meta(path: str, raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, f"its metadata is corrupt ({err}).") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(path, "not a vi_entropy checkpoint (no format marker).")
    version = meta.get("version")
    if version != VERSION:
        raise CheckpointError(
            path,
            f"format version {version!r}; this version of vi_entropy reads version {VERSION}.",
        )
    return meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the checkpoint at ``path`` (cheap: the arrays are not read)."""
    path = os.fspath(path)
    return _parse_meta(path, _read_arrays(path, ["meta"])["meta"])


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint at ``path``.

    Raises ``FileNotFoundError`` if there is none and :class:`CheckpointError` if it is
    corrupt, truncated, of another format version, or fails its digest.
    """
    path = os.fspath(path)
    arrays = _read_arrays(path)
    if "meta" not in arrays:
        raise CheckpointError(path, "not a vi_entropy checkpoint (no metadata).")
    meta = _parse_meta(path, arrays.pop("meta"))
    if _digest(arrays) != meta.get("digest"):
        raise CheckpointError(path, "its contents do not match their digest (corrupt file).")
    try:
        leaves = []
        for i, leaf in enumerate(meta["state"]["leaves"]):
            arr = arrays[f"state/{i}"]
            if leaf["key_impl"] is not None:
                arr = jax.random.wrap_key_data(arr, impl=leaf["key_impl"])
            leaves.append(arr)
        info = {k[len("info/") :]: v for k, v in arrays.items() if k.startswith("info/")}
        trace = {k[len("trace/") :]: v for k, v in arrays.items() if k.startswith("trace/")}
        draws = {}
        for step in meta["draws_steps"]:
            prefix = f"draws/{step}/stats/"
            stats = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            draws[int(step)] = Draws(
                arrays[f"draws/{step}/values"], arrays.get(f"draws/{step}/log_weights"), stats
            )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"incomplete or inconsistent contents ({err}).") from err
    return Checkpoint(path, meta, leaves, info, draws, trace)


def check_compatible(
    ckpt: Checkpoint, structure: Mapping[str, Any], options: Mapping[str, Any]
) -> list[str]:
    """Raise :class:`CheckpointError` unless ``ckpt`` was made by a run of the same structure.

    ``structure`` (scheme, sampler or method, model, latent sites, ...) must match
    exactly; returns the differences in ``options`` (settings that a run may change,
    at the price of no longer reproducing an uninterrupted run).
    """
    saved = ckpt.meta.get("structure", {})
    want = json.loads(json.dumps(structure))  # the JSON round trip the saved one made
    wrong = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {want.get(k)!r}"
        for k in sorted(set(saved) | set(want))
        if saved.get(k) != want.get(k)
    ]
    if wrong:
        raise CheckpointError(
            ckpt.path, "it was written by a different run; mismatched " + "; ".join(wrong) + "."
        )
    saved_opts = ckpt.meta.get("options", {})
    want_opts = json.loads(json.dumps(options))
    return [
        f"{k}: checkpoint {saved_opts.get(k)!r}, now {want_opts.get(k)!r}"
        for k in sorted(set(saved_opts) | set(want_opts))
        if saved_opts.get(k) != want_opts.get(k)
    ]


def leaf_signature(tree: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, shape, dtype)`` of every leaf of ``tree`` (arrays or ``ShapeDtypeStruct``)."""
    out = []
    for p, x in tree_flatten_with_path(tree)[0]:
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        out.append((keystr(p), tuple(np.shape(x)), str(dtype)))
    return out


def describe_mismatch(
    want: list[tuple[str, tuple[int, ...], str]], have: list[tuple[str, tuple[int, ...], str]]
) -> str | None:
    """What differs between two leaf signatures (``None`` when they agree)."""
    if [w[0] for w in want] != [h[0] for h in have]:
        want_paths, have_paths = {w[0] for w in want}, {h[0] for h in have}
        missing = [w[0] for w in want if w[0] not in have_paths]
        extra = [h[0] for h in have if h[0] not in want_paths]
        return (
            "its state does not fit this scheme (another sampler, optimizer, number of "
            f"chains or scheme?): state leaves missing {missing[:6]}, unexpected {extra[:6]}"
        )
    for (path, w_shape, w_dtype), (_, h_shape, h_dtype) in zip(want, have, strict=True):
        if (tuple(w_shape), w_dtype) != (tuple(h_shape), h_dtype):
            hint = ""
            if {w_dtype, h_dtype} == {"float32", "float64"}:
                hint = " (made with JAX_ENABLE_X64 set differently?)"
            return (
                f"state leaf {path} has shape {tuple(h_shape)} and dtype {h_dtype}, this "
                f"scheme expects {tuple(w_shape)} {w_dtype}{hint}"
            )
    return None


def restore_state(ckpt: Checkpoint, template: Any) -> Any:
    """The checkpoint's state as a pytree shaped like ``template`` (e.g. from ``eval_shape``).

    Raises :class:`CheckpointError` naming the leaves whose path, shape or dtype differ.
    """
    have = [(x["path"], tuple(x["shape"]), x["dtype"]) for x in ckpt.meta["state"]["leaves"]]
    problem = describe_mismatch(leaf_signature(template), have)
    if problem is not None:
        raise CheckpointError(ckpt.path, problem + ".")
    treedef = jax.tree.structure(template)
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in ckpt.leaves])


def jsonable(value: Any) -> Any:
    """A JSON-friendly description of an option (callables by name)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        return f"<{name}>"
    return repr(value)


# -- resuming a scheme's run --------------------------------------------------------------


def resume_source(resume: Any, checkpoint: str | None) -> str | None:
    """The checkpoint file ``run`` continues from, or ``None`` for a fresh run.

    ``resume`` is ``run``'s argument: ``None``/``False`` (a fresh run), ``True`` (the file
    ``checkpoint`` if it exists, else a fresh run) or a path, which must exist.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        if checkpoint is None:
            raise ValueError(
                "resume=True continues the run saved in `checkpoint`, but no checkpoint "
                "path was given."
            )
        return checkpoint if os.path.exists(checkpoint) else None
    path = check.path("resume", resume)
    if not os.path.exists(path):
        raise FileNotFoundError(f"resume: there is no checkpoint file {path!r}.")
    return path


def resume(
    scheme: TwoStepScheme, path: str, num_steps: int, args: tuple, kwargs: dict
) -> tuple[TwoStepState, RunRecord]:
    """Read, check and restore the checkpoint at ``path`` for ``scheme.run``.

    Sets the scheme up for the model arguments, checks the checkpoint's structure against
    ``scheme._checkpoint_structure()`` (a :class:`CheckpointError` if it differs) and its
    state against ``scheme._state_template``; warns when ``scheme._checkpoint_options()``
    differ from the saved ones.  ``num_steps`` is the total of the run.

    Returns
    -------
    (TwoStepState, RunRecord)
        The saved state, and the run's record so far (its info, trace, draws, warnings
        shown and tracking cadence), which the resumed run continues.
    """
    # The observers write checkpoints, so they import this module: imported here.
    from vi_entropy.observers import RunRecord

    ck = load(path)
    paths = [leaf["path"] for leaf in ck.meta["state"]["leaves"]]
    if ".rng_key" not in paths:
        raise CheckpointError(path, "its state is not a TwoStepState.")
    key = ck.leaves[paths.index(".rng_key")]
    if not _is_key_like(key):
        raise CheckpointError(path, "its state has no valid PRNG key.")
    scheme._setup(random.PRNGKey(0), args, kwargs)
    changed = check_compatible(ck, scheme._checkpoint_structure(), scheme._checkpoint_options())
    state = restore_state(ck, scheme._state_template(key, args, kwargs))
    done = int(ck.meta["step"]) - int(ck.meta["run_start"])
    if num_steps < done:
        raise ValueError(
            f"num_steps: the run in checkpoint {path} has already done {done} outer "
            f"steps, more than num_steps={num_steps} (with resume, num_steps is the "
            "total of the run, not the steps left)."
        )
    if changed:
        warnings.warn(
            f"{type(scheme).__name__}: resuming checkpoint {path} with other options ("
            + "; ".join(changed)
            + "); the result will differ from that of an uninterrupted run.",
            VIEntropyWarning,
            stacklevel=3,
        )
    record = RunRecord(
        scheme,
        run_start=int(state.step) - done,
        done=done,
        prior_info=dict(ck.info),
        prior_trace=dict(ck.trace),
        draws={k: jax.tree.map(jnp.asarray, d) for k, d in ck.draws.items()},
        warned=set(ck.meta.get("warned", [])),
        # The tracking cadence is the interrupted run's, so the trace continues it.
        track_every=ck.meta.get("track_every"),
    )
    return state, record


def check_state(scheme: TwoStepScheme, state: Any, rng_key: Any, args: tuple, kwargs: dict) -> None:
    """``run``'s ``init_state`` must be a state of ``scheme``, for these model arguments.

    Sets the scheme up (with ``rng_key``, or the state's key) and raises ``TypeError``
    or ``ValueError`` naming what does not fit.
    """
    if not isinstance(state, TwoStepState):
        raise TypeError(
            "init_state: expected a TwoStepState (e.g. result.state of an earlier run), "
            f"got {type(state).__name__}."
        )
    if not _is_key_like(state.rng_key):
        raise TypeError("init_state: its rng_key is not a PRNG key.")
    scheme._setup(rng_key if rng_key is not None else state.rng_key, args, kwargs)
    template = scheme._state_template(state.rng_key, args, kwargs)
    problem = describe_mismatch(leaf_signature(template), leaf_signature(state))
    if problem is not None:
        raise ValueError(f"init_state: {problem}.")


def _is_key_like(x: Any) -> bool:
    """A PRNG key, typed or raw (``_is_key`` above: typed only)."""
    return hasattr(x, "dtype") and is_prng_key(x)
