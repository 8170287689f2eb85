"""Writes pickles with NVlabs' StyleGAN2-ADA layout, without torch or NVlabs code (tests only).

A network is pickled as NVlabs' `persistence` decorator pickles it:
``torch_utils.persistence._reconstruct_persistent_obj({"type": "class", "version": 6,
"module_src": <source>, "class_name": ..., "state": <the module's __dict__>})``, with
``_parameters`` / ``_buffers`` / ``_modules`` OrderedDicts and ``_init_kwargs``; a tensor as
``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(<legacy torch.save stream of
its storage>), 0, size, stride, False, OrderedDict())`` (wrapped in ``_rebuild_parameter`` for
parameters), exactly the globals and call shapes torch writes (compare a real pickle with
``pickletools.dis``). Globals are written by name from stand-in classes, so any global can be
written, e.g. ``os.system`` for the refusal test; `module_src` is a string nobody runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from jgen.convert import stylegan2 as sg2_convert
from jgen.metrics.weights import LEGACY_MAGIC, unflatten

_GLOBALS: dict[tuple[str, str], type] = {}


def ref(module: str, name: str) -> type:
  """A stand-in class that pickles as the global ``module.name``."""
  key = (module, name)
  if key not in _GLOBALS:
    _GLOBALS[key] = type(name, (), {"_ref": key})
  return _GLOBALS[key]


class Call:
  """Pickles as ``func(*args)`` (REDUCE), `func` a `ref`."""

  def __init__(self, func: type, *args: Any):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


class _StorageMarker:
  def __init__(self, array: np.ndarray):
    self.array = array


class _Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """The pure-Python pickler, writing `ref` classes as their global names."""

  def save_global(self, obj, name=None):
    key = getattr(obj, "_ref", None)
    if key is None:
      return super().save_global(obj, name)
    self.save(key[0])
    self.save(key[1])
    self.write(pickle.STACK_GLOBAL)
    self.memoize(obj)
    return None

  def persistent_id(self, obj):
    if isinstance(obj, _StorageMarker):
      return ("storage", ref("torch", "FloatStorage"), "0", "cpu", obj.array.size, None)
    return None


def dumps(obj: Any, protocol: int = 4) -> bytes:
  f = io.BytesIO()
  _Pickler(f, protocol=protocol).dump(obj)
  return f.getvalue()


def storage_bytes(array: np.ndarray) -> bytes:
  """A float32 storage as torch's legacy ``torch.save`` stream (what _load_from_bytes reads)."""
  flat = np.ascontiguousarray(array, np.float32).reshape(-1)
  out = io.BytesIO()
  for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
    out.write(pickle.dumps(header, protocol=2))
  out.write(dumps(_StorageMarker(flat), protocol=2))
  out.write(pickle.dumps(["0"], protocol=2))
  out.write(struct.pack("<q", flat.size))
  out.write(flat.astype("<f4").tobytes())
  return out.getvalue()


def tensor(array: np.ndarray, parameter: bool = False) -> Call:
  a = np.asarray(array, np.float32)
  stride = tuple(int(s // 4) for s in np.ascontiguousarray(a).strides)
  t = Call(ref("torch._utils", "_rebuild_tensor_v2"),
           Call(ref("torch.storage", "_load_from_bytes"), storage_bytes(a)), 0,
           tuple(a.shape), stride, False, collections.OrderedDict())
  if parameter:
    return Call(ref("torch._utils", "_rebuild_parameter"), t, False, collections.OrderedDict())
  return t


def easydict(d: Mapping[str, Any]) -> Any:
  """``dnnlib.util.EasyDict(d)`` (a dict subclass: created empty, items set)."""

  class _Easy:
    def __reduce__(self):
      return ref("dnnlib.util", "EasyDict"), (), None, None, iter(d.items())

  return _Easy()


def persistent(class_name: str, tensors: Mapping[str, np.ndarray],
               init_kwargs: Mapping[str, Any], buffers: tuple[str, ...] = ()) -> Call:
  """A persistent network of flat `tensors` (torch names; names ending in one of `buffers`
  are buffers), as nested modules."""
  tree = unflatten(tensors, sep=".")

  def module(cls: str, node: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Call:
    params, bufs, mods = (collections.OrderedDict() for _ in range(3))
    for key, value in node.items():
      if isinstance(value, Mapping):
        mods[key] = module("Layer", value, {})
      elif key in buffers:
        bufs[key] = tensor(value)
      else:
        params[key] = tensor(value, parameter=True)
    state = {"training": False, "_parameters": params, "_buffers": bufs, "_modules": mods,
             "_non_persistent_buffers_set": set(), "_forward_hooks": collections.OrderedDict(),
             "_init_args": (), "_init_kwargs": easydict(kwargs), "weight_gain": np.float64(0.5)}
    meta = {"type": "class", "version": 6, "module_src": "raise SystemExit('executed')\n",
            "class_name": cls, "state": state}
    return Call(ref("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)

  return module(class_name, tree, init_kwargs)


BUFFERS = ("w_avg", "noise_const", "resample_filter", "p")


def network_pickle(nets: Mapping[str, tuple[str, Mapping[str, np.ndarray], Mapping[str, Any]]],
                   extra: Mapping[str, Any] | None = None) -> bytes:
  """The bytes of ``{key: persistent(class_name, tensors, init_kwargs)}`` plus `extra`."""
  data: dict[str, Any] = {k: persistent(c, t, kw, BUFFERS) for k, (c, t, kw) in nets.items()}
  data.update(extra or {})
  return dumps(data)


def nvlabs_kwargs(c: Any) -> tuple[dict[str, Any], dict[str, Any]]:
  """NVlabs' G and D init kwargs of a jgen StyleGAN2 config with the reference options
  (channels min(channel_base / r, channel_max), unconditional)."""
  f = tuple(c.model.features)
  res = c.data.image_size
  base, cmax = f[-1] * res, max(f)
  if tuple(min(base // (4 * 2**l), cmax) for l in range(len(f))) != f:
    raise ValueError(f"features {f} are not min(channel_base / r, channel_max)")
  clamp = c.model.conv_clamp or None
  g = {"z_dim": c.model.z_dim, "c_dim": 0, "w_dim": c.model.w_dim, "img_resolution": res,
       "img_channels": c.data.channels,
       "mapping_kwargs": {"num_layers": c.model.mapping_layers},
       "synthesis_kwargs": {"channel_base": base, "channel_max": cmax, "num_fp16_res": 0,
                            "conv_clamp": clamp}}
  d = {"c_dim": 0, "img_resolution": res, "img_channels": c.data.channels,
       "architecture": c.model.d_architecture, "channel_base": base, "channel_max": cmax,
       "num_fp16_res": 0, "conv_clamp": clamp,
       "epilogue_kwargs": {"mbstd_group_size": c.model.mbstd_group}}
  return g, d


def _leaf(tree: Any, path: str) -> np.ndarray:
  for part in path.split("/"):
    tree = tree[part]
  return np.asarray(tree)


def jgen_state_pickle(c: Any, state: Any) -> bytes:
  """A jgen StyleGAN2 train state (reference options on) as an NVlabs-layout pickle: G, G_ema
  (the EMA generator), D, w_avg, and an augment pipe with p = 0 (the conversion table of
  `jgen.convert.stylegan2.name_table`, inverted)."""
  g_kwargs, d_kwargs = nvlabs_kwargs(c)
  rows = sg2_convert.name_table(sg2_convert.settings(g_kwargs, d_kwargs))
  trees = {"G": state.params["generator"], "G_ema": state.ema_params["generator"],
           "D": state.params["discriminator"]}
  tensors: dict[str, dict[str, np.ndarray]] = {k: {} for k in trees}
  for jpath, name, layout in rows:
    net, _, inner = jpath.partition(":")
    for key in ((net,) if net == "D" else ("G", "G_ema")):
      tensors[key][name] = sg2_convert.relayout(_leaf(trees[key], inner), layout,
                                                   inverse=True)
  w_avg = np.asarray(state.model_state["w_avg"], np.float32)
  tensors["G"]["mapping.w_avg"] = tensors["G_ema"]["mapping.w_avg"] = w_avg
  return network_pickle({
      "G": ("Generator", tensors["G"], g_kwargs), "D": ("Discriminator", tensors["D"], d_kwargs),
      "G_ema": ("Generator", tensors["G_ema"], g_kwargs),
      "augment_pipe": ("AugmentPipe", {"p": np.float32(0.0)}, {"xflip": 1})})
