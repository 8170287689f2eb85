"""The device mesh: a `data` axis and an `fsdp` axis over every device of every process.

Data parallelism splits each global batch over all devices (both axes). With
``config.mesh.fsdp = k`` (fully sharded data parallelism, ZeRO-3 style) the train state --
params, EMAs, optimizer state, model state, frozen arrays -- is also split k ways: each leaf
along one dimension that k divides (the largest such; ties: the last), over the `fsdp` axis,
and replicated over `data`. Leaves that nothing divides, and leaves smaller than
`FSDP_MIN_SIZE` elements (biases, norms: sharding them saves nothing and costs a gather each),
stay replicated. XLA inserts the all-gathers before use and the reduce-scatters of the
gradients; the step function is the same one as without FSDP.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
FSDP_MIN_SIZE = 2 ** 12

__all__ = ["BATCH_AXES", "DATA_AXIS", "FSDP_AXIS", "FSDP_MIN_SIZE", "batch_sharding",
           "fsdp_from_config", "leaf_spec", "make_mesh", "replicated", "state_bytes_per_device",
           "state_shardings"]


def fsdp_from_config(config: Any) -> int:
  """`config.mesh.fsdp` (1 when the config has no mesh block)."""
  block = config.get("mesh") if hasattr(config, "get") else None
  return int(block.get("fsdp", 1)) if block else 1


def make_mesh(devices: list[jax.Device] | None = None, *, fsdp: int = 1) -> Mesh:
  """A (data, fsdp) mesh over `devices` (default: all devices of all processes).

  Raises:
    ValueError: `fsdp` is not a positive divisor of the number of devices.
  """
  devices = jax.devices() if devices is None else devices
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must be a positive divisor of the {n} devices; set "
                     f"--config.mesh.fsdp to one of "
                     f"{[k for k in range(1, n + 1) if n % k == 0]}")
  return Mesh(np.asarray(devices).reshape(n // fsdp, fsdp), BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (metrics, samples, small leaves)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: split along its leading axis over every device (the mesh's data and
  fsdp axes; a mesh of the caller's own may have only some of them)."""
  return NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.axis_names)))


def leaf_spec(shape: tuple[int, ...], fsdp: int, *, min_size: int = FSDP_MIN_SIZE) -> P:
  """The PartitionSpec of one state leaf: `fsdp` on its largest dimension that `fsdp` divides."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [(d, i) for i, d in enumerate(shape) if d % fsdp == 0]
  if not candidates:
    return P()
  _, axis = max(candidates)
  return P(*(FSDP_AXIS if i == axis else None for i in range(len(shape))))


def state_shardings(mesh: Mesh, tree: Any) -> Any:
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs) under `leaf_spec`."""
  fsdp = mesh.shape[FSDP_AXIS]
  return jax.tree.map(lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), fsdp)), tree)


def state_bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """Bytes of `tree`'s arrays held by each local device (what FSDP divides)."""
  total: dict[jax.Device, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in getattr(leaf, "addressable_shards", ()):
      total[shard.device] = total.get(shard.device, 0) + shard.data.nbytes
  return total
