"""Two-image sources: paired translation (pix2pix) and unpaired domains (CycleGAN).

``PairedSource`` gives ``{'source': uint8 [H, W, C], 'target': uint8 [H, W, C']}``, the
input and the wanted output of an image-to-image translation. ``load_paired_folder`` reads
the two pix2pix layouts (a directory or .zip; ``train/``, ``test/``, ``val/`` split folders
optional):
  * side by side: each file holds A | B, left half A, right half B (the pix2pix datasets,
    e.g. facades' 512x256 files); the width must be even;
  * ``A/`` and ``B/`` folders (``A/<split>/`` or ``<split>/A/``) whose files pair by name
    without extension (``A/train/1.png`` <-> ``B/train/1.jpg``).
``direction='AtoB'`` (pix2pix's default ``--direction AtoB``) makes A the source and B the
target; ``'BtoA'`` swaps them.

``UnpairedSource`` gives ``{'image_a', 'image_b'}``, one image of each of two domains of
different sizes ``nA``, ``nB``; ``len = max(nA, nB)`` (as the CycleGAN code), and in each pass
over that length every image of each domain comes at least once, each domain in its own
seeded permutation, so which ``image_b`` meets which ``image_a`` is not fixed: it changes with
the pass (``varies_by_pass``: the pipeline reads pass ``e`` at ``source[e * len + i]``).
With ``labels=True`` each domain's class comes along as ``label_a`` / ``label_b``.
``load_unpaired_folder`` reads the CycleGAN layout ``trainA/``, ``trainB/``, ``testA/``,
``testB/`` (split ``s`` -> ``sA/`` and ``sB/``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jgen.data import sources as src_lib

__all__ = ["PairedSource", "UnpairedSource", "load_paired_folder", "load_unpaired_folder"]

_SPLITS = ("train", "test", "val", "validation")
_DIRECTIONS = ("AtoB", "BtoA")


def _image_spec(images: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
  return tuple(images.shape[1:]), np.dtype(np.uint8)


class PairedSource:
  """In-memory paired source: ``source[i] = {'source': sources[i], 'target': targets[i]}``."""

  varies_by_pass = False

  def __init__(self, sources: np.ndarray, targets: np.ndarray, *,
               names: Sequence[str] | None = None):
    """Both are uint8 [N, H, W, C] (C may differ); ``names`` records where pair i came from."""
    sources = src_lib.as_nhwc_uint8(sources, "PairedSource sources")
    targets = src_lib.as_nhwc_uint8(targets, "PairedSource targets")
    if len(sources) != len(targets) or sources.shape[1:3] != targets.shape[1:3]:
      raise ValueError(f"PairedSource: sources {sources.shape} and targets {targets.shape} "
                       "must have the same number of images and the same height and width")
    self.sources, self.targets = sources, targets
    self.names = tuple(names) if names is not None else None
    self.image_shape = tuple(targets.shape[1:])
    self.num_classes = None
    self.element_spec = {"source": _image_spec(sources), "target": _image_spec(targets)}

  def __len__(self) -> int:
    return len(self.targets)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"source": self.sources[index], "target": self.targets[index]}

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return (f"PairedSource(n={len(self)}, source {self.element_spec['source'][0]}, "
            f"target {self.image_shape})")


@functools.lru_cache(maxsize=64)
def _permutation(seed: int, domain: int, pass_index: int, block: int, n: int) -> np.ndarray:
  return np.random.default_rng((seed, domain, pass_index, block)).permutation(n)


class UnpairedSource:
  """Two unpaired domains as one source: ``{'image_a': ..., 'image_b': ...}``.

  Example ``v`` (any ``v >= 0``; ``v < len`` is pass 0) is pass ``p = v // len``, position
  ``j = v % len``. Domain D of size ``nD`` gives its image number
  ``perm(seed, D, p, j // nD)[j % nD]``: consecutive blocks of ``nD`` positions are fresh
  permutations, so each pass covers every image of both domains, and the two domains' draws
  are independent (different permutations, redrawn every pass).
  """

  varies_by_pass = True

  def __init__(self, domain_a, domain_b, *, seed: int = 0, field: str = "image",
               labels: bool = False):
    """``domain_a``/``domain_b`` are sources whose ``field`` (default ``image``) is used.

    Both must have the same image shape (use ``load_source``'s ``image_size``/``channels``/
    ``resize`` to bring them to one). With ``labels``, each domain's ``label`` is kept as
    ``label_a`` / ``label_b`` (int32, the class of ``image_a`` / ``image_b``); both domains
    must have one.
    """
    for name, domain in (("A", domain_a), ("B", domain_b)):
      if len(domain) == 0:
        raise ValueError(f"UnpairedSource: domain {name} is empty")
      wanted = (field, "label") if labels else (field,)
      for key in wanted:
        if key not in domain.element_spec:
          raise ValueError(f"UnpairedSource: domain {name} has no field {key!r} "
                           f"(fields: {sorted(domain.element_spec)})")
    spec_a, spec_b = domain_a.element_spec[field], domain_b.element_spec[field]
    if spec_a != spec_b:
      raise ValueError(
          f"UnpairedSource: domain A has images {spec_a[0]} and domain B {spec_b[0]}; set "
          "--config.data.image_size, --config.data.channels and --config.data.resize=True to "
          "bring both to one shape")
    self.domains = (domain_a, domain_b)
    self.seed, self._field, self._labels = seed, field, labels
    self.image_shape = tuple(spec_a[0])
    self.num_classes = getattr(domain_a, "num_classes", None) if labels else None
    self.element_spec = {"image_a": spec_a, "image_b": spec_b}
    if labels:
      label = ((), np.dtype(np.int32))
      self.element_spec.update(label_a=label, label_b=label)

  def __len__(self) -> int:
    return max(len(d) for d in self.domains)

  def indices(self, index: int) -> tuple[int, int]:
    """The (domain A, domain B) image numbers of example ``index``."""
    index = int(index)
    if index < 0:
      raise IndexError(f"UnpairedSource index must be >= 0, got {index}")
    pass_index, j = divmod(index, len(self))
    out = []
    for domain, d in enumerate(self.domains):
      block, k = divmod(j, len(d))
      out.append(int(_permutation(self.seed, domain, pass_index, block, len(d))[k]))
    return out[0], out[1]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    a, b = self.indices(index)
    return self._example(self.domains[0][a], self.domains[1][b])

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    pairs = [self.indices(i) for i in indices]
    examples = [self._read(d, [p[d] for p in pairs]) for d in (0, 1)]
    return [self._example(a, b) for a, b in zip(*examples)]

  def _example(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    out = {"image_a": a[self._field], "image_b": b[self._field]}
    if self._labels:
      out["label_a"], out["label_b"] = np.int32(a["label"]), np.int32(b["label"])
    return out

  def _read(self, domain: int, indices: list[int]) -> list[dict[str, np.ndarray]]:
    source = self.domains[domain]
    if hasattr(source, "_getitems"):
      return list(source._getitems(indices))  # pylint: disable=protected-access
    return [source[i] for i in indices]

  def __repr__(self) -> str:
    return (f"UnpairedSource(nA={len(self.domains[0])}, nB={len(self.domains[1])}, "
            f"image_shape={self.image_shape})")


# ----------------------------------------------------------------------------- folders


def _open_tree(path: str, stack: contextlib.ExitStack
               ) -> tuple[dict[str, str], Callable[[str], np.ndarray]]:
  """({path from the data root: file name}, decoder of a file name) of a folder or zip."""
  files, files_rel, read = src_lib._list_images(path, stack)
  if not files:
    raise src_lib.DatasetUnavailableError(f"no image files in {path}")
  return dict(zip(files_rel, files)), lambda name: src_lib._decode(read(name))


def _subtree(tree: dict[str, Any], folder: str) -> dict[str, Any]:
  prefix = folder + "/"
  return {k[len(prefix):]: v for k, v in tree.items() if k.startswith(prefix)}


def _top_dirs(tree: dict[str, Any]) -> set[str]:
  return {k.split("/")[0] for k in tree if "/" in k}


def _pick_split(tree: dict[str, Any], split: str, what: str) -> dict[str, Any]:
  """``tree/<split>/`` when the tree has split folders, else the whole tree."""
  found = _top_dirs(tree) & set(_SPLITS)
  if not found:
    return tree
  if split not in found:
    raise src_lib.DatasetUnavailableError(
        f"{what} has split folders {sorted(found)} but no '{split}/'; choose one of them as "
        "the split.")
  return _subtree(tree, split)


def _stem(name: str) -> str:
  return name.rsplit(".", 1)[0]


def _match_ab(tree_a: dict[str, str], tree_b: dict[str, str], what: str
              ) -> tuple[list[str], list[str], list[str]]:
  by_stem_a = {_stem(k): v for k, v in tree_a.items()}
  by_stem_b = {_stem(k): v for k, v in tree_b.items()}
  if len(by_stem_a) != len(tree_a) or len(by_stem_b) != len(tree_b):
    raise ValueError(f"{what}: two files in A/ or B/ differ only in their extension; pairs "
                     "are matched by name without extension")
  only_a = sorted(set(by_stem_a) - set(by_stem_b))
  only_b = sorted(set(by_stem_b) - set(by_stem_a))
  if only_a or only_b:
    raise ValueError(
        f"{what}: A/ and B/ must hold files of the same names (extensions may differ); "
        f"{len(only_a)} only in A/ (e.g. {only_a[:5]}), {len(only_b)} only in B/ (e.g. "
        f"{only_b[:5]}). Remove or rename the unmatched files.")
  names = sorted(by_stem_a)
  return names, [by_stem_a[n] for n in names], [by_stem_b[n] for n in names]


def _split_side_by_side(images: list[np.ndarray], names: list[str], what: str
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
  lefts, rights = [], []
  for image, name in zip(images, names):
    width = image.shape[1]
    if width % 2:
      raise ValueError(
          f"{what}: {name} is {width} pixels wide, an odd width, so it cannot be split into "
          "A | B halves. Side-by-side pairs need an even width; or put the two images in A/ "
          "and B/ folders with matching names.")
    lefts.append(image[:, :width // 2])
    rights.append(image[:, width // 2:])
  return lefts, rights


def load_paired_folder(path: str, *, split: str = "train", direction: str = "AtoB",
                       image_size: int | None = None, channels: int | None = None,
                       resize: bool = False) -> PairedSource:
  """Decodes a pix2pix folder or zip (layouts in the module docstring) into memory.

  The shape policy of ``jgen.data.sources`` applies to each of ``source`` and ``target``
  (for side-by-side files: to each half). Pairs are in sorted name order.
  """
  if direction not in _DIRECTIONS:
    raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
  what = f"paired:{path} split '{split}'"
  with contextlib.ExitStack() as stack:
    tree, decode = _open_tree(path, stack)
    if not {"A", "B"} <= _top_dirs(tree):
      tree = _pick_split(tree, split, f"paired:{path}")
    if {"A", "B"} <= _top_dirs(tree):
      tree_a = _pick_split(_subtree(tree, "A"), split, f"paired:{path} A/")
      tree_b = _pick_split(_subtree(tree, "B"), split, f"paired:{path} B/")
      names, files_a, files_b = _match_ab(tree_a, tree_b, what)
      images_a = [decode(f) for f in files_a]
      images_b = [decode(f) for f in files_b]
    else:
      names = sorted(tree)
      images_a, images_b = _split_side_by_side([decode(tree[n]) for n in names], names, what)
  if not names:
    raise src_lib.DatasetUnavailableError(f"{what}: no images")
  shape_args = dict(image_size=image_size, channels=channels, resize=resize)
  stacked_a = src_lib.stack_images(images_a, what=f"{what} (A)", **shape_args)
  stacked_b = src_lib.stack_images(images_b, what=f"{what} (B)", **shape_args)
  if direction == "BtoA":
    stacked_a, stacked_b = stacked_b, stacked_a
  return PairedSource(stacked_a, stacked_b, names=names)


def load_unpaired_folder(path: str, *, split: str = "train", seed: int = 0,
                         image_size: int | None = None, channels: int | None = None,
                         resize: bool = False) -> UnpairedSource:
  """Decodes a CycleGAN folder or zip: domain A from ``<split>A/``, B from ``<split>B/``."""
  domains = []
  with contextlib.ExitStack() as stack:
    tree, decode = _open_tree(path, stack)
    decoded = {}
    for folder in (f"{split}A", f"{split}B"):
      sub = _subtree(tree, folder)
      if not sub:
        raise src_lib.DatasetUnavailableError(
            f"unpaired:{path} has no images in '{folder}/' for split '{split}' (its folders: "
            f"{sorted(_top_dirs(tree))}); the CycleGAN layout is trainA/ trainB/ testA/ testB/.")
      decoded[folder] = [decode(sub[n]) for n in sorted(sub)]
  for folder, images in decoded.items():
    stacked = src_lib.stack_images(images, what=f"unpaired:{path} {folder}/",
                                   image_size=image_size, channels=channels, resize=resize)
    domains.append(src_lib.ArraySource(stacked))
  return UnpairedSource(*domains, seed=seed)
