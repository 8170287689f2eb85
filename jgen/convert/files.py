"""Weight files read as name -> numpy array, lazily and without executing anything.

* ``.safetensors``: an 8-byte little-endian header length, a JSON header (``name -> {dtype,
  shape, data_offsets}``, plus ``__metadata__``), then the raw little-endian tensors.
  `SafetensorsFile` memory-maps the file and returns each tensor as a view on access, so a
  converter that takes the leaves one at a time holds about one copy of the checkpoint (the
  converted one) plus the page cache. The header is parsed here rather than through
  ``safetensors.safe_open(framework="numpy")`` because numpy has no bfloat16: this reader
  returns BF16 tensors as ``ml_dtypes.bfloat16`` and F8 ones as ``ml_dtypes`` float8 types.
* ``.bin`` / ``.ckpt`` / ``.pt`` / ``.pth`` (``torch.save`` pickles): read by
  `jgen.metrics.weights.read_torch_file`, a restricted unpickler that resolves only tensor
  rebuilders, storage types and ``OrderedDict`` and never imports torch; any other global in the
  pickle (``os.system``, a class of the writer's code) is refused before it is called. Lightning
  ``.ckpt`` files nest the weights under ``state_dict``; that is unwrapped.
* A sharded checkpoint: ``*.safetensors.index.json`` / ``*.bin.index.json`` whose
  ``weight_map`` names the shard of each tensor (`ShardedFile`).

`read_state_dict(path)` picks the reader from the file name; `model_weights(folder)` finds a
diffusers / transformers model folder's weight file, preferring safetensors to ``.bin`` and the
full-precision file to the ``.fp16`` variant unless ``variant="fp16"`` is asked for.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from jgen import errors
from jgen.metrics.weights import flatten_state_dict, read_torch_file

__all__ = ["FORMATS", "SafetensorsFile", "ShardedFile", "UnknownFormatError", "model_weights",
           "read_state_dict", "safetensors_metadata"]

FORMATS = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".safetensors.index.json",
           ".bin.index.json")

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class UnknownFormatError(errors.ConversionError):
  """A path in none of the known weight formats."""


class SafetensorsFile(Mapping):
  """A memory-mapped ``.safetensors`` file: ``file[name]`` is a read-only numpy view.

  Raises:
    ValueError: a header that is not safetensors (bad length, JSON or offsets).
  """

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) != 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
      (n,) = struct.unpack("<Q", raw)
      if n > size - 8 or n > 100_000_000:
        raise ValueError(f"{path}: not a safetensors file (header size {n} in a {size}-byte "
                         "file)")
      try:
        header = json.loads(f.read(n))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
    self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
    self._header = header
    self._start = 8 + n
    self._map = np.memmap(path, np.uint8, "r") if size > self._start else np.zeros(0, np.uint8)
    for name, info in header.items():
      begin, end = info["data_offsets"]
      if info["dtype"] not in _DTYPES:
        raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; known: "
                         f"{sorted(_DTYPES)}")
      want = int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(_DTYPES[info["dtype"]]).itemsize
      if end - begin != want or self._start + end > size:
        raise ValueError(f"{path}: tensor {name} has bad offsets {begin}..{end} for shape "
                         f"{info['shape']} {info['dtype']}")

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._header[name]["shape"])

  def __getitem__(self, name: str) -> np.ndarray:
    info = self._header[name]
    begin, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
    raw = self._map[self._start + begin:self._start + end]
    return raw.view(dtype).reshape(info["shape"])

  def __iter__(self) -> Iterator[str]:
    return iter(self._header)

  def __len__(self) -> int:
    return len(self._header)


class ShardedFile(Mapping):
  """The shards of a ``*.index.json`` checkpoint as one mapping (each shard opened lazily)."""

  def __init__(self, index_path: str):
    with open(index_path) as f:
      index = json.load(f)
    if "weight_map" not in index:
      raise ValueError(f"{index_path}: a sharded checkpoint index needs a 'weight_map'")
    self._folder = os.path.dirname(index_path)
    self._where: dict[str, str] = index["weight_map"]
    self._open: dict[str, Mapping[str, Any]] = {}

  def __getitem__(self, name: str) -> np.ndarray:
    shard = self._where[name]
    if shard not in self._open:
      self._open[shard] = read_state_dict(os.path.join(self._folder, shard))
    return self._open[shard][name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._where)

  def __len__(self) -> int:
    return len(self._where)


def safetensors_metadata(path: str) -> dict[str, str]:
  """The ``__metadata__`` strings of a safetensors header (peft's ``lora_adapter_metadata``)."""
  return dict(SafetensorsFile(path).metadata)


def read_state_dict(path: str) -> Mapping[str, Any]:
  """The tensors of a weight file, by name (lazy for safetensors and shards).

  Raises:
    FileNotFoundError: no such file.
    UnknownFormatError: a file of none of the `FORMATS`.
    pickle.UnpicklingError: a pickle that names anything but tensors (it is never run).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no weight file at {path}")
  name = os.path.basename(path)
  if name.endswith(".index.json"):
    return ShardedFile(path)
  if name.endswith(".safetensors"):
    return SafetensorsFile(path)
  if name.endswith((".bin", ".ckpt", ".pt", ".pth")):
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
      obj = obj["state_dict"]  # Lightning / CompVis .ckpt
    return flatten_state_dict(obj)
  raise UnknownFormatError(f"{path}: unknown weight format; known: {', '.join(FORMATS)}")


def model_weights(folder: str, stem: str = "diffusion_pytorch_model", *,
                  variant: str | None = None) -> str:
  """The weight file of a diffusers (``diffusion_pytorch_model``) or transformers (``model``,
  ``pytorch_model``) model folder.

  Looks for ``<stem>[.<variant>].safetensors``, then ``.bin``, then their ``.index.json``
  shards; with ``variant=None`` the plain file is preferred and the ``fp16`` variant taken
  when it is the only one.

  Raises:
    FileNotFoundError: none of them is in the folder (the message lists what is there).
  """
  stems = (stem,) if stem != "model" else ("model", "pytorch_model")
  variants = [variant] if variant else [None, "fp16"]
  for v in variants:
    for s in stems:
      base = s if v is None else f"{s}.{v}"
      for ext in (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"):
        path = os.path.join(folder, base + ext)
        if os.path.isfile(path):
          return path
  listing = sorted(os.listdir(folder)) if os.path.isdir(folder) else "no such folder"
  raise FileNotFoundError(f"{folder}: no {stem}{'.' + variant if variant else ''}"
                          f"(.safetensors|.bin|.index.json) weight file; it holds {listing}")
