"""Orbax checkpoints of the train state: save every N steps, keep the last K, resume."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jgen.errors import CheckpointError

PyTree = Any


def _abstract(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs (with shardings where known) describing `tree`."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(leaf, tree)


class Checkpointer:
  """A thin wrapper over `orbax.checkpoint.CheckpointManager` for jgen train states.

  Orbax writes each step into a temporary directory and renames it when complete, so a run
  killed mid-save never leaves a half-written checkpoint in place of a good one; the loop
  only calls `save` after checking the state is finite.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    directory = epath.Path(os.path.abspath(directory) if "://" not in directory else directory)
    self.directory = directory
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, items: PyTree, *, force: bool = True) -> bool:
    """Saves `items` (a pytree of arrays) as checkpoint `step` (asynchronously)."""
    return self._manager.save(step, args=ocp.args.StandardSave(items), force=force)

  def restore(self, template: PyTree | None, *, step: int | None = None) -> PyTree:
    """Restores checkpoint `step` (default latest) into arrays shaped/sharded like `template`
    (None: as stored, on the default device).

    Raises:
      CheckpointError: no checkpoint, or one that does not match `template` or is unreadable.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint found in {self.directory}; train first "
                            "(--mode=train) or point --workdir at a run's directory")
    try:
      target = None if template is None else _abstract(template)
      return self._manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax raises many types (ValueError, KeyError, OSError ...)
      raise CheckpointError(
          f"cannot restore checkpoint step {step} from {self.directory}: "
          f"{type(e).__name__}: {e}\nThe checkpoint is corrupt or was written by a different "
          f"model/optimizer config. Steps present: {self.all_steps()}. Use the config the run "
          f"was trained with, or move the bad step directory away to resume from an earlier "
          f"one.") from e

  def wait(self):
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc):
    self.close()


@contextlib.contextmanager
def host_arrays_saved_in_place() -> Iterator[None]:
  """Within this block Orbax writes numpy leaves without first deep-copying them.

  Orbax copies every host array of a save up front so that an asynchronous save cannot see it
  change; for a synchronous save of arrays nobody writes to (a converted checkpoint's read-only
  views) that copy is one more copy of the whole model in memory (benchmarks/convert_memory.py
  measures it). The default handler is put back on exit.
  """
  handlers = ocp.type_handlers
  previous = handlers.get_type_handler(np.ndarray)
  handlers.register_type_handler(np.ndarray, handlers.NumpyHandler(deepcopy_host_arrays=False),
                                 override=True)
  try:
    yield
  finally:
    handlers.register_type_handler(np.ndarray, previous, override=True)
