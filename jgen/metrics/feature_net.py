"""The feature-network interface every sample metric (FID, KID, IS, P&R, PPL) is computed over.

A feature network maps uint8 images to features (and class logits where it has them). Images
are uint8 because the reference FID implementations quantize samples to uint8 before the
network; `to_uint8` converts jgen's [-1, 1] float samples exactly as the loop's PNG/npz writers
do, so a metric computed from memory equals one computed from the written files.

Two kinds exist:

* ``"inception"``: the TF 2015-12-05 FID Inception (`jgen.metrics.inception`), pool3 features
  (2048) and 1008 logits -- the network of published FID/IS figures.
* ``"domain:<dataset>"``: a small classifier trained by jgen in seconds on an offline dataset
  (`jgen.metrics.domain`); its figures are "domain FID"/"domain IS", only comparable to other
  domain figures of the same network, never to Inception FID.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jgen.train.writers import to_uint8 as _writers_to_uint8

__all__ = ["FeatureNet", "SPECS", "as_uint8", "cache_dir", "iterate_batches", "to_uint8"]

SPECS = ("inception", "domain:digits", "domain:mnist", "domain:fashion_mnist")


@runtime_checkable
class FeatureNet(Protocol):
  """Images -> features (and logits). Batches, resizes and shards internally."""

  name: str          # goes into cache file names, e.g. "inception-2015-12-05", "domain-digits"
  feature_dim: int   # 2048 for Inception pool3
  num_classes: int   # 1008 for Inception logits, 10 for a domain net; 0 without logits

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 NHWC images (any size, 1 or 3 channels) -> features [N, D] (+ logits [N, K])."""


def cache_dir(*parts: str) -> str:
  """``$JGEN_CACHE/<parts>`` (default ``~/.cache/jgen/<parts>``), created if missing."""
  root = os.environ.get("JGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jgen")
  path = os.path.join(root, *parts)
  os.makedirs(path, exist_ok=True)
  return path


def to_uint8(images: Any) -> np.ndarray:
  """Float images in [-1, 1] -> uint8 [0, 255], identical to `jgen.train.writers.to_uint8`."""
  return _writers_to_uint8(np.asarray(images))


def as_uint8(images: Any) -> np.ndarray:
  """uint8 images pass through; float images are taken to lie in [-1, 1] and quantized.

  Raises:
    ValueError: for non-NHWC input or float values far outside [-1, 1] (e.g. [0, 255] floats).
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected images [N, H, W, 1|3], got shape {images.shape}")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"images must be uint8 or float in [-1, 1], got dtype {images.dtype}")
  if images.size and (images.min() < -1.5 or images.max() > 1.5):
    raise ValueError(
        f"float images must lie in [-1, 1] (got range [{images.min():.3g}, {images.max():.3g}]);"
        " pass uint8 for [0, 255] data")
  return to_uint8(images)


def iterate_batches(images: np.ndarray | Iterable[np.ndarray], batch_size: int
                    ) -> Iterator[np.ndarray]:
  """Batches of at most `batch_size` uint8 images from an array or an iterable of arrays."""
  if isinstance(images, np.ndarray):
    for i in range(0, len(images), batch_size):
      yield as_uint8(images[i:i + batch_size])
    return
  for chunk in images:
    chunk = as_uint8(chunk)
    for i in range(0, len(chunk), batch_size):
      yield chunk[i:i + batch_size]
