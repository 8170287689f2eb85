"""Logging: scalars to stdout and TensorBoard event files, image grids as PNG."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping

import numpy as np
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
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = images[i]
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
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)
  return path


class MetricWriter:
  """TensorBoard event files (tensorboardX, no TensorFlow needed) plus stdout logging.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, logdir: str, *, enabled: bool = True):
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float], *, echo: bool = False):
    if self._tb is None:
      return
    for name, value in scalars.items():
      self._tb.add_scalar(name, float(value), step)
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

  def close(self):
    if self._tb is not None:
      self._tb.close()
