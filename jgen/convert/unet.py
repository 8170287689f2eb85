"""diffusers U-Nets (``UNet2DModel``, ``UNet2DConditionModel``) as `jgen.nn.unet.UNet`.

**Config.** `unet_settings(config)` reads a diffusers ``config.json`` into `UNet` fields:
``block_out_channels = ch * ch_mult``, ``layers_per_block = num_res_blocks``, attention on the
levels whose down block type has ``Attn`` in its name (``attn_levels``), ``norm_num_groups``,
``norm_eps``, ``downsample_padding``, ``flip_sin_to_cos`` and ``freq_shift``; a
``UNet2DConditionModel`` adds ``cross_attention_dim = context_dim``,
``attention="transformer"``, the heads (diffusers' ``num_attention_heads``, or its older
``attention_head_dim``, which despite its name held the head count in SD 1.x configs: 8; SD 2.x
configs give ``attention_head_dim = [5, 10, 20, 20]``, i.e. 64 channels per head), and
``transformer_layers_per_block``. Anything jgen's U-Net does not build (class or added
embeddings, SDXL's ``addition_embed_type``, a ``time_cond_proj_dim``, other kernels or
activations, dual/only cross-attention) is refused by name before any weight is read.

**Names.** Per block (diffusers -> jgen; level l, block b, up block i = level L - 1 - i):

    time_embedding.linear_1 / linear_2          temb_dense0 / temb_dense1
    conv_in, conv_out, conv_norm_out            conv_in, conv_out, norm_out/norm
    down_blocks.l.resnets.b.*                   down_l_block_b/*
      norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut
                                                norm1/norm, conv1, temb_proj, norm2/norm, conv2,
                                                nin_shortcut
    down_blocks.l.attentions.b                  down_l_block_b_attn
    down_blocks.l.downsamplers.0.conv           down_l_downsample/conv
    mid_block.resnets.0 / 1, attentions.0       mid_block_1 / mid_block_2, mid_attn_1
    up_blocks.i.resnets.b, attentions.b         up_l_block_b, up_l_block_b_attn
    up_blocks.i.upsamplers.0.conv               up_l_upsample/conv

A DDPM attention block: ``group_norm, to_q, to_k, to_v, to_out.0`` (files before diffusers 0.14:
``query, key, value, proj_attn``) -> ``norm/norm, q, k, v, proj_out``. A transformer:
``norm, proj_in, transformer_blocks.n.{norm1, attn1.{to_q, to_k, to_v, to_out.0}, norm2, attn2,
norm3, ff.net.0.proj, ff.net.2}, proj_out`` -> ``norm/norm, proj_in, block_n/{norm1, attn1/{to_q,
to_k, to_v, to_out}, norm2, attn2, norm3, ff_proj, ff_out}, proj_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen import errors
from jgen.convert.common import StateDict, Tree
from jgen.nn.unet import UNet

__all__ = ["UNSUPPORTED", "UNetConfigError", "fill_unet", "unet_from_diffusers", "unet_settings",
           "unet_shapes"]

# config keys whose non-default value jgen's U-Net does not build, with the default it needs.
UNSUPPORTED = {
    "class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None,
    "encoder_hid_dim": None, "time_cond_proj_dim": None, "timestep_post_act": None,
    "time_embedding_type": "positional", "act_fn": "silu", "resnet_time_scale_shift": "default",
    "conv_in_kernel": 3, "conv_out_kernel": 3, "dual_cross_attention": False,
    "only_cross_attention": False, "center_input_sample": False, "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None,
    "attention_type": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_act_fn": None, "time_embedding_dim": None, "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None, "reverse_transformer_layers_per_block": None,
    "num_train_timesteps": None, "add_attention": True, "dropout": 0.0,
    "downsample_type": "conv", "upsample_type": "conv",
}
_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "ControlNetModel")


class UNetConfigError(errors.ConversionError):
  """A diffusers U-Net config that jgen's U-Net cannot reproduce."""


def _per_level(value: Any, levels: int, what: str) -> tuple[int, ...]:
  if isinstance(value, (list, tuple)):
    if len(value) != levels:
      raise UNetConfigError(f"{what} has {len(value)} entries for {levels} levels")
    return tuple(int(v) for v in value)
  return (int(value),) * levels


def unet_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """`UNet` keyword arguments equal to a diffusers U-Net config (see the module docstring).

  Raises:
    UNetConfigError: a class or a setting jgen's U-Net does not reproduce (named).
  """
  kind = config.get("_class_name") or ("UNet2DConditionModel" if "cross_attention_dim" in config
                                       else "UNet2DModel")
  if kind not in _CLASSES:
    raise UNetConfigError(f"config _class_name {kind!r} is not a U-Net; known: {_CLASSES}")
  bad = [f"{k}={config[k]!r} (jgen needs {v!r})" for k, v in UNSUPPORTED.items()
         if k in config and config[k] != v and not (v is None and config[k] in (None, False))]
  if bad:
    raise UNetConfigError(f"{kind} settings jgen's U-Net does not build: {', '.join(bad)}. SDXL, "
                          "class-embedding and LCM-distilled U-Nets are not supported yet.")
  if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") not in (
      "UNetMidBlock2D", "UNetMidBlock2DCrossAttn"):
    raise UNetConfigError(f"mid_block_type={config.get('mid_block_type')!r}: jgen's U-Net always "
                          "has a middle block with attention")
  channels = [int(c) for c in config["block_out_channels"]]
  ch = channels[0]
  if any(c % ch for c in channels):
    raise UNetConfigError(f"block_out_channels {channels} must be multiples of the first")
  levels = len(channels)
  down = list(config.get("down_block_types", ()))
  if len(down) != levels:
    raise UNetConfigError(f"{len(down)} down_block_types for {levels} block_out_channels")
  up = list(config.get("up_block_types", ())) if kind != "ControlNetModel" else []
  attn_levels = tuple(i for i, t in enumerate(down) if "Attn" in t)
  if up and tuple(levels - 1 - i for i, t in enumerate(up) if "Attn" in t)[::-1] != attn_levels:
    raise UNetConfigError(f"up_block_types {up} do not mirror down_block_types {down}")
  layers = config.get("layers_per_block", 2)
  if isinstance(layers, (list, tuple)):
    if len(set(layers)) != 1:
      raise UNetConfigError(f"layers_per_block {layers} differ by level; jgen uses one count")
    layers = layers[0]
  out = dict(
      ch=ch, ch_mult=tuple(c // ch for c in channels), num_res_blocks=int(layers),
      attn_levels=attn_levels, attn_resolutions=(), dropout=0.0,
      num_groups=int(config.get("norm_num_groups", 32)),
      norm_eps=float(config.get("norm_eps", 1e-5)),
      downsample_padding=int(config.get("downsample_padding", 1)),
      flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
      freq_shift=float(config.get("freq_shift", 0)),
      out_ch=int(config.get("out_channels", config.get("in_channels", 4))))
  if kind == "UNet2DModel":
    head_dim = config.get("attention_head_dim", None)
    if head_dim is not None and attn_levels and any(
        int(head_dim) != channels[i] for i in attn_levels):
      raise UNetConfigError(f"attention_head_dim={head_dim}: jgen's DDPM attention has one head "
                            "over all channels")
    return out
  heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
  depth = config.get("transformer_layers_per_block", 1)
  if isinstance(depth, (list, tuple)):
    if len(set(depth)) != 1:
      raise UNetConfigError(f"transformer_layers_per_block {depth} differs by level")
    depth = depth[0]
  out.update(context_dim=int(config["cross_attention_dim"]), attention="transformer",
             transformer_heads=_per_level(heads, levels, "num_attention_heads"),
             transformer_depth=int(depth))
  return out


def unet_shapes(module: UNet, in_channels: int) -> Any:
  """The parameter shapes of `module` (no arrays are allocated)."""
  size = 2 ** (len(module.ch_mult) - 1)
  x = jnp.zeros((1, size, size, in_channels))
  conditions = {"context": jnp.zeros((1, 1, module.context_dim))} if module.context_dim else None
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, jnp.zeros((1,)), conditions,
                                            train=False))["params"]


def _resnet(tree: Tree, path: str, name: str) -> None:
  for jgen_name, torch_name in (("norm1/norm", "norm1"), ("norm2/norm", "norm2")):
    tree.norm(f"{path}/{jgen_name}", f"{name}.{torch_name}")
  tree.conv(f"{path}/conv1", f"{name}.conv1")
  tree.conv(f"{path}/conv2", f"{name}.conv2")
  tree.dense(f"{path}/temb_proj", f"{name}.time_emb_proj")
  if tree.source.has(f"{name}.conv_shortcut.weight"):
    tree.conv(f"{path}/nin_shortcut", f"{name}.conv_shortcut")


def _ddpm_attention(tree: Tree, path: str, name: str) -> None:
  legacy = tree.source.has(f"{name}.query.weight")
  tree.norm(f"{path}/norm/norm", f"{name}.group_norm")
  for jgen_name, new, old in (("q", "to_q", "query"), ("k", "to_k", "key"),
                              ("v", "to_v", "value"), ("proj_out", "to_out.0", "proj_attn")):
    tree.dense(f"{path}/{jgen_name}", f"{name}.{old if legacy else new}")


def _transformer(tree: Tree, path: str, name: str, depth: int) -> None:
  tree.norm(f"{path}/norm/norm", f"{name}.norm")
  tree.dense(f"{path}/proj_in", f"{name}.proj_in")
  tree.dense(f"{path}/proj_out", f"{name}.proj_out")
  for n in range(depth):
    p, b = f"{path}/block_{n}", f"{name}.transformer_blocks.{n}"
    for norm in ("norm1", "norm2", "norm3"):
      tree.norm(f"{p}/{norm}", f"{b}.{norm}")
    for attn in ("attn1", "attn2"):
      for proj in ("to_q", "to_k", "to_v"):
        tree.dense(f"{p}/{attn}/{proj}", f"{b}.{attn}.{proj}", bias=False)
      tree.dense(f"{p}/{attn}/to_out", f"{b}.{attn}.to_out.0")
    tree.dense(f"{p}/ff_proj", f"{b}.ff.net.0.proj")
    tree.dense(f"{p}/ff_out", f"{b}.ff.net.2")


def fill_unet(tree: Tree, module: UNet, *, up: bool = True) -> None:
  """Puts every U-Net leaf (the down path and middle only with ``up=False``) into `tree`."""
  attention = (lambda p, n: _transformer(tree, p, n, module.transformer_depth)
               if module.attention == "transformer" else _ddpm_attention(tree, p, n))
  levels = len(module.ch_mult)
  tree.dense("temb_dense0", "time_embedding.linear_1")
  tree.dense("temb_dense1", "time_embedding.linear_2")
  tree.conv("conv_in", "conv_in")
  for level in range(levels):
    for b in range(module.num_res_blocks):
      _resnet(tree, f"down_{level}_block_{b}", f"down_blocks.{level}.resnets.{b}")
      if level in module.attn_levels:
        attention(f"down_{level}_block_{b}_attn", f"down_blocks.{level}.attentions.{b}")
    if level != levels - 1:
      tree.conv(f"down_{level}_downsample/conv", f"down_blocks.{level}.downsamplers.0.conv")
  _resnet(tree, "mid_block_1", "mid_block.resnets.0")
  attention("mid_attn_1", "mid_block.attentions.0")
  _resnet(tree, "mid_block_2", "mid_block.resnets.1")
  if not up:
    return
  for i in range(levels):
    level = levels - 1 - i
    for b in range(module.num_res_blocks + 1):
      _resnet(tree, f"up_{level}_block_{b}", f"up_blocks.{i}.resnets.{b}")
      if level in module.attn_levels:
        attention(f"up_{level}_block_{b}_attn", f"up_blocks.{i}.attentions.{b}")
    if level != 0:
      tree.conv(f"up_{level}_upsample/conv", f"up_blocks.{i}.upsamplers.0.conv")
  tree.norm("norm_out/norm", "conv_norm_out")
  tree.conv("conv_out", "conv_out")


def unet_from_diffusers(config: Mapping[str, Any], state: Mapping[str, Any], *,
                        dtype: Any = np.float32) -> tuple[UNet, dict[str, Any]]:
  """A diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` as ``(UNet, {"params": ...})``.

  Args:
    config: the model's ``config.json``.
    state: its state dict (torch names -> arrays; lazily read arrays are fine).
    dtype: dtype of the converted parameters.

  Raises:
    UNetConfigError: a config jgen's U-Net does not reproduce.
    ConversionError: the weights do not fit the config (missing / unexpected / mis-shaped).
  """
  module = UNet(**unet_settings(config))
  tree = Tree(StateDict(state), dtype)
  fill_unet(tree, module)
  expected = unet_shapes(module, int(config.get("in_channels", 4)))
  return module, {"params": tree.finish(expected, config.get("_class_name", "UNet"))}
