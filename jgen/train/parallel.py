"""How the one train step runs over devices: `jit` on the mesh (default) or `jax.pmap`.

``config.parallel = "jit"`` (the default) jits the step over the (data, fsdp) mesh of
`jgen.train.mesh`: the batch is one global array split over the devices, the state is
replicated (or split over `fsdp`), and XLA inserts every collective. ``config.parallel =
"pmap"`` runs the *same* step function under `jax.pmap` over each process's local devices, as
pre-`jit` JAX code does (flax's and score_sde's examples): every device holds a full copy of
the state and its own slice of the batch, and the cross-device means are explicit:

* gradients: `TrainState.apply_gradients` (hence `gradient_step` and every adversarial update
  of `jgen.gan.updates`) replaces its gradients by ``lax.pmean`` over the replica axis while one
  is bound (`replica_axis`); a mean of per-device mean-loss gradients is the gradient of the
  global batch's mean loss, so an update equals the jitted one up to float reduction order;
* metrics: ``lax.pmean`` over replicas (the host logs device 0's copy);
* ``model_state``: its floating-point leaves are averaged over replicas after the step (the
  cross-replica batch-norm statistics of flax's examples; EMA statistics of batch *means*
  average exactly, while a state that accumulates batch *sums* -- the VQ codebook's EMA cluster
  counts -- keeps the per-replica scale); integer leaves are identical on every replica;
* randomness: the step key is folded with the replica index, so each device draws its own
  noise for its own examples. A stochastic method therefore matches the jit path in
  distribution, not bitwise; a deterministic one matches it to float tolerance (tested).

Checkpoints, evaluation and sampling always use the mesh form of the state (`unreplicate`),
so a run may switch between ``jit`` and ``pmap`` on resume. FSDP (``mesh.fsdp > 1``) needs
``jit``: pmap keeps full copies by definition.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["AXIS", "MODES", "mode_from_config", "replica_axis", "replica_mean", "replicate",
           "split_batch", "unreplicate"]

AXIS = "replicas"
MODES = ("jit", "pmap")
PyTree = Any

_BOUND: contextvars.ContextVar[str | None] = contextvars.ContextVar("jgen_replica_axis",
                                                                    default=None)


def mode_from_config(config: Any) -> str:
  """``config.parallel`` ("jit" when absent), checked.

  Raises:
    ValueError: an unknown mode, or pmap with ``mesh.fsdp > 1``.
  """
  mode = str(config.get("parallel", "jit"))
  if mode not in MODES:
    raise ValueError(f"parallel={mode!r}: use one of {MODES} (--config.parallel=jit)")
  fsdp = int(config.get("mesh", {}).get("fsdp", 1))
  if mode == "pmap" and fsdp > 1:
    raise ValueError(f"parallel='pmap' keeps a full copy of the state on every device, so it "
                     f"cannot shard it (mesh.fsdp={fsdp}); use --config.parallel=jit for FSDP")
  return mode


@contextlib.contextmanager
def replica_axis(name: str = AXIS) -> Iterator[None]:
  """Binds `name` as the replica axis while a pmapped function is traced (see `replica_mean`)."""
  token = _BOUND.set(name)
  try:
    yield
  finally:
    _BOUND.reset(token)


def replica_mean(tree: PyTree) -> PyTree:
  """``lax.pmean(tree)`` over the bound replica axis; `tree` itself when none is bound (jit)."""
  name = _BOUND.get()
  return tree if name is None else jax.lax.pmean(tree, name)


def mean_inexact(tree: PyTree, name: str = AXIS) -> PyTree:
  """`tree` with its floating-point leaves averaged over replica axis `name` (inside pmap)."""
  return jax.tree.map(
      lambda x: jax.lax.pmean(x, name) if jnp.issubdtype(x.dtype, jnp.inexact) else x, tree)


def replicate(tree: PyTree, num: int | None = None) -> PyTree:
  """A tree of mesh-replicated (or host) arrays -> stacked copies ``[num, ...]`` for pmap.

  `num` defaults to this process's local device count. The copies are broadcast views of
  one host copy, which `pmap` sends one slice to each device.
  """
  num = jax.local_device_count() if num is None else num

  def one(x):
    host = np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)
    return np.broadcast_to(host, (num, *host.shape))

  return jax.tree.map(one, tree)


def unreplicate(stacked: PyTree, like: PyTree) -> PyTree:
  """Stacked pmap outputs -> the first replica's copy, placed like `like` (a tree of arrays or
  ShapeDtypeStructs with shardings: the mesh form the checkpointer and samplers take)."""
  def one(x, ref):
    host = np.asarray(x.addressable_data(0))[0]
    return jax.make_array_from_callback(host.shape, ref.sharding, lambda idx: host[idx])

  return jax.tree.map(one, stacked, like)


def split_batch(batch: dict[str, np.ndarray], num: int | None = None
                ) -> dict[str, np.ndarray]:
  """A process's batch ``[B, ...]`` -> ``[num, B / num, ...]``, one slice per local device.

  Raises:
    ValueError: B is not a multiple of `num`.
  """
  num = jax.local_device_count() if num is None else num

  def one(x):
    x = np.asarray(x)
    if x.shape[0] % num:
      raise ValueError(f"a process batch of {x.shape[0]} does not split over its {num} local "
                       "devices; make data.batch_size a multiple of the device count")
    return x.reshape(num, x.shape[0] // num, *x.shape[1:])

  return jax.tree.map(one, batch)
