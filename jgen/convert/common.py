"""Mapping PyTorch state dicts onto jgen parameter trees, one leaf at a time, with a full report.

A converter reads a torch-named state dict (``"down_blocks.0.resnets.1.conv1.weight"`` ->
array) and fills the Flax tree of a jgen module. `StateDict` hands out each source array once
(`take`) and remembers what was asked for and never found; `Tree` receives the converted leaves
at slash paths (``"down_0_block_1/conv1/kernel"``) together with the source name each came from.
`Tree.finish` then compares the result with the module's expected parameter shapes
(``jax.eval_shape(module.init, ...)``) and raises one `ConversionError` that lists every missing
source name, every source name left unused (unexpected) and every mis-shaped leaf, so a
checkpoint of another architecture is reported in full, not one key at a time.

Layouts: a torch ``Conv2d`` weight is ``[O, I, kh, kw]`` and a Flax ``Conv`` kernel
``[kh, kw, I, O]`` (`conv_kernel`); a torch ``Linear`` weight is ``[O, I]`` and a Flax ``Dense``
kernel ``[I, O]`` (`dense_kernel`); a 1x1 ``Conv2d`` used as a linear map (LDM attention, SD 1.x
``proj_in``) becomes a Dense kernel by dropping its unit spatial axes. Norms map ``weight`` ->
``scale``; embeddings ``weight`` -> ``embedding``. Arrays are converted to float32 unless a
dtype is given (fp16 / bf16 checkpoints are widened leaf by leaf, so the full tree is never held
twice in the narrow dtype).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from jgen import errors

PyTree = Any

__all__ = ["AnyName", "ConversionError", "Renamed", "StateDict", "Tree", "conv_kernel",
           "dense_kernel", "flatten_tree", "unflatten_tree"]


class ConversionError(errors.ConversionError):
  """A state dict does not fit the module it is converted into (the `jgen.errors` kind, with
  the names that do not fit).

  Attributes:
    missing: source names the module needs and the file lacks.
    unexpected: source names in the file that nothing read.
    misshaped: ``(source name, jgen path, got shape, expected shape)`` per leaf of the wrong shape.
  """

  def __init__(self, what: str, missing: list[str], unexpected: list[str],
               misshaped: list[tuple[str, str, tuple, tuple]], *, hint: str | None = None):
    self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
    lines = [f"{what}: the checkpoint does not match this architecture "
             f"({len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} "
             "mis-shaped names)."]
    for title, items in (("missing", missing), ("unexpected", unexpected)):
      if items:
        shown = items[:25]
        lines.append(f"  {title}: " + ", ".join(shown)
                     + (f" ... and {len(items) - len(shown)} more" if len(items) > 25 else ""))
    for name, path, got, want in misshaped[:25]:
      lines.append(f"  mis-shaped: {name} -> {path}: got {got}, the module expects {want}")
    lines.append("  " + (hint or "Check that the file is the model you meant (SD 1.x vs 2.x, a "
                         "U-Net vs a ControlNet, a DDPM vs an LDM U-Net) and that its "
                         "config.json matches it."))
    super().__init__("\n".join(lines))


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """torch Conv2d ``[O, I, kh, kw]`` -> Flax Conv ``[kh, kw, I, O]``."""
  if w.ndim != 4:
    raise ValueError(f"a Conv2d weight has 4 axes [O, I, kh, kw], got shape {w.shape}")
  return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
  """torch Linear ``[O, I]`` (or a 1x1 Conv2d ``[O, I, 1, 1]``) -> Flax Dense ``[I, O]``."""
  if w.ndim == 4 and w.shape[2:] == (1, 1):
    w = w[:, :, 0, 0]
  if w.ndim != 2:
    raise ValueError(f"a Linear weight has 2 axes [O, I], got shape {w.shape}")
  return np.transpose(w)


class StateDict(Mapping):
  """A read-once view of a torch state dict (values may be lazy: read on access).

  Args:
    arrays: name -> array (or any mapping whose ``__getitem__`` loads the array, as a
      memory-mapped safetensors file does).
    prefix: prepended to every name asked for (``"model.diffusion_model."``).
  """

  def __init__(self, arrays: Mapping[str, Any], prefix: str = ""):
    self._arrays = arrays
    self._prefix = prefix
    self.used: set[str] = set()
    self.missing: list[str] = []

  def __getitem__(self, name: str) -> Any:
    return self._arrays[self._prefix + name]

  def __iter__(self) -> Iterator[str]:
    n = len(self._prefix)
    return (k[n:] for k in self._arrays if k.startswith(self._prefix))

  def __len__(self) -> int:
    return sum(1 for _ in self)

  @property
  def prefix(self) -> str:
    return self._prefix

  def has(self, name: str) -> bool:
    return self._prefix + name in self._arrays

  def take(self, name: str) -> np.ndarray | None:
    """The array `name` (marked used), or None (recorded as missing)."""
    full = self._prefix + name
    if full not in self._arrays:
      self.missing.append(full)
      return None
    self.used.add(full)
    return np.asarray(self._arrays[full])

  def unused(self) -> list[str]:
    """Source names under the prefix that nothing took."""
    return sorted(self._prefix + k for k in self if self._prefix + k not in self.used)


class Tree:
  """The converted leaves of one module, by slash path, with the source name of each.

  Args:
    source: the state dict leaves are taken from.
    dtype: the dtype of every converted leaf (float32 by default).
  """

  def __init__(self, source: StateDict, dtype: Any = np.float32):
    self.source = source
    self.dtype = np.dtype(dtype)
    self.leaves: dict[str, np.ndarray] = {}
    self.origin: dict[str, str] = {}
    self.skipped: set[str] = set()  # paths whose source name is missing

  def put(self, path: str, name: str, fn=None) -> None:
    """Leaf `path` = fn(source[name]) (identity when fn is None); skipped if `name` is missing."""
    w = self.source.take(name)
    if w is None:
      self.skipped.add(path)
      return
    w = w if fn is None else fn(w)
    self.leaves[path] = np.asarray(w, self.dtype)
    self.origin[path] = name

  def conv(self, path: str, name: str, *, bias: bool = True) -> None:
    """A Conv2d `name` (``.weight``, ``.bias``) -> Flax Conv at `path` (``kernel``, ``bias``)."""
    self.put(f"{path}/kernel", f"{name}.weight", conv_kernel)
    if bias:
      self.put(f"{path}/bias", f"{name}.bias")

  def dense(self, path: str, name: str, *, bias: bool = True) -> None:
    """A Linear (or 1x1 Conv2d) `name` -> Flax Dense at `path`."""
    self.put(f"{path}/kernel", f"{name}.weight", dense_kernel)
    if bias:
      self.put(f"{path}/bias", f"{name}.bias")

  def norm(self, path: str, name: str) -> None:
    """A GroupNorm / LayerNorm `name` (``weight``, ``bias``) -> Flax ``scale``, ``bias``."""
    self.put(f"{path}/scale", f"{name}.weight")
    self.put(f"{path}/bias", f"{name}.bias")

  def embed(self, path: str, name: str) -> None:
    """An Embedding `name` -> Flax ``embedding`` at `path`."""
    self.put(f"{path}/embedding", f"{name}.weight")

  def finish(self, expected: PyTree, what: str, *, ignore: tuple[str, ...] = ()) -> PyTree:
    """The nested parameter tree, checked against `expected` (shapes, e.g. from eval_shape).

    Args:
      expected: the module's parameter tree (arrays or ShapeDtypeStructs).
      what: the model's name for the error message.
      ignore: prefixes (after the state dict's own prefix) of source names that may stay
        unused (buffers such as ``text_model.embeddings.position_ids``).

    Raises:
      ConversionError: missing, unexpected or mis-shaped names (all listed at once).
    """
    want = flatten_tree(expected)
    missing = list(self.source.missing)
    missing += [f"(nothing maps to jgen {p})" for p in want
                if p not in self.leaves and p not in self.skipped]
    misshaped = [(self.origin[p], p, tuple(self.leaves[p].shape), tuple(np.shape(v)))
                 for p, v in want.items()
                 if p in self.leaves and tuple(self.leaves[p].shape) != tuple(np.shape(v))]
    cut = len(self.source.prefix)
    unexpected = [n for n in self.source.unused() if not n[cut:].startswith(ignore)]
    unexpected += [f"{self.origin[p]} (-> jgen {p}, not in the module)"
                   for p in sorted(set(self.leaves) - set(want))]
    if missing or unexpected or misshaped:
      raise ConversionError(what, missing, unexpected, misshaped)
    return unflatten_tree(self.leaves)


def flatten_tree(tree: PyTree) -> dict[str, Any]:
  """A nested dict -> ``{"a/b/c": leaf}``."""
  return traverse_util.flatten_dict(dict(tree), sep="/") if tree else {}


def unflatten_tree(flat: Mapping[str, Any]) -> dict[str, Any]:
  """``{"a/b/c": leaf}`` -> a nested dict."""
  return traverse_util.unflatten_dict(dict(flat), sep="/")


class Renamed(Mapping):
  """A lazy view of a state dict under other names: ``view[new] = fn(source[old])``.

  Single-file (CompVis/LDM) checkpoints are converted by renaming their keys to the diffusers
  names (one table per model part) and running the diffusers converter on this view; a fused
  tensor (OpenCLIP's ``in_proj_weight``) is split by giving `fn`.

  Args:
    source: the state dict read.
    names: new name -> old name, or -> ``(old name, fn)`` where ``fn`` maps the old array to
      the new one.
  """

  def __init__(self, source: Mapping[str, Any], names: Mapping[str, Any]):
    self._source = source
    self._names = dict(names)

  def __getitem__(self, name: str) -> Any:
    entry = self._names[name]
    if isinstance(entry, str):
      return self._source[entry]
    old, fn = entry
    return fn(np.asarray(self._source[old]))

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)


class AnyName(Mapping):
  """A state dict that has every name (a dummy array), except DDPM's pre-0.14 attention names
  (``query``, ``key``, ``value``, ``proj_attn``): run through a forward converter, it makes
  the converter ask for every name of today's layout, which lists the whole name map (the
  LoRA resolver and the exporters read the maps this way instead of keeping second copies)."""

  _LEGACY = (".query.weight", ".key.weight", ".value.weight", ".proj_attn.weight")

  def __contains__(self, name: object) -> bool:
    return isinstance(name, str) and not name.endswith(self._LEGACY)

  def __getitem__(self, name: str) -> np.ndarray:
    return np.zeros((1, 1, 1, 1), np.float32)

  def __iter__(self) -> Iterator[str]:
    return iter(())

  def __len__(self) -> int:
    return 0
