"""Single-file CompVis / LDM / Stable Diffusion checkpoints (``.ckpt``, ``.safetensors``).

One file holds the whole model under prefixes: ``model.diffusion_model.*`` (the U-Net),
``first_stage_model.*`` (the VAE), ``cond_stage_model.transformer.*`` (SD 1.x: transformers'
CLIP names) or ``cond_stage_model.model.*`` (SD 2.x: OpenCLIP, fused ``in_proj``), and in
training checkpoints ``model_ema.*`` (the EMA of the U-Net, its names with the dots removed:
``model_ema.diffusion_modelinput_blocks00weight``). Each part is renamed to the diffusers names
(`jgen.convert.common.Renamed`, lazily: nothing is copied) and converted by the diffusers
converter, so there is one name map per model, not two.

U-Net names (LDM -> diffusers; n counts the input blocks from 1, the output blocks from 0):

    time_embed.0 / .2                 time_embedding.linear_1 / linear_2
    input_blocks.0.0                  conv_in
    input_blocks.n.0 / .1             down_blocks.l.resnets.b / attentions.b
    input_blocks.n.0.op               down_blocks.l.downsamplers.0.conv
    middle_block.0 / .1 / .2          mid_block.resnets.0 / attentions.0 / resnets.1
    output_blocks.n.0 / .1            up_blocks.i.resnets.b / attentions.b
    output_blocks.n.{1|2}.conv        up_blocks.i.upsamplers.0.conv
    out.0 / out.2                     conv_norm_out / conv_out
    resnet in_layers.0 / .2, emb_layers.1, out_layers.0 / .3, skip_connection
                                      norm1 / conv1, time_emb_proj, norm2 / conv2, conv_shortcut

**The U-Net config from shapes** (`unet_config_from_state`): channels per level, blocks per
level, attention levels, the context width (``attn2.to_k``), ``proj_in`` a 1x1 conv (SD 1.x)
or a matrix (SD 2.x), transformer depth, in/out channels. What shapes cannot tell takes the
Stable Diffusion values: 8 heads for SD 1.x, heads of 64 channels for SD 2.x, 32 groups, norm
epsilon 1e-5; and eps vs v prediction (SD 2.x 768 models predict v: ``--prediction=v``).
``overrides`` replaces any of them (tiny test models; a diffusers ``config.json``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jgen.convert.common import Renamed

__all__ = ["UNET_PREFIX", "detect_parts", "ldm_unet_to_diffusers_names", "unet_config_from_state"]

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def detect_parts(state: Mapping[str, Any]) -> dict[str, str]:
  """``{"unet" | "vae" | "text_encoder": kind}`` of the parts present in a single file.

  Kinds: ``unet``: "ldm"; ``vae``: "ldm"; ``text_encoder``: "sd1" (transformers names) or
  "openclip" (SD 2.x).
  """
  parts = {}
  keys = list(state)
  if any(k.startswith(UNET_PREFIX) for k in keys):
    parts["unet"] = "ldm"
  if any(k.startswith("first_stage_model.") for k in keys):
    parts["vae"] = "ldm"
  if any(k.startswith("cond_stage_model.transformer.") for k in keys):
    parts["text_encoder"] = "sd1"
  elif any(k.startswith("cond_stage_model.model.") for k in keys):
    parts["text_encoder"] = "openclip"
  return parts


def _indices(keys: list[str], pattern: str) -> list[int]:
  return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def unet_config_from_state(state: Mapping[str, Any], prefix: str = UNET_PREFIX,
                           overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """A diffusers ``UNet2DConditionModel`` config for an LDM-layout U-Net, read from shapes.

  Raises:
    ValueError: the state dict has no U-Net under `prefix`.
  """
  keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
  if not keys:
    raise ValueError(f"no U-Net weights under {prefix!r} in this checkpoint")
  shape = lambda name: tuple(np.shape(state[prefix + name]))
  inputs = _indices(keys, r"input_blocks\.(\d+)\.")
  down = [n for n in inputs if f"input_blocks.{n}.0.op.weight" in keys]
  levels = len(down) + 1
  layers = (len(inputs) - 1 - len(down)) // levels
  channels, attention, n = [], [], 1
  for level in range(levels):
    channels.append(shape(f"input_blocks.{n}.0.out_layers.3.weight")[0])
    attention.append(f"input_blocks.{n}.1.proj_in.weight" in keys)
    n += layers + (level != levels - 1)
  first_attn = next(k for k in keys if k.endswith("attn2.to_k.weight"))
  linear = len(shape(first_attn.split(".transformer_blocks.")[0] + ".proj_in.weight")) == 2
  depth = len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
  heads = [c // 64 for c in channels] if linear else 8
  config = {
      "_class_name": "UNet2DConditionModel",
      "in_channels": shape("input_blocks.0.0.weight")[1],
      "out_channels": shape("out.2.weight")[0],
      "block_out_channels": channels, "layers_per_block": layers,
      "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
      "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention[::-1]],
      "cross_attention_dim": shape(first_attn)[1], "attention_head_dim": heads,
      "use_linear_projection": linear, "transformer_layers_per_block": depth,
      "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0,
      "downsample_padding": 1,
  }
  config.update(overrides or {})
  return config


def _prefix_table(config: Mapping[str, Any]) -> list[tuple[str, str]]:
  """(LDM prefix, diffusers prefix) pairs, longest LDM prefix first."""
  levels = len(config["block_out_channels"])
  layers = int(config["layers_per_block"])
  attn = ["Attn" in t for t in config["down_block_types"]]
  table = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
           "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
           "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
           "middle_block.2": "mid_block.resnets.1"}
  n = 1
  for level in range(levels):
    for b in range(layers):
      table[f"input_blocks.{n}.0"] = f"down_blocks.{level}.resnets.{b}"
      if attn[level]:
        table[f"input_blocks.{n}.1"] = f"down_blocks.{level}.attentions.{b}"
      n += 1
    if level != levels - 1:
      table[f"input_blocks.{n}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
      n += 1
  n = 0
  for i in range(levels):
    level = levels - 1 - i
    for b in range(layers + 1):
      table[f"output_blocks.{n}.0"] = f"up_blocks.{i}.resnets.{b}"
      if attn[level]:
        table[f"output_blocks.{n}.1"] = f"up_blocks.{i}.attentions.{b}"
      if b == layers and level != 0:
        table[f"output_blocks.{n}.{2 if attn[level] else 1}.conv"] = (
            f"up_blocks.{i}.upsamplers.0.conv")
      n += 1
  return sorted(table.items(), key=lambda kv: -len(kv[0]))


def ldm_unet_to_diffusers_names(state: Mapping[str, Any], config: Mapping[str, Any], *,
                                prefix: str = UNET_PREFIX, ema: bool = False) -> Renamed:
  """The U-Net of a single file under diffusers names (a lazy view).

  Args:
    state: the whole checkpoint.
    config: its U-Net config (`unet_config_from_state`).
    prefix: where the U-Net sits.
    ema: read the ``model_ema.*`` copy instead (training checkpoints).

  Raises:
    ValueError: ``ema`` on a file without EMA weights.
  """
  table = _prefix_table(config)
  names: dict[str, str] = {}
  if ema and not any(k.startswith(EMA_PREFIX) and k != EMA_PREFIX + "decay"
                     and k != EMA_PREFIX + "num_updates" for k in state):
    raise ValueError("this checkpoint has no model_ema.* weights (an EMA-only or pruned file): "
                     "convert it without --ema")
  for key in state:
    if not key.startswith(prefix):
      continue
    rest = key[len(prefix):]
    for old, new in table:
      if rest.startswith(old + "."):
        tail = rest[len(old) + 1:]
        if ".resnets." in new:
          for ldm_name, diffusers_name in _RESNET.items():
            if tail.startswith(ldm_name + "."):
              tail = diffusers_name + tail[len(ldm_name):]
              break
        source = key
        if ema:
          source = EMA_PREFIX + ("diffusion_model." + rest).replace(".", "")
        names[f"{new}.{tail}"] = source
        break
    else:
      names[f"(unmapped LDM name) {rest}"] = key
  return Renamed(state, names)
