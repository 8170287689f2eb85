"""Writes the U-Net conversion fixtures: tiny random diffusers U-Nets and their outputs.

    python benchmarks/unet_reference.py     # needs the `reference` extra (torch, diffusers)

Builds, from config dicts (no network), a ``UNet2DModel`` in the DDPM CIFAR-10 layout
(downsample_padding 0, flip_sin_to_cos False, freq_shift 1, eps 1e-6, one attention head), one
with diffusers' defaults, and ``UNet2DConditionModel`` in the SD 1.5 style (8-head-style head
count, 1x1-conv proj_in) and the SD 2.1 style (per-level heads of fixed width, Linear proj_in,
upcast attention). Every weight is redrawn N(0, 0.2^2), zero-initialised output layers included,
so no part of the map can hide behind a zero. Each model is saved with ``save_pretrained``
under ``tests/convert/fixtures/unet_<name>/``; ``tests/convert/fixtures/unet.npz`` holds the
inputs (NCHW as diffusers takes them) and diffusers' outputs. The DDPM model is also written
with the pre-0.14 attention names (``query/key/value/proj_attn``) as
``unet_ddpm_legacy.safetensors``, and the SD 1.5 one in the CompVis/LDM single-file layout
(``model.diffusion_model.*``) as ``unet_sd15_ldm.safetensors``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "convert", "fixtures")

SD_COMMON = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                 layers_per_block=1, cross_attention_dim=8, norm_num_groups=4)
CONFIGS = {
    "ddpm": (UNet2DModel, dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
        attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        norm_eps=1e-6)),
    "ddpm_defaults": (UNet2DModel, dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
        attention_head_dim=None)),
    "sd15": (UNet2DConditionModel, dict(
        SD_COMMON, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2)),
    "sd21": (UNet2DConditionModel, dict(
        SD_COMMON, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, upcast_attention=True)),
}


def ldm_unet_names(config: dict) -> dict[str, str]:
  """diffusers module prefix -> CompVis/LDM prefix of a UNet2DConditionModel (the inverse of
  what `jgen.convert.single_file` reads; written here independently from the LDM layout)."""
  levels = len(config["block_out_channels"])
  layers = config["layers_per_block"]
  attn = ["CrossAttn" in t for t in config["down_block_types"]]
  names = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
           "mid_block.resnets.1": "middle_block.2"}
  n = 1
  for level in range(levels):
    for b in range(layers):
      names[f"down_blocks.{level}.resnets.{b}"] = f"input_blocks.{n}.0"
      if attn[level]:
        names[f"down_blocks.{level}.attentions.{b}"] = f"input_blocks.{n}.1"
      n += 1
    if level != levels - 1:
      names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
      n += 1
  n = 0
  for i in range(levels):
    level = levels - 1 - i
    for b in range(layers + 1):
      names[f"up_blocks.{i}.resnets.{b}"] = f"output_blocks.{n}.0"
      if attn[level]:
        names[f"up_blocks.{i}.attentions.{b}"] = f"output_blocks.{n}.1"
      if b == layers and level != 0:
        index = 2 if attn[level] else 1
        names[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{n}.{index}.conv"
      n += 1
  return names


RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def to_ldm(state: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
  prefixes = sorted(ldm_unet_names(config).items(), key=lambda kv: -len(kv[0]))
  out = {}
  for key, value in state.items():
    for new, old in prefixes:
      if key.startswith(new + "."):
        rest = key[len(new) + 1:]
        if ".resnets." in new or new.startswith("mid_block.resnets"):
          head, _, tail = rest.partition(".")
          rest = f"{RESNET[head]}.{tail}"
        out[f"model.diffusion_model.{old}.{rest}"] = value
        break
    else:
      raise KeyError(f"no LDM name for {key}")
  return out


def main() -> None:
  os.makedirs(OUT, exist_ok=True)
  torch.manual_seed(0)
  rng = np.random.RandomState(0)
  arrays = {}
  for name, (cls, config) in CONFIGS.items():
    model = cls(**config).eval()
    with torch.no_grad():
      for p in model.parameters():
        p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(os.path.join(OUT, f"unet_{name}"))
    c_in = config["in_channels"]
    x = rng.randn(2, c_in, 8, 8).astype(np.float32)
    t = np.array([3, 801], np.int64)
    kwargs = {}
    if cls is UNet2DConditionModel:
      context = rng.randn(2, 5, config["cross_attention_dim"]).astype(np.float32)
      kwargs["encoder_hidden_states"] = torch.from_numpy(context)
      arrays[f"{name}_context"] = context
    with torch.no_grad():
      y = model(torch.from_numpy(x), torch.from_numpy(t), **kwargs).sample.numpy()
    arrays[f"{name}_x"], arrays[f"{name}_t"], arrays[f"{name}_out"] = x, t, y
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    if name == "ddpm":
      legacy = {}
      for k, v in state.items():
        for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                         (".to_out.0.", ".proj_attn.")):
          k = k.replace(new, old)
        legacy[k] = v
      save_file(legacy, os.path.join(OUT, "unet_ddpm_legacy.safetensors"))
    if name == "sd15":
      save_file(to_ldm(state, config), os.path.join(OUT, "unet_sd15_ldm.safetensors"))
  np.savez(os.path.join(OUT, "unet.npz"), **arrays)
  print("wrote", sorted(arrays), "to", os.path.abspath(OUT))


if __name__ == "__main__":
  main()
