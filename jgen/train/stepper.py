"""The train step over devices (`jit` on the mesh or `jax.pmap`: `jgen.train.parallel`) and
its non-finite watch.

The watch finds the first step whose metrics (loss, gradient norm ...) are non-finite on
device, carried through every step (no host sync); the host reads it where it syncs anyway
(log steps, saves) and raises `NonFiniteLossError`. `all_finite` guards each save.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen import data as jdata
from jgen.train import mesh as mesh_lib
from jgen.train import parallel
from jgen.train.checkpoint import Checkpointer
from jgen.train.method import Method
from jgen.train.sharding import jit_onto, with_shardings
from jgen.train.state import TrainState

__all__ = ["NonFiniteLossError", "Stepper", "all_finite", "raise_if_watched", "watch_init"]


class NonFiniteLossError(FloatingPointError):
  """The loss or the parameters became NaN/inf; the last good checkpoint is kept."""


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


all_finite = jax.jit(_all_finite)
"""Whether every float leaf of a tree is finite (one jitted reduction)."""


def watch_init(metric_shapes) -> dict[str, Any]:
  """The non-finite watch: the first step whose metrics were non-finite (-1: none yet) and
  those metrics' values."""
  return {"step": jnp.int32(-1),
          "metrics": {k: jnp.zeros(v.shape, jnp.float32) for k, v in metric_shapes.items()}}


def _watch_update(watch, metrics, step) -> dict[str, Any]:
  """`watch` with this step recorded if its metrics are the first non-finite ones (on device,
  inside the step)."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
  first = (watch["step"] < 0) & ~finite
  return {"step": jnp.where(first, jnp.asarray(step, jnp.int32), watch["step"]),
          "metrics": {k: jnp.where(first, metrics[k].astype(jnp.float32), v)
                      for k, v in watch["metrics"].items()}}


def raise_if_watched(watch, ckpt: Checkpointer) -> None:
  """Raises `NonFiniteLossError` if the (host) watch recorded a non-finite step."""
  step = int(watch["step"])
  if step < 0:
    return
  values = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in watch["metrics"].items()}
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  raise NonFiniteLossError(
      f"training became non-finite at step {step}: {bad} (that step's metrics: {values}); "
      f"nothing after it is saved. The last good checkpoint (step {ckpt.latest_step()}) in "
      f"{ckpt.directory} is kept. Lower --config.optim.lr, set --config.optim.grad_clip_norm, "
      "or check the data.")


class Stepper:
  """The train step of `config.parallel` and the state it carries (`jgen.train.parallel`).

  ``jit``: one program over the mesh (`jit_onto`, state and watch donated). ``pmap``: the same
  step under `jax.pmap` over the local devices, with the step key folded by replica, the
  gradients averaged in `TrainState.apply_gradients`, and metrics and float model state
  averaged after the step; `view` gives the mesh form (first replica) for checkpoints,
  evaluation and samples.
  """

  def __init__(self, method: Method, mode: str, mesh, state: TrainState, watch):
    self.mode = mode
    self._like = with_shardings(state, mesh)
    if mode == "jit":
      def step(state, batch, watch):
        state, metrics = method.train_step(state, batch, state.step_rng())
        return state, metrics, _watch_update(watch, metrics, state.step)

      self._fn = jit_onto(step, self._like, mesh, rest=2, donate_argnums=(0, 2))
      self.state = state
      self.watch = jax.device_put(watch, mesh_lib.replicated(mesh))
      return

    def pstep(state, batch, watch):
      rng = jax.random.fold_in(state.step_rng(), jax.lax.axis_index(parallel.AXIS))
      with parallel.replica_axis():
        state, metrics = method.train_step(state, batch, rng)
      metrics = jax.lax.pmean(metrics, parallel.AXIS)
      state = state.replace(model_state=parallel.mean_inexact(state.model_state))
      return state, metrics, _watch_update(watch, metrics, state.step)

    self._fn = jax.pmap(pstep, axis_name=parallel.AXIS, donate_argnums=(0, 2))
    self.state = parallel.replicate(state)
    self.watch = parallel.replicate(jax.device_get(watch))

  def step(self, batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """One step on this process's `batch`; returns its metrics (on device)."""
    placed = (jdata.shard_batch(batch, sharding) if self.mode == "jit"
              else parallel.split_batch(batch))
    self.state, metrics, self.watch = self._fn(self.state, placed, self.watch)
    return metrics

  def view(self) -> TrainState:
    """The state in mesh form (pmap: the first replica's copy)."""
    return self.state if self.mode == "jit" else parallel.unreplicate(self.state, self._like)

  def host(self, tree: Any) -> Any:
    """`tree` (metrics, the watch) on the host (pmap: the first replica's copy)."""
    if self.mode == "jit":
      return jax.device_get(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)
