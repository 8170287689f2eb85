"""Canvases of several examples side by side: a multi-object task made from any labelled source.

``Canvas(inner, count=2, seed=s)[e * N + i]`` (epoch e, N = ``len(inner)``) is

    image = [x_i | x_p1(i) | ... | x_p(count-1)(i)]        (along the width: [H, count W, C])
    label = y_i K^(count-1) + y_p1(i) K^(count-2) + ... + y_p(count-1)(i)

with K the inner source's classes and p_1 .. p_(count-1) permutations of 0..N-1 drawn from
``np.random.default_rng((seed, e, k))``: each epoch pairs every example with new partners
(``varies_by_pass``, see `jgen.data.pipeline`), as a pure function of (seed, epoch, index). The
label reads the digits left to right in base K (for the digits, label 73 is "a seven beside a
three"); `label_digits` inverts it. A source of a few subject images (``data.train_labels``,
``data.train_examples``) makes canvases of the subject beside itself.

Random flips would swap the slots the label names, so a canvas is never flipped
(`jgen.train.inputs.load_data` refuses ``data.random_flip`` with ``data.canvas``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jgen import errors

__all__ = ["Canvas", "label_digits"]


def label_digits(label: int, num_classes: int, count: int) -> tuple[int, ...]:
  """The inner labels of a canvas label, left to right: (y_0, ..., y_(count-1))."""
  if not 0 <= label < num_classes ** count:
    raise ValueError(f"canvas label {label} outside 0..{num_classes ** count - 1}")
  out = []
  for _ in range(count):
    label, y = divmod(label, num_classes)
    out.append(y)
  return tuple(reversed(out))


class Canvas:
  """`count` examples of a labelled source side by side (module docstring)."""

  varies_by_pass = True

  def __init__(self, inner, count: int = 2, *, seed: int = 0):
    if count < 2:
      raise errors.ConfigError(f"data.canvas={count}: a canvas holds 2 or more examples "
                               "(0 or 1 for none)")
    if "label" not in inner.element_spec or not getattr(inner, "num_classes", None):
      raise errors.ConfigError("data.canvas needs a labelled source (the canvas's label "
                               "names each example's class)")
    (h, w, c), dtype = inner.element_spec["image"]
    self.inner, self.count, self.seed = inner, count, seed
    self.inner_classes = int(inner.num_classes)
    self.num_classes = self.inner_classes ** count
    self.class_names = None
    self.image_shape = (h, w * count, c)
    self.element_spec = {"image": (self.image_shape, np.dtype(dtype)),
                         "label": ((), np.dtype(np.int32))}
    self._cached: tuple[int, np.ndarray | None] = (-1, None)

  def __len__(self) -> int:
    return len(self.inner)

  def _partners(self, epoch: int) -> np.ndarray:
    """int64 [count - 1, N]: the partners of each example in `epoch` (the last epoch's kept)."""
    if self._cached[0] != epoch:
      n = len(self.inner)
      self._cached = (epoch, np.stack([np.random.default_rng((self.seed, epoch, k)).permutation(n)
                                       for k in range(1, self.count)]))
    return self._cached[1]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(int(index), len(self.inner))
    parts = [self.inner[i]] + [self.inner[int(j)] for j in self._partners(epoch)[:, i]]
    label = 0
    for p in parts:
      label = label * self.inner_classes + int(p["label"])
    return {"image": np.concatenate([p["image"] for p in parts], axis=1),
            "label": np.int32(label)}

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return f"Canvas(count={self.count}, {self.inner!r})"
