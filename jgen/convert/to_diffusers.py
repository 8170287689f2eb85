"""jgen models out as diffusers model folders: the inverse of the U-Net, VAE and ControlNet
converters (`jgen.convert.unet`, `autoencoder`, `controlnet`).

**Names, from the forward converters.** There is no second table. The forward converter runs on
`_Probe`, a stand-in state dict that has every diffusers name (each a 1 x 1 x 1 x 1 dummy), and
its report (`ConversionError.misshaped`: torch name, jgen path, the dummy's converted shape, the
module's shape) is the whole map. The dummy's converted shape says which layout change the
converter made: 2 axes, a Linear (jgen Dense ``[I, O]`` = W^T); 4 axes for a 4-D jgen leaf, a
Conv2d (jgen HWIO = torch OIHW transposed by (2, 3, 1, 0)); else a copy (norms, biases, the
codebook). The inverse is then exact:

    Conv2d  W[o, i, h, w] = K[h, w, i, o]        (K.transpose(3, 2, 0, 1))
    Linear  W[o, i] = K[i, o]                    (K.T; a 1 x 1 Conv2d: K.T[:, :, None, None])

The one layout a jgen tree does not record is whether a transformer's ``proj_in`` /
``proj_out`` is a 1 x 1 Conv2d (SD 1.x, ``use_linear_projection=False``) or a Linear (SD 2.x):
both are jgen Dense kernels. `linear_projection_default` picks SD 2.x's Linear when the heads
differ by level (SD 2.x's 64-channel heads) and SD 1.x's convolution when they are one count.

**Configs** invert `jgen.convert.unet.unet_settings` (``block_out_channels = ch * ch_mult``,
attention levels as ``CrossAttn``/``Attn`` block types, the heads as ``attention_head_dim``,
one number for SD 1.x-style configs or one per level, ``norm_eps``, ``flip_sin_to_cos``,
``freq_shift``, ``downsample_padding``, ...), `jgen.convert.autoencoder.autoencoder_module`
(``AutoencoderKL`` / ``VQModel``) and `jgen.convert.controlnet.controlnet_settings`, and are
checked by reading them back with those functions. What diffusers cannot express (label
embeddings, concatenated image conditions, IP-Adapter tokens, attention inside the VAE's levels,
a ControlNet on the latent grid) is refused by name.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from jgen import errors
from jgen.nn.ldm_autoencoder import LDMAutoencoder
from jgen.convert.autoencoder import autoencoder_from_diffusers, autoencoder_module
from jgen.convert.common import AnyName, ConversionError, flatten_tree
from jgen.convert.controlnet import controlnet_from_diffusers, controlnet_settings
from jgen.convert.unet import unet_from_diffusers, unet_settings
from jgen.nn.controlnet import ControlNet
from jgen.nn.unet import UNet

__all__ = ["DIFFUSERS_VERSION", "ExportError", "attention_levels", "autoencoder_to_diffusers",
           "controlnet_to_diffusers", "linear_projection_default", "save_model", "unet_config",
           "unet_to_diffusers"]

DIFFUSERS_VERSION = "0.42.1"  # the diffusers release these folders were checked against
WEIGHTS = "diffusion_pytorch_model.safetensors"
Exported = tuple[dict[str, Any], dict[str, np.ndarray]]  # (config.json, torch-named arrays)


class ExportError(errors.ConversionError):
  """A jgen model that a diffusers class cannot hold (the message says what differs)."""


def _name_map(forward: Callable[[Mapping, Mapping], Any], config: Mapping
              ) -> dict[str, tuple[str, str, tuple[int, ...]]]:
  """jgen path -> (torch name, 'conv' | 'dense' | 'copy', jgen shape), by `forward` on `_Probe`."""
  try:
    forward(config, AnyName())
  except ConversionError as report:
    table = {}
    for name, path, got, want in report.misshaped:
      kind = "dense" if len(got) == 2 else "conv" if len(want) == 4 else "copy"
      table[path] = (name, kind, tuple(want))
    return table
  raise AssertionError("the converter accepted dummy arrays; it no longer checks shapes")


def _torch_state(table: Mapping[str, tuple[str, str, tuple[int, ...]]], params: Mapping,
                 what: str, *, conv_projections: bool) -> dict[str, np.ndarray]:
  """The torch-named arrays of `params` (a nested jgen tree) by `table` (see `_name_map`)."""
  flat = flatten_tree(params)
  unmapped = sorted(set(flat) - set(table))
  absent = sorted(set(table) - set(flat))
  if unmapped or absent:
    raise ExportError(f"{what}: the parameters do not have the layout of the module their config "
                      f"describes: {len(unmapped)} jgen leaves with no diffusers name "
                      f"{unmapped[:8]}, {len(absent)} expected leaves absent {absent[:8]}. A LoRA "
                      "subtree must be merged first (Lora.merge), and other kinds of network have "
                      "no diffusers class.")
  state = {}
  for path, (name, kind, want) in table.items():
    leaf = np.asarray(flat[path], np.float32)
    if leaf.shape != want:
      raise ExportError(f"{what}: {path} has shape {leaf.shape}, the module's config says "
                        f"{want}; were these parameters trained for another architecture?")
    if kind == "conv":
      leaf = leaf.transpose(3, 2, 0, 1)
    elif kind == "dense":
      leaf = leaf.T
      if conv_projections and re.search(r"\.attentions\.\d+\.proj_(in|out)\.weight$", name):
        leaf = leaf[:, :, None, None]
    state[name] = np.ascontiguousarray(leaf)
  return state


def _unwrap(variables: Mapping) -> Mapping:
  return variables["params"] if set(variables) == {"params"} else variables


def _plain(value: Any) -> Any:
  return tuple(value) if isinstance(value, (list, tuple)) else value


# ------------------------------------------------------------------------------ U-Net


def attention_levels(module: UNet, sample_size: int) -> tuple[int, ...]:
  """The levels with attention: ``attn_levels``, or the levels whose feature height
  ``sample_size / 2^level`` is in ``attn_resolutions``."""
  if module.attn_levels is not None:
    return tuple(int(l) for l in module.attn_levels)
  return tuple(l for l in range(len(module.ch_mult))
               if sample_size // 2**l in tuple(module.attn_resolutions))


def linear_projection_default(module: UNet) -> bool:
  """SD 2.x's Linear ``proj_in`` / ``proj_out`` when the heads differ by level, SD 1.x's 1 x 1
  convolution when they are one count (see the module docstring)."""
  heads = module.transformer_heads
  return not isinstance(heads, int) and len(set(tuple(heads))) > 1


def _refuse_unet(module: UNet) -> None:
  extras = {"num_classes": 0, "cond_channels": 0, "embedding_dim": 0, "image_context_dim": 0,
            "resamp_with_conv": True}
  bad = [f"{k}={getattr(module, k)!r} (diffusers' U-Nets need {v!r})" for k, v in extras.items()
         if getattr(module, k) != v]
  if module.attention == "ddpm" and module.context_dim:
    bad.append(f"context_dim={module.context_dim} with attention='ddpm' (jgen's AttnBlock + "
               "CrossAttnBlock; diffusers' cross-attention U-Net is attention='transformer')")
  if bad:
    raise ExportError("this U-Net has no diffusers equivalent: " + "; ".join(bad))


def unet_config(module: UNet, *, in_channels: int, sample_size: int,
                linear_projection: bool | None = None) -> dict[str, Any]:
  """The diffusers config of `module`: ``UNet2DConditionModel`` (transformer attention) or
  ``UNet2DModel`` (DDPM attention: one head over all channels).

  Args:
    module: the jgen U-Net.
    in_channels: channels of its input.
    sample_size: the height of its input (it places ``attn_resolutions``; diffusers records it).
    linear_projection: ``use_linear_projection`` (None: `linear_projection_default`).

  Raises:
    ExportError: a U-Net diffusers cannot hold, or a config that does not read back the same.
  """
  _refuse_unet(module)
  levels = len(module.ch_mult)
  attn = attention_levels(module, sample_size)
  cross = module.attention == "transformer"
  down_attn, down_plain = ("CrossAttnDownBlock2D", "DownBlock2D") if cross else (
      "AttnDownBlock2D", "DownBlock2D")
  up_attn, up_plain = ("CrossAttnUpBlock2D", "UpBlock2D") if cross else (
      "AttnUpBlock2D", "UpBlock2D")
  config = {
      "_class_name": "UNet2DConditionModel" if cross else "UNet2DModel",
      "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
      "block_out_channels": [module.ch * int(m) for m in module.ch_mult],
      "center_input_sample": False,
      "down_block_types": [down_attn if l in attn else down_plain for l in range(levels)],
      "up_block_types": [up_attn if levels - 1 - i in attn else up_plain for i in range(levels)],
      "downsample_padding": int(module.downsample_padding), "dropout": 0.0,
      "flip_sin_to_cos": bool(module.flip_sin_to_cos), "freq_shift": _number(module.freq_shift),
      "in_channels": int(in_channels), "layers_per_block": int(module.num_res_blocks),
      "norm_eps": float(module.norm_eps), "norm_num_groups": int(module.num_groups),
      "out_channels": int(module.out_ch if module.out_ch is not None else in_channels),
      "resnet_time_scale_shift": "default", "sample_size": int(sample_size),
      "time_embedding_type": "positional"}
  if cross:
    heads = [module.heads(l) for l in range(levels)]
    linear = linear_projection_default(module) if linear_projection is None else linear_projection
    config.update({
        "attention_head_dim": heads[0] if len(set(heads)) == 1 else heads,
        "cross_attention_dim": int(module.context_dim), "mid_block_type":
        "UNetMidBlock2DCrossAttn", "only_cross_attention": False, "upcast_attention": False,
        "transformer_layers_per_block": int(module.transformer_depth),
        "use_linear_projection": bool(linear)})
  else:
    config.update({"add_attention": True, "attention_head_dim": None,
                   "mid_block_type": "UNetMidBlock2D", "downsample_type": "conv",
                   "upsample_type": "conv"})
  _check_reads_back(module, unet_settings(config), attn)
  return config


def _number(x: float) -> int | float:
  return int(x) if float(x).is_integer() else float(x)


def _check_reads_back(module: UNet, settings: Mapping[str, Any], attn: tuple[int, ...]) -> None:
  expect = {"ch": module.ch, "ch_mult": tuple(module.ch_mult), "attn_levels": attn,
            "num_res_blocks": module.num_res_blocks, "num_groups": module.num_groups,
            "norm_eps": module.norm_eps, "downsample_padding": module.downsample_padding,
            "flip_sin_to_cos": module.flip_sin_to_cos, "freq_shift": module.freq_shift}
  if module.attention == "transformer":
    expect.update(context_dim=module.context_dim, transformer_depth=module.transformer_depth,
                  transformer_heads=tuple(module.heads(l) for l in range(len(module.ch_mult))))
  diff = [f"{k}: {_plain(settings.get(k))!r} != {_plain(v)!r}" for k, v in expect.items()
          if _plain(settings.get(k)) != _plain(v)]
  if diff:
    raise ExportError("the diffusers config does not read back as this U-Net: " + "; ".join(diff))


def unet_to_diffusers(module: UNet, variables: Mapping, *, sample_size: int,
                      linear_projection: bool | None = None) -> Exported:
  """A jgen U-Net as a diffusers ``(config, state dict)`` (`unet_config`; names from
  `jgen.convert.unet.unet_from_diffusers`).

  Raises:
    ExportError: a U-Net diffusers cannot hold, or parameters that are not `module`'s.
  """
  params = _unwrap(variables)
  in_channels = int(np.shape(params["conv_in"]["kernel"])[2])
  config = unet_config(module, in_channels=in_channels, sample_size=sample_size,
                       linear_projection=linear_projection)
  table = _name_map(unet_from_diffusers, config)
  state = _torch_state(table, params, config["_class_name"],
                       conv_projections=not config.get("use_linear_projection", True))
  return config, state


# ------------------------------------------------------------------------------ ControlNet


def controlnet_to_diffusers(module: ControlNet, variables: Mapping, *,
                            linear_projection: bool | None = None) -> Exported:
  """A jgen control branch (``hint_layout="pixel"``) as a diffusers ``ControlNetModel``.

  diffusers feeds the control image in [0, 1] and jgen's ``hint`` condition is in [-1, 1], which
  the branch maps onto its ``hint_range``: the export needs ``hint_range=(0, 1)`` (what
  `jgen.convert.controlnet` makes), so diffusers' image is jgen's ``(hint + 1) / 2``. The
  conditioning scale and guess mode are call arguments in diffusers, not weights.

  Raises:
    ExportError: a latent-grid hint encoder, another hint range, or a U-Net diffusers cannot hold.
  """
  if module.hint_layout != "pixel":
    raise ExportError(f"hint_layout={module.hint_layout!r}: diffusers' ControlNetModel encodes "
                      "the hint at pixel resolution (hint_layout='pixel'); a latent-grid hint "
                      "encoder has no diffusers equivalent")
  if tuple(module.hint_range) != (0.0, 1.0):
    raise ExportError(f"hint_range={tuple(module.hint_range)}: diffusers reads the control "
                      "image in [0, 1], so the branch must map jgen's [-1, 1] hint onto (0, 1)")
  unet = module.unet
  if unet.attention != "transformer":
    raise ExportError("ControlNetModel copies a UNet2DConditionModel encoder: the U-Net needs "
                      "attention='transformer'")
  params = _unwrap(variables)
  base = unet_config(unet, in_channels=int(np.shape(params["conv_in"]["kernel"])[2]),
                     sample_size=2 ** (len(unet.ch_mult) - 1),
                     linear_projection=linear_projection)
  keep = ("act_fn", "attention_head_dim", "block_out_channels", "cross_attention_dim",
          "down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift",
          "in_channels", "layers_per_block", "mid_block_type", "norm_eps", "norm_num_groups",
          "only_cross_attention", "transformer_layers_per_block", "upcast_attention",
          "use_linear_projection")
  config = {"_class_name": "ControlNetModel", "_diffusers_version": DIFFUSERS_VERSION,
            **{k: base[k] for k in keep},
            "conditioning_channels": int(np.shape(params["hint_0"]["kernel"])[2]),
            "conditioning_embedding_out_channels": [int(c) for c in module.hint_channels],
            "controlnet_conditioning_channel_order": "rgb", "global_pool_conditions": False,
            "mid_block_scale_factor": 1}
  back = controlnet_settings(config)
  if tuple(back["hint_channels"]) != tuple(module.hint_channels):
    raise ExportError(f"hint_channels {module.hint_channels} do not read back")
  table = _name_map(controlnet_from_diffusers, config)
  state = _torch_state(table, params, "ControlNetModel",
                       conv_projections=not config["use_linear_projection"])
  return config, state


# ------------------------------------------------------------------------------ autoencoder


def autoencoder_to_diffusers(module: LDMAutoencoder, variables: Mapping, *, sample_size: int
                             ) -> Exported:
  """A jgen `LDMAutoencoder` as a diffusers ``AutoencoderKL`` (KL bottleneck) or ``VQModel``.

  Args:
    module: the first stage (its ``encoder``, ``decoder``, bottleneck and latent scale).
    variables: ``{"params": {"encoder", "decoder"[, "codebook"]}}`` or the inner tree.
    sample_size: the image size diffusers records (not used by its computation).

  Raises:
    ExportError: attention inside the levels (diffusers' VAE blocks have none), or other
      networks.
  """
  e, d = module.encoder, module.decoder
  if tuple(e.attn_resolutions) or tuple(d.attn_resolutions):
    raise ExportError(f"attn_resolutions={tuple(e.attn_resolutions)}: diffusers' VAE blocks "
                      "(DownEncoderBlock2D / UpDecoderBlock2D) have no attention inside the "
                      "levels, only in the middle block")
  if e.mid_attention != d.mid_attention:
    raise ExportError("the encoder and decoder differ in middle attention; diffusers' "
                      "mid_block_add_attention is one setting for both")
  params = _unwrap(variables)
  levels = len(e.ch_mult)
  config = {
      "_class_name": "AutoencoderKL" if module.bottleneck == "kl" else "VQModel",
      "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
      "block_out_channels": [e.ch * int(m) for m in e.ch_mult],
      "down_block_types": ["DownEncoderBlock2D"] * levels,
      "up_block_types": ["UpDecoderBlock2D"] * levels,
      "in_channels": int(np.shape(params["encoder"]["conv_in"]["kernel"])[2]),
      "out_channels": int(d.out_channels), "layers_per_block": int(e.num_res_blocks),
      "norm_num_groups": int(e.num_groups), "sample_size": int(sample_size),
      "scaling_factor": float(module.scaling_factor),
      "mid_block_add_attention": bool(e.mid_attention)}
  if module.bottleneck == "kl":
    config.update({"latent_channels": module.code_dim // 2, "force_upcast": True,
                   "shift_factor": float(module.shift_factor) if module.shift_factor else None,
                   "use_quant_conv": True, "use_post_quant_conv": True})
  else:
    if module.shift_factor:
      raise ExportError(f"shift_factor={module.shift_factor}: diffusers' VQModel has no shift")
    config.update({"latent_channels": int(e.out_channels), "vq_embed_dim": module.code_dim,
                   "num_vq_embeddings": int(module.num_codes), "norm_type": "group",
                   "lookup_from_codebook": False, "force_upcast": False})
  back = autoencoder_module(config, dtype=e.dtype)
  for ours, theirs in ((e, back.encoder), (d, back.decoder)):
    if _fields(ours) != _fields(theirs):
      raise ExportError(f"the diffusers config does not read back as this autoencoder: "
                        f"{_fields(theirs)} != {_fields(ours)}")
  table = _name_map(autoencoder_from_diffusers, config)
  return config, _torch_state(table, params, config["_class_name"], conv_projections=False)


def _fields(m: Any) -> dict[str, Any]:
  skip = ("parent", "name", "dtype", "dropout")
  return {k: _plain(getattr(m, k)) for k in m.__dataclass_fields__ if k not in skip}


# ------------------------------------------------------------------------------ files


def save_model(folder: str, config: Mapping[str, Any], state: Mapping[str, np.ndarray], *,
               dtype: Any = np.float32) -> str:
  """Writes a diffusers model folder: ``config.json`` and ``diffusion_pytorch_model.safetensors``.

  Args:
    folder: the folder (created; an existing config.json or weights file is not overwritten).
    config: the model's config (with ``_class_name`` and ``_diffusers_version``).
    state: torch-named arrays.
    dtype: the stored dtype (float32; ``np.float16`` halves the file).

  Returns:
    the folder.

  Raises:
    FileExistsError: the folder already holds a model.
    ImportError: the safetensors package is missing.
  """
  for name in ("config.json", WEIGHTS):
    if os.path.exists(os.path.join(folder, name)):
      raise FileExistsError(f"{folder} already holds {name}; export into a new folder")
  os.makedirs(folder, exist_ok=True)
  save_file({k: np.ascontiguousarray(v, dtype) for k, v in state.items()},
            os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
  ordered = {"_class_name": config["_class_name"],
             "_diffusers_version": config.get("_diffusers_version", DIFFUSERS_VERSION),
             **{k: config[k] for k in sorted(config) if not k.startswith("_")}}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(ordered, f, indent=2)
    f.write("\n")
  return folder
