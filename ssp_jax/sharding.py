"""Device mesh and logical-axis sharding rules.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, ...); activations and batches
use `batch`, `seq`, and the KV cache `cache_batch`, `cache_seq`. A rule table maps each
logical name to mesh axes (`data`, `fsdp`, `tensor`) or None (replicated). A dimension whose
size is not divisible by its mesh axes is replicated instead, so one rule table serves any
model on any mesh.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Mapping[str, Any]  # logical name -> mesh axis name, tuple of names, or None

# Trainer: batch over data+fsdp, parameters FSDP-sharded on `embed`, tensor-parallel heads/mlp.
TRAIN_RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"), "seq": None,
    "vocab": "tensor", "embed": "fsdp", "heads": "tensor", "kv_heads": "tensor",
    "head_dim": None, "mlp": "tensor", "layers": None, "lora_rank": None,
    "cache_batch": ("data", "fsdp"), "cache_seq": None,
}


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves axis sizes for (data, fsdp, tensor); one size may be -1 (fill the rest)."""
    shape = [int(sizes.get(name, 1)) for name in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh: axis sizes must be positive or -1, got "
                         f"{dict(zip(MESH_AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh: {num_devices} devices cannot be split into "
                             f"{dict(zip(MESH_AXES, shape))}")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                         f"but {num_devices} are available")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types (compiler-propagated sharding)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)


def logical_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                 rules: Rules) -> PartitionSpec:
    """PartitionSpec for an array with logical `axes`; undivisible or reused axes replicate."""
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n not in used and mesh.shape[n] > 1)
        if names and size % math.prod(mesh.shape[n] for n in names):
            log.debug("replicating logical axis %s (size %d) over %s", name, size, names)
            names = ()
        used.update(names)
        spec.append(names[0] if len(names) == 1 else (names or None))
    return PartitionSpec(*spec)


def logical_sharding(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                     rules: Rules) -> NamedSharding:
    return NamedSharding(mesh, logical_spec(axes, shape, mesh, rules))


def axis_size(name: str, mesh: Mesh, rules: Rules) -> int:
    """How many devices a dimension with logical `name` is split over when divisible (the
    product of its mesh axes' sizes); e.g. the row-sharding size of `batch`."""
    target = rules.get(name)
    names = (target,) if isinstance(target, str) else tuple(target or ())
    return math.prod(mesh.shape[n] for n in names)


def mesh_of(tree: Any) -> Mesh:
    """The mesh a pytree of arrays lives on: that of its first NamedSharding leaf, else a
    one-device (1, 1, 1) mesh on its first leaf's device."""
    leaves = jax.tree.leaves(tree)
    for x in leaves:
        if isinstance(getattr(x, "sharding", None), NamedSharding):
            return x.sharding.mesh
    device = min(leaves[0].devices(), key=lambda d: d.id) if leaves else jax.devices()[0]
    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, [device])


def constrain(x: jax.Array, axes: Sequence[str | None], rules: Rules = TRAIN_RULES) -> jax.Array:
    """Pins activation `x` to its logical `axes` under the mesh set with `jax.set_mesh` (a
    no-op without one), so XLA keeps e.g. rows sharded and gathers FSDP weights instead."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(axes, x.shape, mesh, rules))


def param_logical_axes(model: nnx.Module) -> dict:
    """Nested dict (the `Transformer.params()` layout) of each parameter's logical axes."""
    state = nnx.state(model, nnx.Param)
    axes = jax.tree.map(lambda v: v.get_metadata()["logical_axes"], state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(axes)


def put_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds in full: each process supplies
    only the shards of its own devices (so it also works when the mesh spans processes)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-process) array on every host."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
