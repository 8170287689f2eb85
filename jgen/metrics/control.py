"""Agreement of samples with their structural conditions: edge IoU, disc IoU, colour accuracy.

Edges (a ControlNet on ``derived:edges:...``): a condition is the Sobel magnitude / 4 of an
image (`jgen.data.derived.sobel_edges`). The same operator on a sample gives the sample's
edges; both are binarised at ``threshold`` (uint8 levels) and compared per image,

    IoU(A, B) = |A & B| / |A | B|,

averaged over the held-out conditions.

Fill (a ControlNet on ``derived:outline:fill``, `jgen.data.fill`): the disc of an image is
the set of pixels some channel of which differs from the image's background colour by more than
`DISC_TOLERANCE` levels, the background colour being the per-channel median of the image's
border pixels (white in the data, where every disc keeps a pixel's margin; a sample's may be
tinted, which is not what the ControlNet is asked to fix); the *disc IoU* compares a sample's
disc with the held-out target's (the disc the outline bounds), and the *colour accuracy* is
the fraction of samples whose mean colour over their own disc is nearest (in RGB) to the
label's colour among `FILL_COLORS` (a sample with no disc counts as wrong).

The controlled row uses the ControlNet's sample for each condition (and its label); the
uncontrolled row the base model's own samples (the same number, for the same labels when the
base is conditional), which is what agreement by chance looks like. `jgen.cli.control` draws
them from trained runs and prints the table.
"""

from __future__ import annotations

import numpy as np

from jgen.data.derived import sobel_edges
from jgen.data.fill import FILL_COLORS
from jgen.train.writers import to_uint8

__all__ = ["FILL_SOURCE", "binary_edges", "disc_masks", "fill_colors", "fill_scores", "iou",
           "scores"]

FILL_SOURCE = "derived:outline:fill"
# Half the smallest max-channel contrast of a fill colour with the white background (pink's
# green channel, 155 levels): a sample's soft edge pixel counts as disc from halfway.
DISC_TOLERANCE = 77


def binary_edges(images: np.ndarray, threshold: int = 64) -> np.ndarray:
  """bool [N, H, W]: Sobel magnitude / 4 of uint8 images [N, H, W, C] above `threshold`."""
  return np.stack([sobel_edges(np.asarray(x))[..., 0] > threshold for x in images])


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over images of |a & b| / |a | b| for bool maps [N, H, W] (an empty union counts 1)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  inter = (a & b).reshape(len(a), -1).sum(1)
  union = (a | b).reshape(len(a), -1).sum(1)
  return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def disc_masks(images: np.ndarray, tolerance: int = DISC_TOLERANCE) -> np.ndarray:
  """bool [N, H, W]: the pixels of uint8 [N, H, W, 3] images off their border's median colour."""
  x = np.asarray(images, np.int16)
  border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
  background = np.median(border, axis=1)[:, None, None]          # [N, 1, 1, 3]
  return np.abs(x - background).max(axis=-1) > tolerance


def fill_colors(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """int [N]: index in `FILL_COLORS` nearest to each image's mean colour on its mask (-1
  where the mask is empty)."""
  palette = np.asarray([rgb for _, rgb in FILL_COLORS], np.float64)
  m = np.asarray(masks, np.float64)[..., None]
  count = m.sum(axis=(1, 2))
  mean = (np.asarray(images, np.float64) * m).sum(axis=(1, 2)) / np.maximum(count, 1)
  nearest = np.linalg.norm(mean[:, None] - palette[None], axis=-1).argmin(axis=1)
  return np.where(count[:, 0] > 0, nearest, -1)


def fill_scores(samples: np.ndarray, targets: np.ndarray, labels: np.ndarray
                ) -> dict[str, float]:
  """Disc IoU with the targets and colour accuracy for the labels (uint8 images, see module)."""
  masks = disc_masks(samples)
  return {"disc_iou": iou(masks, disc_masks(targets)),
          "color_accuracy": float(np.mean(fill_colors(samples, masks) == np.asarray(labels)))}


def scores(samples: np.ndarray, inputs: dict[str, np.ndarray], fill: bool, threshold: int
           ) -> dict[str, float]:
  """The task's scores of samples in [-1, 1] for the held-out `inputs` (``source``
  conditions in [-1, 1]; for `fill` also ``target`` [N, 1, H, W, C] and ``label``):
  ``edge_iou``, or ``disc_iou`` and ``color_accuracy``."""
  if fill:
    return fill_scores(to_uint8(samples), to_uint8(inputs["target"][:, 0]), inputs["label"])
  hint_edges = to_uint8(inputs["source"])[..., 0] > threshold
  return {"edge_iou": iou(binary_edges(to_uint8(samples), threshold), hint_edges)}
