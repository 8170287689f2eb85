"""Every file the loop writes: PNG grids, .npz, JSON, TensorBoard scalars (and stdout logs).

All go through `etils.epath` (the path layer Orbax uses for checkpoints), so a gs:// work
directory is written like a local one. TensorBoard event files of a non-local work directory
are written to a local staging directory and copied over with epath at most every
`sync_secs` seconds and at `close` (tensorboardX's own cloud writers need extra SDKs).
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath
from PIL import Image

log = logging.getLogger("jgen")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Maps float images in [-1, 1] to uint8 [0, 255] (clipping outside values; NaN -> 0)."""
  images = np.nan_to_num(np.asarray(images, np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, *, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tiles uint8 images [N, H, W, C] into one [rows*(H+pad)+pad, ...] uint8 image."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"image_grid expects [N, H, W, C], got shape {images.shape}")
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, k = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + k * (w + pad):pad + k * (w + pad) + w] = images[i]
  return grid


def save_image_grid(images: np.ndarray, path: str, *, ncol: int | None = None,
                    upscale: int = 1) -> str:
  """Writes float images in [-1, 1] (or uint8) [N, H, W, C] as one PNG grid; returns path."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  grid = image_grid(images, ncol=ncol)
  if upscale > 1:
    grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format="PNG")
  _write_bytes(path, buffer.getvalue())
  return path


def _write_bytes(path: str, data: bytes) -> None:
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(data)


def save_npz(path: str, **arrays: np.ndarray) -> str:
  """Writes `arrays` as one compressed .npz at `path` (local or gs://); returns path."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  _write_bytes(path, buffer.getvalue())
  return path


def save_json(path: str, obj: Any) -> str:
  """Writes `obj` as indented, key-sorted JSON at `path` (local or gs://); returns path."""
  _write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())
  return path


class MetricWriter:
  """TensorBoard event files (tensorboardX, no TensorFlow needed) plus stdout logging.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, logdir: str, *, enabled: bool = True, sync_secs: float = 60.0):
    self._tb = None
    self._remote = epath.Path(logdir) if "://" in str(logdir) else None
    self._staging = None
    self._sync_secs, self._synced = sync_secs, time.time()
    if enabled:
      from tensorboardX import SummaryWriter  # noqa: PLC0415 (process 0 only)
      if self._remote is not None:
        self._staging = tempfile.mkdtemp(prefix="jgen_events_")
      self._tb = SummaryWriter(self._staging or logdir, flush_secs=30)

  def _sync(self) -> None:
    """Copies the staged event files to the non-local logdir (each file whole: they grow)."""
    if self._staging is None:
      return
    self._remote.mkdir(parents=True, exist_ok=True)
    for local in epath.Path(self._staging).iterdir():
      (self._remote / local.name).write_bytes(local.read_bytes())
    self._synced = time.time()

  def write_scalars(self, step: int, scalars: Mapping[str, float], *, echo: bool = False):
    if self._tb is None:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), step)
    if self._staging is not None and time.time() - self._synced > self._sync_secs:
      self.flush()
    if echo:
      log.info("step %d: %s", step, ", ".join(f"{k}={float(v):.5g}" for k, v in scalars.items()))

  def write_images(self, step: int, name: str, images: np.ndarray):
    """Logs float images in [-1, 1] as one grid image."""
    if self._tb is None:
      return
    self._tb.add_image(name, image_grid(to_uint8(images)), step, dataformats="HWC")

  def flush(self):
    if self._tb is not None:
      self._tb.flush()
      self._sync()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      if self._staging is not None:
        self._sync()
        shutil.rmtree(self._staging, ignore_errors=True)
      self._tb = None
