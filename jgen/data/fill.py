"""``fill``: the ControlNet paper's fill50k task, regenerated offline at any resolution.

Zhang et al. (2023) train their first ControlNet on *fill50k*: a circle outline as the
condition and a prompt naming the fill colour, the target being that circle filled. Here each
example is drawn from ``np.random.default_rng((FILL_SEED, split, index))`` -- a fixed dataset,
the same on every machine and run:

  * radius ``r ~ U[0.15 S, 0.35 S]`` and centre ``(cy, cx)``, each ``~ U[r + 1, S - r - 1]``
    (the disc lies inside the ``S x S`` image);
  * pixel ``(i, j)`` (centre at ``(i + 1/2, j + 1/2)``) is in the disc when
    ``(i + 1/2 - cy)^2 + (j + 1/2 - cx)^2 <= r^2``;
  * the colour is one of `FILL_COLORS` (uniform), the label its index, on a white background.

Fields: ``image`` uint8 [S, S, 3] (the filled disc) and ``label`` int32 (the colour); 50,000
'train' and 1,000 'test' examples. The condition, a one-pixel white outline on black, is the
derived transform ``outline`` (`jgen.data.derived.outline_image`) of the image:
``derived:outline:fill`` gives ``{'source': outline, 'target': disc, 'label': colour}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jgen import errors

__all__ = ["BACKGROUND", "FILL_COLORS", "FILL_NUM", "FILL_SEED", "FillSource", "disc_image"]

# (name, sRGB); saturated hues chosen to be far apart and from the white background (the
# closest pair, red and orange, differs by 101 levels in RGB).
FILL_COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 30, 40)),
    ("orange", (245, 130, 20)),
    ("yellow", (240, 220, 10)),
    ("green", (30, 150, 60)),
    ("cyan", (20, 180, 200)),
    ("blue", (30, 60, 200)),
    ("purple", (120, 40, 160)),
    ("pink", (230, 100, 180)),
)
BACKGROUND = (255, 255, 255)
FILL_NUM = {"train": 50_000, "test": 1_000}
FILL_SEED = 50_000  # the first entry of every example's rng key (fill50k)
_SPLIT_IDS = {"train": 0, "test": 1}


def disc_image(size: int, cy: float, cx: float, r: float,
               color: Sequence[int]) -> np.ndarray:
  """uint8 [size, size, 3]: the disc of centre (cy, cx) and radius r (pixel units, see module)
  in ``color`` on `BACKGROUND`."""
  centers = np.arange(size) + 0.5
  inside = (centers[:, None] - cy) ** 2 + (centers[None, :] - cx) ** 2 <= r * r
  return np.where(inside[..., None], np.asarray(color, np.uint8),
                  np.asarray(BACKGROUND, np.uint8))


class FillSource:
  """The fill task (see module): ``source[i] = {'image': disc, 'label': colour}``.

  Attributes:
    split: 'train' or 'test'.
    size: the image side S.
    num_classes: ``len(FILL_COLORS)``; ``class_names`` their names.
  """

  varies_by_pass = False

  def __init__(self, split: str = "train", *, size: int = 32, channels: int | None = None):
    if split not in FILL_NUM:
      raise errors.ConfigError(
          f"fill has splits 'train' (50,000) and 'test' (1,000), not {split!r}")
    if channels not in (None, 3):
      raise errors.ConfigError(f"fill draws RGB discs (3 channels), not {channels}: set "
                               "--config.data.channels=3")
    if size < 8:
      raise errors.ConfigError(
          f"fill needs images of at least 8x8, got --config.data.image_size={size}")
    self.split, self.size = split, int(size)
    self.num_classes = len(FILL_COLORS)
    self.class_names = tuple(name for name, _ in FILL_COLORS)
    self.image_shape = (self.size, self.size, 3)
    self.element_spec = {"image": (self.image_shape, np.dtype(np.uint8)),
                         "label": ((), np.dtype(np.int32))}

  def __len__(self) -> int:
    return FILL_NUM[self.split]

  def geometry(self, index: int) -> tuple[float, float, float, int]:
    """(cy, cx, r, label) of example ``index``."""
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} fill examples")
    rng = np.random.default_rng((FILL_SEED, _SPLIT_IDS[self.split], index))
    s = self.size
    r = rng.uniform(0.15 * s, 0.35 * s)
    cy, cx = rng.uniform(r + 1, s - r - 1, size=2)
    return float(cy), float(cx), float(r), int(rng.integers(len(FILL_COLORS)))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    cy, cx, r, label = self.geometry(index)
    return {"image": disc_image(self.size, cy, cx, r, FILL_COLORS[label][1]),
            "label": np.int32(label)}

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return f"FillSource({self.split}, n={len(self)}, size={self.size})"
