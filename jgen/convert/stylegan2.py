"""NVlabs StyleGAN2-ADA pickles into jgen StyleGAN2 variables (``gan.stylegan2``).

A pickle (``ffhq.pkl``, ``network-snapshot-*.pkl``) is read by
`jgen.metrics.weights.read_nvlabs_pickle` (restricted: nothing in it runs). Its networks carry
their constructor arguments (``_init_kwargs``); `settings` turns them into the jgen config fields
(``data.image_size``, ``model.features`` ...) with the reference options on (`jgen.nn.stylegan2`:
``resample="exact"``, ``conv_clamp``, ``noise_buffers``, ``d_flatten="nchw"``), and refuses
what jgen's networks do not build (a 'resnet'/'orig' generator, a 'skip' discriminator, another
filter, activation, noise-less layers, ...) or an argument it does not know, naming it.

Names (`name_table`; r = 4 * 2^l is block l's resolution, R the image's, k the kernel size):

===========================================  ====================================  ==========
pickle tensor                                jgen parameter                        layout
===========================================  ====================================  ==========
G ``mapping.fc{i}.weight`` / ``.bias``       generator/mapping/fc{i}/kernel, bias  W.T, b
G ``mapping.embed.weight`` / ``.bias``       generator/mapping/embed/...           W.T, b
G ``synthesis.b4.const`` [C, 4, 4]           generator/synthesis/const             CHW->HWC
G ``synthesis.b{r}.conv{0,1}.weight``        .../b{l}_conv{0,1}/conv/kernel        HWIO*sqrt(k k I)
G ``...conv{0,1}.affine.*``                  .../b{l}_conv{0,1}/conv/affine/...    W.T, b
G ``...conv{0,1}.noise_strength``, ``bias``  .../b{l}_conv{0,1}/noise_strength...  as is
G ``...conv{0,1}.noise_const`` [r, r]        .../b{l}_conv{0,1}/noise_const        as is
G ``synthesis.b{r}.torgb.weight``            .../b{l}_torgb/kernel                 HWIO*sqrt(I)
G ``...torgb.affine.*``, ``torgb.bias``      .../b{l}_torgb/affine/...,            W.T, b
                                             b{l}_torgb_bias
G ``mapping.w_avg``                          model_state/w_avg                     as is
D ``b{R}.fromrgb.weight`` / ``.bias``        discriminator/from_rgb/kernel, bias   HWIO, b
D ``b{r}.conv0.*``                           .../b{l}_conv0/kernel, bias           HWIO, b
D ``b{r}.conv1.weight`` / ``.bias``          .../b{l}_conv1/kernel,                HWIO, b
                                             b{l}_conv1_bias
D ``b{r}.skip.weight``                       .../b{l}_skip/kernel                  HWIO
D ``b4.conv.*``, ``b4.fc.*``, ``b4.out.*``   .../epilogue_conv, epilogue_fc, out   HWIO / W.T
D ``mapping.embed.*``, ``mapping.fc{i}.*``   discriminator/cmap/embed, fc{i}       W.T, b
augment_pipe ``p``                           model_state/ada/p                     as is
===========================================  ====================================  ==========

``G_ema``'s tensors are the generator's EMA (what jgen samples with), ``G``'s its trained
parameters; ``G_ema.mapping.w_avg`` is the tracked average w of truncation. Modulated kernels
are multiplied by sqrt(fan_in) because jgen scales every kernel by 1 / sqrt(fan_in) at run time
where the reference uses the raw weight (demodulation cancels the scale; toRGB's styles carry
the reference's own 1 / sqrt(I)), so the converted network computes the reference's products.
Resample filter buffers must be the [1, 3, 3, 1] filter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from jgen.errors import ConversionError
from jgen.metrics import weights
from jgen.metrics.weights import PersistentObject

__all__ = ["Converted", "convert_pickle", "name_table", "read", "relayout", "settings"]

FILTER = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0

# Known init kwargs: name -> the value jgen needs (None: any value, read or irrelevant).
_G_KEYS = {"z_dim": None, "c_dim": None, "w_dim": None, "img_resolution": None,
           "img_channels": None, "mapping_kwargs": None, "synthesis_kwargs": None}
_MAPPING_KEYS = {"num_layers": None, "embed_features": None, "layer_features": None,
                 "activation": "lrelu", "lr_multiplier": None, "w_avg_beta": None}
_SYNTHESIS_KEYS = {"channel_base": None, "channel_max": None, "num_fp16_res": None,
                   "conv_clamp": None, "architecture": "skip", "resample_filter": [1, 3, 3, 1],
                   "use_noise": True, "activation": "lrelu", "kernel_size": 3,
                   "fp16_channels_last": None, "channels_last": None}
_D_KEYS = {"c_dim": None, "img_resolution": None, "img_channels": None, "architecture": None,
           "channel_base": None, "channel_max": None, "num_fp16_res": None, "conv_clamp": None,
           "cmap_dim": None, "block_kwargs": None, "mapping_kwargs": None,
           "epilogue_kwargs": None}
_BLOCK_KEYS = {"activation": "lrelu", "resample_filter": [1, 3, 3, 1],
               "fp16_channels_last": None, "freeze_layers": None}
_EPILOGUE_KEYS = {"mbstd_group_size": None, "mbstd_num_channels": 1, "activation": "lrelu"}
D_ARCHITECTURES = ("resnet", "orig")


def _check_keys(kwargs: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
  for key, value in kwargs.items():
    if key not in known:
      raise ConversionError(f"{where}: unknown constructor argument {key!r}={value!r}; jgen "
                            f"converts StyleGAN2-ADA networks with {sorted(known)}")
    want = known[key]
    if want is not None and value is not None and value != want and not (
        isinstance(want, list) and list(value) == want):
      raise ConversionError(f"{where}: {key}={value!r}; jgen's StyleGAN2 builds {key}={want!r} "
                            "only (another architecture)")


def _channels(base: int, cmax: int, resolution: int) -> tuple[int, ...]:
  """Channels of the blocks 4, 8, ..., resolution: min(base // r, max)."""
  levels = int(math.log2(resolution)) - 1
  return tuple(min(base // (4 * 2**l), cmax) for l in range(levels))


def settings(g_kwargs: Mapping[str, Any], d_kwargs: Mapping[str, Any] | None
             ) -> dict[str, Any]:
  """jgen config values (dotted keys) of the networks' init kwargs (module docstring).

  Raises:
    ConversionError: an argument jgen does not know, or an architecture it does not build.
  """
  _check_keys(g_kwargs, _G_KEYS, "G")
  mapping = dict(g_kwargs.get("mapping_kwargs") or {})
  synthesis = dict(g_kwargs.get("synthesis_kwargs") or {})
  _check_keys(mapping, _MAPPING_KEYS, "G.mapping_kwargs")
  _check_keys(synthesis, _SYNTHESIS_KEYS, "G.synthesis_kwargs")
  res, w_dim = int(g_kwargs["img_resolution"]), int(g_kwargs["w_dim"])
  if res < 4 or res & (res - 1):
    raise ConversionError(f"G: img_resolution={res} is not a power of two >= 4")
  for key in ("embed_features", "layer_features"):
    if mapping.get(key) not in (None, w_dim):
      raise ConversionError(f"G.mapping_kwargs: {key}={mapping[key]} differs from w_dim="
                            f"{w_dim}; jgen's mapping network uses w_dim throughout")
  clamp = synthesis.get("conv_clamp")
  features = _channels(int(synthesis.get("channel_base", 32768)),
                       int(synthesis.get("channel_max", 512)), res)
  num_classes = int(g_kwargs.get("c_dim", 0) or 0)
  values: dict[str, Any] = {
      "data.image_size": res, "data.channels": int(g_kwargs["img_channels"]),
      "model.features": features, "model.z_dim": int(g_kwargs["z_dim"]),
      "model.w_dim": w_dim, "model.mapping_layers": int(mapping.get("num_layers", 8)),
      "model.mapping_lr_mul": float(mapping.get("lr_multiplier", 0.01)),
      "model.resample": "exact", "model.conv_clamp": float(clamp or 0.0),
      "model.noise_buffers": True, "model.d_flatten": "nchw",
      "gan.num_classes": num_classes,
  }
  if mapping.get("w_avg_beta") is not None:
    values["gan.w_avg_beta"] = float(mapping["w_avg_beta"])
  if d_kwargs is None:
    values.update({"model.d_features": (), "model.d_architecture": "resnet"})
    return values
  _check_keys(d_kwargs, _D_KEYS, "D")
  block = dict(d_kwargs.get("block_kwargs") or {})
  epilogue = dict(d_kwargs.get("epilogue_kwargs") or {})
  d_mapping = dict(d_kwargs.get("mapping_kwargs") or {})
  _check_keys(block, _BLOCK_KEYS, "D.block_kwargs")
  _check_keys(epilogue, _EPILOGUE_KEYS, "D.epilogue_kwargs")
  _check_keys(d_mapping, _MAPPING_KEYS, "D.mapping_kwargs")
  arch = d_kwargs.get("architecture", "resnet")
  if arch not in D_ARCHITECTURES:
    raise ConversionError(f"D: architecture={arch!r}; jgen's StyleGAN2 discriminator builds "
                          f"{D_ARCHITECTURES}")
  if (int(d_kwargs["img_resolution"]), int(d_kwargs["img_channels"]),
      int(d_kwargs.get("c_dim", 0) or 0)) != (res, values["data.channels"], num_classes):
    raise ConversionError("D and G disagree on resolution, channels or classes: "
                          f"{d_kwargs['img_resolution']}/{d_kwargs['img_channels']}/"
                          f"{d_kwargs.get('c_dim')} vs {res}/{values['data.channels']}/"
                          f"{num_classes}")
  if d_kwargs.get("conv_clamp") != clamp:
    raise ConversionError(f"D.conv_clamp={d_kwargs.get('conv_clamp')} differs from G's "
                          f"{clamp}; jgen has one model.conv_clamp for both")
  d_features = _channels(int(d_kwargs.get("channel_base", 32768)),
                         int(d_kwargs.get("channel_max", 512)), res)
  cmap_dim = d_kwargs.get("cmap_dim")
  if num_classes and cmap_dim not in (None, d_features[0]):
    raise ConversionError(f"D: cmap_dim={cmap_dim}; jgen's projection uses the 4x4 channels "
                          f"({d_features[0]})")
  group = epilogue.get("mbstd_group_size", 4)
  values.update({"model.d_features": d_features, "model.d_architecture": arch,
                 "model.mbstd_group": int(group) if group is not None else 0,
                 "model.d_mapping_layers": int(d_mapping.get("num_layers", 8))})
  if float(d_mapping.get("lr_multiplier", 0.01)) != 0.01:
    raise ConversionError("D.mapping_kwargs: lr_multiplier other than 0.01")
  return values


def name_table(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
  """(jgen path, torch name, layout) of every tensor, "G:"/"D:" prefixed jgen paths
  (layouts: "dense" W.T, "conv" OIHW->HWIO, "modconv" HWIO * sqrt(fan_in), "const" CHW->HWC,
  "copy")."""
  rows: list[tuple[str, str, str]] = []
  dense = lambda j, t: rows.extend([(f"{j}/kernel", f"{t}.weight", "dense"),  # noqa: E731
                                    (f"{j}/bias", f"{t}.bias", "copy")])
  levels = len(values["model.features"])
  res = values["data.image_size"]
  conditional = values["gan.num_classes"] > 0
  if conditional:
    dense("G:mapping/embed", "mapping.embed")
  for i in range(values["model.mapping_layers"]):
    dense(f"G:mapping/fc{i}", f"mapping.fc{i}")
  rows.append(("G:synthesis/const", "synthesis.b4.const", "const"))
  for l in range(levels):
    r = 4 * 2**l
    for c in ((1,) if l == 0 else (0, 1)):
      j, t = f"G:synthesis/b{l}_conv{c}", f"synthesis.b{r}.conv{c}"
      rows.append((f"{j}/conv/kernel", f"{t}.weight", "modconv"))
      dense(f"{j}/conv/affine", f"{t}.affine")
      rows.extend([(f"{j}/noise_strength", f"{t}.noise_strength", "copy"),
                   (f"{j}/noise_const", f"{t}.noise_const", "copy"),
                   (f"{j}/bias", f"{t}.bias", "copy")])
    j, t = f"G:synthesis/b{l}_torgb", f"synthesis.b{r}.torgb"
    rows.append((f"{j}/kernel", f"{t}.weight", "modconv"))
    dense(f"{j}/affine", f"{t}.affine")
    rows.append((f"{j}_bias", f"{t}.bias", "copy"))
  if "model.d_architecture" not in values or not values.get("model.d_features"):
    return rows
  rows.extend([("D:from_rgb/kernel", f"b{res}.fromrgb.weight", "conv"),
               ("D:from_rgb/bias", f"b{res}.fromrgb.bias", "copy")])
  for l in range(levels - 1, 0, -1):
    r = 4 * 2**l
    rows.extend([(f"D:b{l}_conv0/kernel", f"b{r}.conv0.weight", "conv"),
                 (f"D:b{l}_conv0/bias", f"b{r}.conv0.bias", "copy"),
                 (f"D:b{l}_conv1/kernel", f"b{r}.conv1.weight", "conv"),
                 (f"D:b{l}_conv1_bias", f"b{r}.conv1.bias", "copy")])
    if values["model.d_architecture"] == "resnet":
      rows.append((f"D:b{l}_skip/kernel", f"b{r}.skip.weight", "conv"))
  rows.extend([("D:epilogue_conv/kernel", "b4.conv.weight", "conv"),
               ("D:epilogue_conv/bias", "b4.conv.bias", "copy")])
  dense("D:epilogue_fc", "b4.fc")
  dense("D:out", "b4.out")
  if conditional:
    dense("D:cmap/embed", "mapping.embed")
    for i in range(values["model.d_mapping_layers"]):
      dense(f"D:cmap/fc{i}", f"mapping.fc{i}")
  return rows


def relayout(array: np.ndarray, layout: str, *, inverse: bool = False) -> np.ndarray:
  """One tensor from the reference's layout to jgen's (`name_table`'s layouts), or back with
  `inverse`."""
  a = np.asarray(array, np.float32)
  if layout == "dense":
    return a.T
  if layout == "const":
    return np.transpose(a, (2, 0, 1) if inverse else (1, 2, 0))
  if layout in ("conv", "modconv"):
    fan_in = int(np.prod(a.shape[:3] if inverse else a.shape[1:]))  # k k I of HWIO / OIHW
    gain = np.float32(math.sqrt(fan_in) if layout == "modconv" else 1.0)
    if inverse:
      return np.transpose(a / gain, (3, 2, 0, 1))
    return np.transpose(a, (2, 3, 1, 0)) * gain
  return a


def _network_params(tensors: Mapping[str, np.ndarray], rows: list[tuple[str, str, str]],
                    net: str, where: str) -> dict[str, Any]:
  """The `net` ("G" | "D") parameter tree of `tensors`, every tensor used (filters checked)."""
  flat: dict[str, np.ndarray] = {}
  left = dict(tensors)
  for path, name, layout in rows:
    prefix, _, jpath = path.partition(":")
    if prefix != net:
      continue
    if name not in left:
      raise ConversionError(f"{where}: tensor {name!r} is missing (a different or damaged "
                            "network?)")
    flat[jpath] = relayout(left.pop(name), layout)
  for name in [n for n in left if n.endswith("resample_filter")]:
    if not np.allclose(left.pop(name), FILTER):
      raise ConversionError(f"{where}: {name} is not the [1, 3, 3, 1] filter")
  left.pop("mapping.w_avg", None)
  if left:
    raise ConversionError(f"{where}: unexpected tensors {sorted(left)[:6]} (of {len(left)}); "
                          "not the StyleGAN2-ADA architecture of its init kwargs")
  return weights.unflatten(flat)


class Converted(dict):
  """`convert_pickle`'s result: ``values`` (config), ``params`` ({"generator",
  "discriminator"}), ``ema`` (the generator's EMA params), ``w_avg``, ``ada_p``, ``extra``
  (``training_set_kwargs`` ...)."""


def _net(data: Mapping[str, Any], key: str, where: str) -> PersistentObject | None:
  obj = data.get(key)
  if obj is None:
    return None
  if not isinstance(obj, PersistentObject):
    raise ConversionError(f"{where}: {key} is a {type(obj).__name__}, not a network")
  return obj


def convert_pickle(data: Mapping[str, Any], where: str = "pickle") -> Converted:
  """jgen variables of a `read_nvlabs_pickle` dict (module docstring).

  Raises:
    ConversionError: no generator, an unknown key, another architecture, missing or extra
      tensors.
  """
  known = {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
  unknown = sorted(set(data) - known)
  if unknown:
    raise ConversionError(f"{where}: unknown key(s) {unknown} in the pickle; an NVlabs "
                          f"StyleGAN2-ADA pickle holds {sorted(known)}")
  g, d, g_ema = (_net(data, k, where) for k in ("G", "D", "G_ema"))
  source = g_ema or g
  if source is None:
    raise ConversionError(f"{where}: neither G_ema nor G in the pickle")
  for net, cls in ((g, "Generator"), (g_ema, "Generator"), (d, "Discriminator")):
    if net is not None and net.class_name != cls:
      raise ConversionError(f"{where}: a {net.class_name} where a {cls} belongs (another "
                            "architecture)")
  values = settings(source.init_kwargs, d.init_kwargs if d is not None else None)
  rows = name_table(values)
  ema_tensors = weights.nvlabs_tensors(source)
  ema = _network_params(ema_tensors, rows, "G", f"{where}: G_ema" if g_ema else where)
  params = {"generator": (_network_params(weights.nvlabs_tensors(g), rows, "G", f"{where}: G")
                          if g is not None and g_ema is not None else ema)}
  if d is not None:
    params["discriminator"] = _network_params(weights.nvlabs_tensors(d), rows, "D",
                                              f"{where}: D")
  w_avg = ema_tensors.get("mapping.w_avg")
  ada_p = None
  pipe = _net(data, "augment_pipe", where)
  if pipe is not None:
    ada_p = float(np.asarray(weights.nvlabs_tensors(pipe).get("p", 0.0)))
  return Converted(values=values, params=params, ema=ema,
                   w_avg=None if w_avg is None else np.asarray(w_avg, np.float32),
                   ada_p=ada_p, extra={"training_set_kwargs": data.get("training_set_kwargs")})


def read(path: str) -> Converted:
  """`convert_pickle` of the file at `path` (read by `weights.read_nvlabs_pickle`)."""
  return convert_pickle(weights.read_nvlabs_pickle(path), path)
