"""Host-side caches a method writes into its work directory before training (DreamBooth's class
images, reflow's couples): an `.npz` written whole or not at all."""

from typing import Any

import jax
import numpy as np
from etils import epath


def write_npz(path: epath.Path, arrays: dict[str, Any]) -> None:
  """Writes `arrays` to `path` (process 0 only) through a temporary file renamed into place, so
  a run killed while writing leaves no partial cache that a restart would read."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  with tmp.open("wb") as f:
    np.savez(f, **arrays)
  tmp.rename(path)
