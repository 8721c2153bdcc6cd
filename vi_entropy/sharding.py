"""Spreading a scheme's work over several devices with :mod:`jax.sharding`.

Every scheme has one axis of independent work: the chains of local entropy's MCMC
samplers, the proposals of importance sampling, the particles of heat regularization.
With a :class:`~jax.sharding.Mesh` of ``n`` devices and one named axis, that axis is split
into ``n`` blocks (``NamedSharding(mesh, PartitionSpec("batch"))``), one per device,
through ``jax.lax.with_sharding_constraint`` inside the compiled step; everything else
(the centre, the SVI parameters, the data) is replicated.  XLA's partitioner then runs
each device's block locally; only the reductions (the mean of the draws, the ELBO
gradient) cross devices.  Optionally (``shard_data=True``) the rows of the model's data
arguments are split instead: data parallelism, for few chains and much data.

Placement never changes what is computed: with JAX's partitionable Threefry (the default)
random draws do not depend on the sharding, so one device and many give the same result
up to the order of floating-point reductions.

Multi-host: after ``jax.distributed.initialize()``, ``jax.devices()`` lists the devices of
every process and the default mesh spans them all; every process runs the same script
(see ``docs/scaling.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"
"""Name of the mesh axis that chains, proposals, particles (or data rows) are split over."""


def make_mesh(devices: Any = None) -> Mesh | None:
    """The one-axis mesh a scheme shards over, or ``None`` for a single device.

    Parameters
    ----------
    devices : None, int, sequence of devices or Mesh
        ``None``: all devices JAX sees (``jax.devices()``: the local ones, or every
        process's after ``jax.distributed.initialize()``) when there is more than one,
        else no sharding.  An int ``n``: the first ``n`` of them (``1``: no sharding).
        A sequence of devices: those.  A ``Mesh``: used as it is; arrays are split
        over all of its axes together.
    """
    if isinstance(devices, Mesh):
        return devices
    if devices is None:
        found = jax.devices()
    elif isinstance(devices, bool):
        raise TypeError("devices: expected None, an int, a sequence of devices or a Mesh.")
    elif isinstance(devices, int | np.integer):
        found = jax.devices()
        if not 1 <= devices <= len(found):
            raise ValueError(
                f"devices: expected an int in [1, {len(found)}] (the devices JAX sees), "
                f"got {devices}."
            )
        found = found[: int(devices)]
    elif isinstance(devices, Sequence) and all(isinstance(d, jax.Device) for d in devices):
        found = list(devices)
        if not found:
            raise ValueError("devices: the sequence of devices is empty.")
    else:
        raise TypeError(
            "devices: expected None, an int, a sequence of jax devices or a "
            f"jax.sharding.Mesh, got {type(devices).__name__}."
        )
    if len(found) < 2:
        return None
    # Mesh(...) rather than jax.make_mesh: the latter defaults to explicit axis types,
    # which change the typing rules of every op; automatic axes leave the code as it is.
    return Mesh(np.asarray(found), (AXIS,))


class BatchSharding:
    """Placement of a scheme's arrays on a mesh: a batch axis split, the rest replicated.

    ``constrain(tree, size)`` (inside ``jit``) splits the leading axis of every leaf
    whose leading dimension is ``size`` over the mesh; ``replicate(tree)`` and
    ``put(tree)`` (outside ``jit``) place arrays on every device.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> sh = BatchSharding.for_devices(1)   # one device: every method is the identity
    >>> bool(sh.constrain(jnp.ones((4, 3)), 4).shape == (4, 3))
    True
    """

    def __init__(self, mesh: Mesh | None) -> None:
        self.mesh = mesh

    @classmethod
    def for_devices(cls, devices: Any = None) -> BatchSharding:
        return cls(make_mesh(devices))

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    @property
    def active(self) -> bool:
        return self.mesh is not None

    def batched(self) -> NamedSharding | None:
        """Leading axis split over the mesh, the other axes whole."""
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))

    def replicated(self) -> NamedSharding | None:
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec())

    def constrain(self, tree: Any, size: int) -> Any:
        """Split leaves with leading dimension ``size`` over the mesh (inside ``jit``).

        ``size`` need not be a multiple of the number of devices (XLA pads).
        """
        if self.mesh is None:
            return tree
        spec = self.batched()

        def one(x: Any) -> Any:
            if hasattr(x, "shape") and len(x.shape) >= 1 and x.shape[0] == size:
                return jax.lax.with_sharding_constraint(x, spec)
            return x

        return jax.tree.map(one, tree)

    def constrain_replicated(self, tree: Any) -> Any:
        """Keep every leaf whole on every device (inside ``jit``)."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, self.replicated())

    def constrain_rows(self, tree: Any) -> Any:
        """Split the leading axis of every array with at least one axis (inside ``jit``)."""
        if self.mesh is None:
            return tree
        spec = self.batched()
        return jax.tree.map(
            lambda x: (
                jax.lax.with_sharding_constraint(x, spec)
                if hasattr(x, "shape") and len(x.shape) >= 1
                else x
            ),
            tree,
        )

    def put(self, tree: Any, rows: bool = False) -> Any:
        """Place the arrays of ``tree`` (``None`` leaves kept) on the mesh (outside ``jit``).

        Whole on every device; with ``rows``, arrays whose leading dimension is a multiple
        of the number of devices are split by rows (the others stay whole and are split
        inside the compiled step, where uneven splits are allowed).
        """
        if self.mesh is None:
            return tree
        n = self.num_devices

        def one(x: Any) -> Any:
            if x is None:
                return None
            shape = np.shape(x)
            split = rows and len(shape) >= 1 and shape[0] % n == 0
            sharding = self.batched() if split else self.replicated()
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            if jax.process_count() > 1 and not (
                isinstance(x, jax.Array) and not x.is_fully_addressable
            ):
                # Multi-controller: every process holds the same host value and supplies
                # the shards of its own devices.
                host = np.asarray(x)
                return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
            return jax.device_put(x, sharding)

        return jax.tree.map(one, tree, is_leaf=lambda x: x is None)

    def vmap(self, size: int) -> Any:
        """``(fn, xs) -> vmap(fn)(xs)`` with ``xs`` split over the mesh first.

        Suitable as NumPyro's ``Trace_ELBO(vectorize_particles=...)``: the particles'
        keys are split, and with them all the work of each particle.
        """

        def vmapped(fn: Any, xs: Any) -> Any:
            return jax.vmap(fn)(self.constrain(xs, size))

        return vmapped
