"""Unpaired derived domains: a CycleGAN task with a known answer, made from any image source.

``unpaired_derived:TRANSFORM:SPEC`` takes the images of ``SPEC`` as domain A and their
``TRANSFORM`` (``jgen.data.derived``: ``edges`` = Sobel edge maps, ``grayscale``,
``outline``, ``downsample:K``, ``mask:...``) as domain B, and splits by what a split is for:

* the **train** split (``'train'``, or a tfds slice of it such as ``'train[:80%]'``) is
  unpaired: domain A is the images of the first half of the split (``ceil(n / 2)`` images,
  indices ``0 .. ceil(n/2) - 1``), domain B the transforms of the second half (the rest), so
  no image is ever seen with its own transform; the two are combined by ``UnpairedSource``
  (its seeded permutations, a new pairing every pass). Fields ``image_a``, ``image_b`` (uint8
  [H, W, C]) and, when ``SPEC`` has labels, ``label_a`` / ``label_b`` (int32, the class of
  each image; they differ, the images being unrelated).
* every other split (``'test'``) is paired, for measuring the translation: example ``i`` is
  image ``i`` and its own transform, ``image_a`` = image, ``image_b`` = TRANSFORM(image), with
  ``label`` (when ``SPEC`` has one; the class both share) and ``paired`` (bool, always True;
  float32 1.0 in batches), the flag that tells a method ``image_b`` is the true counterpart
  of ``image_a``. Other fields of ``SPEC`` (``attributes``, a mask's ``mask``) are kept.

Keep ``data.random_flip`` off for the paired split: the pipeline flips ``image_a`` and
``image_b`` with a coin each, which would break the pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jgen.data import derived as derived_lib
from jgen.data import paired as paired_lib

__all__ = ["IndexSubset", "TransformedImages", "TruePairSource", "is_unpaired_split",
           "unpaired_derived"]


def is_unpaired_split(split: str) -> bool:
  """True for the train split (``'train'``, ``'train[...]'``): that one is unpaired."""
  return split.split("[")[0] == "train"


def _read(source, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
  if hasattr(source, "_getitems"):
    return list(source._getitems(list(indices)))  # pylint: disable=protected-access
  return [source[i] for i in indices]


class IndexSubset:
  """The examples ``indices`` of ``inner``, in that order: ``subset[j] = inner[indices[j]]``."""

  varies_by_pass = False

  def __init__(self, inner, indices: Sequence[int]):
    indices = np.asarray(indices, np.int64)
    if indices.ndim != 1 or (len(indices) and (indices.min() < 0
                                                or indices.max() >= len(inner))):
      raise ValueError(f"IndexSubset: indices must be a list in 0..{len(inner) - 1}")
    self.inner, self.indices = inner, indices
    self.element_spec = dict(inner.element_spec)
    self.image_shape = inner.image_shape
    self.num_classes = getattr(inner, "num_classes", None)
    self.class_names = getattr(inner, "class_names", None)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self.inner[int(self.indices[int(index)])]

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return _read(self.inner, [int(self.indices[int(i)]) for i in indices])

  def __repr__(self) -> str:
    return f"IndexSubset(n={len(self)}, {self.inner!r})"


class TransformedImages:
  """``inner`` with ``image`` replaced by ``TRANSFORM(image)``, the other fields kept."""

  varies_by_pass = False

  def __init__(self, inner, transform: str, *, seed: int = 0):
    self.pairs = derived_lib.DerivedPairSource(inner, transform, seed=seed)
    spec = dict(self.pairs.element_spec)
    self.element_spec = {"image": spec.pop("source"), **spec}
    self.element_spec.pop("target")
    self.image_shape = self.pairs.image_shape
    self.num_classes = self.pairs.num_classes
    self.class_names = self.pairs.class_names

  @staticmethod
  def _rename(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: v for k, v in example.items() if k not in ("source", "target")}
    return {"image": example["source"], **out}

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._rename(self.pairs[index])

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self._rename(ex) for ex in _read(self.pairs, indices)]

  def __repr__(self) -> str:
    return f"TransformedImages({self.pairs.transform}, {self.pairs.inner!r})"


class TruePairSource:
  """``{'image_a': image, 'image_b': TRANSFORM(image), 'paired': True, ...}`` (the module's
  paired split), ``label`` and the other fields of ``inner`` kept."""

  def __init__(self, inner, transform: str, *, seed: int = 0):
    self.pairs = derived_lib.DerivedPairSource(inner, transform, seed=seed)
    spec = dict(self.pairs.element_spec)
    self.element_spec = {"image_a": spec.pop("target"), "image_b": spec.pop("source"), **spec,
                         "paired": ((), np.dtype(np.bool_))}
    self.varies_by_pass = self.pairs.varies_by_pass
    self.image_shape = self.pairs.image_shape
    self.num_classes = self.pairs.num_classes
    self.class_names = self.pairs.class_names

  @staticmethod
  def _rename(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: v for k, v in example.items() if k not in ("source", "target")}
    return {"image_a": example["target"], "image_b": example["source"], **out,
            "paired": np.bool_(True)}

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._rename(self.pairs[index])

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self._rename(ex) for ex in _read(self.pairs, indices)]

  def __repr__(self) -> str:
    return f"TruePairSource({self.pairs.transform}, {self.pairs.inner!r})"


def unpaired_derived(inner, transform: str, *, paired: bool, seed: int = 0):
  """The module's source over the images of ``inner``.

  Args:
    inner: a source with an ``image`` field (``label`` optional).
    transform: one of ``jgen.data.derived.TRANSFORMS``: what domain B is.
    paired: False: the unpaired train form (disjoint halves); True: the true pairs.
    seed: the unpaired permutations' seed (and ``mask:box``'s).

  Returns:
    An ``UnpairedSource`` of ``IndexSubset`` (first half, A) and ``TransformedImages`` of the
    second half (B), or a ``TruePairSource``.

  Raises:
    ValueError: fewer than 2 images (no two disjoint halves), or no ``image`` field.
  """
  if "image" not in inner.element_spec:
    raise ValueError(f"unpaired_derived:{transform} needs a source with an 'image' field; "
                     f"this one has {sorted(inner.element_spec)}")
  if paired:
    return TruePairSource(inner, transform, seed=seed)
  n = len(inner)
  if n < 2:
    raise ValueError(f"unpaired_derived:{transform} needs at least 2 images to split into "
                     f"two disjoint domains, got {n}")
  cut = (n + 1) // 2
  domain_a = IndexSubset(inner, range(cut))
  domain_b = TransformedImages(IndexSubset(inner, range(cut, n)), transform, seed=seed)
  labels = "label" in inner.element_spec
  return paired_lib.UnpairedSource(domain_a, domain_b, seed=seed, labels=labels)
