"""diffusers ``AutoencoderKL`` (Stable Diffusion's VAE) and ``VQModel`` onto jgen's first stage.

`autoencoder_from_diffusers(config, state)` reads a diffusers ``vae/config.json`` (dispatching
on ``_class_name``) and its state dict, and returns an `LDMAutoencoder` with its variables
``{"params": {"encoder", "decoder"[, "codebook"]}}``: the first-stage method's layout, so
``variables["params"]`` drops into ``state.frozen["autoencoder"]`` of latent diffusion.
`first_stage_config(config)` gives the ``autoencoder.first_stage`` config values (``model.ch``,
``ch_mult``, ``bottleneck.kind`` ...) of a run record that rebuilds the same networks.
`ldm_vae_to_diffusers_names(state)` views a CompVis / LDM single file's ``first_stage_model.*``
under diffusers' names, so the same converter reads it, and `autoencoder_config_from_state`
reads the config such a file does not carry from its shapes (all but the GroupNorm groups and
the latent scale, which are arguments).

What corresponds (diffusers -> jgen), with L levels of ``block_out_channels`` = ch * ch_mult:

* ``encoder.down_blocks.i.resnets.j`` -> ``encoder/down_{i}_block_{j}``; ``downsamplers.0.conv``
  (``F.pad(0, 1, 0, 1)`` + VALID stride-2 conv) -> ``down_{i}_downsample/conv`` (a SAME
  stride-2 conv, which pads bottom/right only on even sizes: the same map);
* ``decoder.up_blocks.k`` -> ``decoder/up_{L-1-k}_*`` (diffusers numbers up blocks from the
  deepest, jgen and LDM by level);
* ``mid_block.resnets.0/1`` -> ``mid_block_1/2``, ``mid_block.attentions.0`` (one head of all
  channels, softmax(q k^T / sqrt(C)) v, GroupNorm eps 1e-6; Linear ``to_q/to_k/to_v/to_out.0``,
  or ``query/key/value/proj_attn`` in old files) -> ``mid_attn/{q,k,v,proj_out}``;
* ResnetBlock2D ``norm1, conv1, norm2, conv2, conv_shortcut`` -> ``Norm_0, Conv_0, Norm_1,
  Conv_1, Conv_2`` (GroupNorm eps 1e-6 in both);
* ``quant_conv`` -> ``encoder/quant_conv``, ``post_quant_conv`` -> ``decoder/post_quant_conv``
  (with ``use_quant_conv=False`` / ``use_post_quant_conv=False`` the jgen conv is the identity);
* ``quantize.embedding.weight`` `[K, D]` -> ``codebook``.

Supported: ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` blocks, ``act_fn="silu"``, the
``"group"`` norm of ``VQModel``'s decoder (``"spatial"``, MoVQ's latent-conditioned norm, is
refused), with or without the middle attention, ``vq_embed_dim`` other than
``latent_channels``. ``force_upcast`` (diffusers pipelines run such a VAE in float32) makes the
converted module compute in float32 whatever ``dtype`` asks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.nn.ldm_autoencoder import LDMAutoencoder, example_input
from jgen.nn.ldm_networks import LDMDecoder, LDMEncoder
from jgen.convert.common import Renamed, StateDict, Tree, flatten_tree

PyTree = Any
log = logging.getLogger("jgen")

__all__ = ["CLASSES", "autoencoder_config_from_state", "autoencoder_from_diffusers",
           "autoencoder_module", "first_stage_config", "ldm_vae_to_diffusers_names"]

CLASSES = ("AutoencoderKL", "VQModel")
_DEFAULTS = {  # the diffusers constructors' defaults, for configs that leave keys out
    "AutoencoderKL": dict(layers_per_block=1, latent_channels=4, scaling_factor=0.18215,
                          force_upcast=True),
    "VQModel": dict(layers_per_block=1, latent_channels=3, scaling_factor=0.18215,
                    force_upcast=False),
}


def _class_name(config: Mapping) -> str:
  name = config.get("_class_name")
  if name is None:  # a hand-written config: a VQModel has a codebook size
    name = "VQModel" if "num_vq_embeddings" in config else "AutoencoderKL"
  if name not in CLASSES:
    raise ValueError(f"config _class_name={name!r} is not an autoencoder this converter "
                     f"reads; it reads {CLASSES} (diffusers' vae/config.json)")
  return name


def _get(config: Mapping, key: str, default: Any = None) -> Any:
  value = config.get(key)
  if value is None:
    value = _DEFAULTS[_class_name(config)].get(key, default)
  return value


def _widths(config: Mapping) -> tuple[int, tuple[int, ...]]:
  """`(ch, ch_mult)` of ``block_out_channels``, checked against the block types."""
  widths = tuple(int(c) for c in config.get("block_out_channels") or (64,))
  levels = len(widths)
  for key, block in (("down_block_types", "DownEncoderBlock2D"),
                     ("up_block_types", "UpDecoderBlock2D")):
    types = tuple(config.get(key) or (block,))
    if len(types) != levels or any(t != block for t in types):
      raise ValueError(f"{key}={types}: jgen's LDM encoder/decoder have one {block} per "
                       f"level of block_out_channels={widths}; other blocks are not supported")
  ch = widths[0]
  if any(w % ch for w in widths):
    raise ValueError(f"block_out_channels={widths} are not multiples of the first, so they "
                     "are not ch * ch_mult as jgen's LDM networks need")
  return ch, tuple(w // ch for w in widths)


def autoencoder_module(config: Mapping, *, dtype: Any = jnp.float32) -> LDMAutoencoder:
  """The `LDMAutoencoder` of a diffusers ``AutoencoderKL`` / ``VQModel`` config.

  Args:
    config: the model's config.json as a dict.
    dtype: compute dtype (float32 regardless when the config sets ``force_upcast``).

  Raises:
    ValueError: a config jgen's networks cannot express (the message says which key).
  """
  name = _class_name(config)
  ch, ch_mult = _widths(config)
  act = config.get("act_fn") or "silu"
  if act not in ("silu", "swish"):
    raise ValueError(f"act_fn={act!r}: jgen's LDM networks use silu (swish) only")
  norm_type = config.get("norm_type") or "group"
  if norm_type != "group":
    raise ValueError(f"norm_type={norm_type!r}: jgen's LDMDecoder has GroupNorm ('group') "
                     "only; the 'spatial' norm of MoVQ (Kandinsky) conditions every decoder "
                     "norm on the latent and is not supported")
  groups = int(config.get("norm_num_groups") or 32)
  for w in (ch * m for m in ch_mult):
    if w % groups:
      raise ValueError(f"norm_num_groups={groups} does not divide the width {w}")
  if _get(config, "force_upcast", False) and jnp.dtype(dtype) != jnp.float32:
    log.info("%s sets force_upcast: computing in float32, not %s (as diffusers pipelines "
             "do)", name, jnp.dtype(dtype).name)
    dtype = jnp.float32
  shared = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=int(_get(config, "layers_per_block")),
                attn_resolutions=(), num_groups=groups, dropout=0.0,
                mid_attention=bool(config.get("mid_block_add_attention", True)), dtype=dtype)
  latent = int(_get(config, "latent_channels"))
  out_channels = int(config.get("out_channels") or 3)
  scale = dict(scaling_factor=float(_get(config, "scaling_factor")),
               shift_factor=float(config.get("shift_factor") or 0.0))
  if name == "AutoencoderKL":
    return LDMAutoencoder(encoder=LDMEncoder(out_channels=2 * latent, **shared),
                          decoder=LDMDecoder(out_channels=out_channels, **shared),
                          bottleneck="kl", **scale)
  code_dim = int(config.get("vq_embed_dim") or latent)
  other = code_dim != latent
  return LDMAutoencoder(
      encoder=LDMEncoder(out_channels=latent, embed_dim=code_dim if other else None, **shared),
      decoder=LDMDecoder(out_channels=out_channels, z_channels=latent if other else None,
                         **shared),
      bottleneck="vq", num_codes=int(config.get("num_vq_embeddings") or 256), **scale)


def first_stage_config(config: Mapping) -> dict[str, Any]:
  """The ``autoencoder.first_stage`` config values whose `make_method` builds these networks.

  Returns:
    ``{"method", "model": {ch, ch_mult, num_res_blocks, attn_resolutions, num_groups,
    dropout}, "bottleneck": {kind, embed_dim[, num_codes]}, "data": {channels},
    "ldm": {scale_factor}}``; ``ldm.scale_factor`` is for the latent diffusion run on it.

  Raises:
    ValueError: a model the first-stage config cannot express (it has one channel count for
      the images in and out, the VQ code dimension equal to the encoder's, a middle
      attention, no latent shift).
  """
  ae = autoencoder_module(config)
  e = ae.encoder
  in_channels = int(config.get("in_channels") or 3)
  if in_channels != ae.decoder.out_channels:
    raise ValueError(f"in_channels={in_channels} != out_channels={ae.decoder.out_channels}: "
                     "the first-stage config has one data.channels for both")
  if e.embed_dim is not None:
    raise ValueError(f"vq_embed_dim={e.embed_dim} != latent_channels={e.out_channels}: the "
                     "first-stage config has one bottleneck.embed_dim; use the converted "
                     "LDMAutoencoder directly")
  if not e.mid_attention:
    raise ValueError("mid_block_add_attention=False: the first-stage config always has the "
                     "middle attention; use the converted LDMAutoencoder directly")
  if ae.shift_factor:
    raise ValueError(f"shift_factor={ae.shift_factor}: jgen's latent diffusion scales latents "
                     "but does not shift them; use the converted LDMAutoencoder directly")
  bottleneck = {"kind": ae.bottleneck, "embed_dim": ae.code_dim // 2 if ae.bottleneck == "kl"
                else ae.code_dim}
  if ae.bottleneck == "vq":
    bottleneck["num_codes"] = ae.num_codes
  return {
      "method": "autoencoder.first_stage",
      "model": dict(ch=e.ch, ch_mult=tuple(e.ch_mult), num_res_blocks=e.num_res_blocks,
                    attn_resolutions=(), num_groups=e.num_groups, dropout=0.0),
      "bottleneck": bottleneck,
      "data": {"channels": ae.decoder.out_channels},
      "ldm": {"scale_factor": ae.scaling_factor},
  }


def _resnet(tree: Tree, want: Mapping, path: str, name: str) -> None:
  """diffusers ResnetBlock2D -> jgen ResBlock (numbered submodules)."""
  tree.norm(f"{path}/Norm_0/norm", f"{name}.norm1")
  tree.conv(f"{path}/Conv_0", f"{name}.conv1")
  tree.norm(f"{path}/Norm_1/norm", f"{name}.norm2")
  tree.conv(f"{path}/Conv_1", f"{name}.conv2")
  if f"{path}/Conv_2/kernel" in want or tree.source.has(f"{name}.conv_shortcut.weight"):
    tree.conv(f"{path}/Conv_2", f"{name}.conv_shortcut")


def _attention(tree: Tree, path: str, name: str) -> None:
  """diffusers' VAE Attention (or the old AttentionBlock names) -> jgen AttnBlock."""
  old = tree.source.has(f"{name}.query.weight") and not tree.source.has(f"{name}.to_q.weight")
  names = ("query", "key", "value", "proj_attn") if old else ("to_q", "to_k", "to_v", "to_out.0")
  tree.norm(f"{path}/norm/norm", f"{name}.group_norm")
  for jgen_name, torch_name in zip(("q", "k", "v", "proj_out"), names):
    tree.dense(f"{path}/{jgen_name}", f"{name}.{torch_name}")


def _middle(tree: Tree, want: Mapping, path: str, name: str, attention: bool) -> None:
  _resnet(tree, want, f"{path}/mid_block_1", f"{name}.mid_block.resnets.0")
  if attention:
    _attention(tree, f"{path}/mid_attn", f"{name}.mid_block.attentions.0")
  _resnet(tree, want, f"{path}/mid_block_2", f"{name}.mid_block.resnets.1")


def _one_by_one(tree: Tree, path: str, name: str, present: bool, channels: int) -> None:
  """A 1x1 conv, or the identity where the config has none (``use_quant_conv=False``)."""
  if present:
    tree.conv(path, name)
    return
  tree.leaves[f"{path}/kernel"] = np.eye(channels, dtype=tree.dtype)[None, None]
  tree.leaves[f"{path}/bias"] = np.zeros((channels,), tree.dtype)
  tree.origin[f"{path}/kernel"] = tree.origin[f"{path}/bias"] = f"(identity: no {name})"


def autoencoder_from_diffusers(config: Mapping, state: Mapping[str, Any], *,
                               dtype: Any = jnp.float32, prefix: str = ""
                               ) -> tuple[LDMAutoencoder, PyTree]:
  """A diffusers ``AutoencoderKL`` or ``VQModel`` as an `LDMAutoencoder` and its variables.

  Args:
    config: the model's config.json as a dict (``_class_name`` picks KL or VQ).
    state: its state dict, name -> array (numpy, or a lazy mapping such as a safetensors
      file or `ldm_vae_to_diffusers_names` of a single file).
    dtype: compute dtype of the module (parameters are float32).
    prefix: prepended to every name (``"vae."`` for a state dict of a whole pipeline).

  Returns:
    `(module, variables)`: ``module.apply(variables, images, method=module.encode)`` etc.;
    ``variables = {"params": {"encoder", "decoder"[, "codebook"]}}``.

  Raises:
    ValueError: a config jgen's networks cannot express.
    ConversionError: the state dict does not fit the config (every missing, unexpected and
      mis-shaped name listed).
  """
  module = autoencoder_module(config, dtype=dtype)
  channels = int(config.get("in_channels") or 3)
  want = flatten_tree(jax.eval_shape(module.init, jax.random.key(0),
                                     example_input(module, channels))["params"])
  tree = Tree(StateDict(state, prefix))
  e, levels = module.encoder, len(module.encoder.ch_mult)
  tree.conv("encoder/conv_in", "encoder.conv_in")
  for i in range(levels):
    for j in range(e.num_res_blocks):
      _resnet(tree, want, f"encoder/down_{i}_block_{j}", f"encoder.down_blocks.{i}.resnets.{j}")
    if i + 1 < levels:
      tree.conv(f"encoder/down_{i}_downsample/conv", f"encoder.down_blocks.{i}.downsamplers.0.conv")
  _middle(tree, want, "encoder", "encoder", e.mid_attention)
  tree.norm("encoder/norm_out/norm", "encoder.conv_norm_out")
  tree.conv("encoder/conv_out", "encoder.conv_out")
  _one_by_one(tree, "encoder/quant_conv", "quant_conv", config.get("use_quant_conv", True),
              module.code_dim)
  latent = module.code_dim // 2 if module.bottleneck == "kl" else module.code_dim
  _one_by_one(tree, "decoder/post_quant_conv", "post_quant_conv",
              config.get("use_post_quant_conv", True), latent)
  tree.conv("decoder/conv_in", "decoder.conv_in")
  _middle(tree, want, "decoder", "decoder", e.mid_attention)
  for k in range(levels):
    i = levels - 1 - k
    for j in range(e.num_res_blocks + 1):
      _resnet(tree, want, f"decoder/up_{i}_block_{j}", f"decoder.up_blocks.{k}.resnets.{j}")
    if i > 0:
      tree.conv(f"decoder/up_{i}_upsample/conv", f"decoder.up_blocks.{k}.upsamplers.0.conv")
  tree.norm("decoder/norm_out/norm", "decoder.conv_norm_out")
  tree.conv("decoder/conv_out", "decoder.conv_out")
  if module.bottleneck == "vq":
    tree.put("codebook", "quantize.embedding.weight")
  params = tree.finish(want, f"diffusers {_class_name(config)} -> jgen LDMAutoencoder")
  return module, {"params": jax.tree.map(jnp.asarray, params)}


# ------------------------------------------------------------------ LDM single files


def autoencoder_config_from_state(state: Mapping[str, Any], *, norm_num_groups: int = 32,
                                  scaling_factor: float = 0.18215) -> dict[str, Any]:
  """A diffusers config of a state dict under diffusers' names (e.g. a single file's VAE
  through `ldm_vae_to_diffusers_names`), read from its shapes.

  Widths from each level's first ``conv1``, blocks per level from the encoder's first level,
  latent channels from ``decoder.conv_in``, a codebook (``quantize.embedding.weight``) makes a
  ``VQModel``. Not in the shapes: `norm_num_groups` (32 in every published SD / LDM VAE) and
  `scaling_factor` (0.18215 for SD 1.x / 2.x; 0.13025 for SDXL's VAE, whose shapes are SD's).

  Raises:
    ValueError: no encoder levels under diffusers' names.
  """
  def shape(name):
    return tuple(np.shape(state[name]))

  widths = []
  while f"encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight" in state:
    widths.append(shape(f"encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight")[0])
  if not widths:
    raise ValueError("no encoder.down_blocks.0.resnets.0.conv1.weight: not a diffusers-named "
                     "VAE state dict (for an LDM single file, view it through "
                     "ldm_vae_to_diffusers_names first)")
  layers = 0
  while f"encoder.down_blocks.0.resnets.{layers}.conv1.weight" in state:
    layers += 1
  config = dict(
      in_channels=shape("encoder.conv_in.weight")[1],
      out_channels=shape("decoder.conv_out.weight")[0],
      down_block_types=["DownEncoderBlock2D"] * len(widths),
      up_block_types=["UpDecoderBlock2D"] * len(widths), block_out_channels=widths,
      layers_per_block=layers, latent_channels=shape("decoder.conv_in.weight")[1],
      norm_num_groups=norm_num_groups, scaling_factor=scaling_factor,
      mid_block_add_attention=any(k.startswith("encoder.mid_block.attentions.0.")
                                  for k in state))
  if "quantize.embedding.weight" in state:
    config["num_vq_embeddings"], config["vq_embed_dim"] = shape("quantize.embedding.weight")
    return {"_class_name": "VQModel", **config}
  return {"_class_name": "AutoencoderKL", **config, "use_quant_conv": "quant_conv.weight" in state,
          "use_post_quant_conv": "post_quant_conv.weight" in state}


_LDM_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v",
                  "proj_out": "to_out.0"}
_LDM_RULES = (  # (pattern on the LDM name without prefix, diffusers name; {up} = L - 1 - N)
    (r"(encoder|decoder)\.norm_out\.(.+)", r"\1.conv_norm_out.\2"),
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", r"encoder.down_blocks.\1.resnets.\2.\3"),
    (r"encoder\.down\.(\d+)\.downsample\.conv\.(.+)",
     r"encoder.down_blocks.\1.downsamplers.0.conv.\2"),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", r"decoder.up_blocks.{up}.resnets.\2.\3"),
    (r"decoder\.up\.(\d+)\.upsample\.conv\.(.+)", r"decoder.up_blocks.{up}.upsamplers.0.conv.\2"),
    (r"(encoder|decoder)\.mid\.block_1\.(.+)", r"\1.mid_block.resnets.0.\2"),
    (r"(encoder|decoder)\.mid\.block_2\.(.+)", r"\1.mid_block.resnets.1.\2"),
    (r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)",
     r"\1.mid_block.attentions.0.{attn}.\3"),
)


def _ldm_to_diffusers(name: str, up_levels: int) -> str | None:
  """The diffusers name of one LDM VAE name (None: a training-loss weight, dropped)."""
  if name.startswith("loss."):
    return None
  for pattern, target in _LDM_RULES:
    m = re.fullmatch(pattern, name)
    if m is None:
      continue
    new = m.expand(target)
    if "{up}" in new:
      new = new.replace("{up}", str(up_levels - 1 - int(m.group(1))))
    if "{attn}" in new:
      new = new.replace("{attn}", _LDM_ATTENTION[m.group(2)])
    return new.replace("nin_shortcut", "conv_shortcut")
  return name  # conv_in, conv_out, quant_conv, post_quant_conv, quantize.*: the same names


def ldm_vae_to_diffusers_names(state: Mapping[str, Any], prefix: str = "first_stage_model."
                               ) -> Renamed:
  """A CompVis / LDM single file's VAE (``first_stage_model.*``) under diffusers' names.

  ``encoder.down.N.block.M`` -> ``encoder.down_blocks.N.resnets.M``, ``decoder.up.N`` ->
  ``decoder.up_blocks.(L-1-N)`` (LDM numbers decoder levels from the finest, diffusers from the
  deepest), ``mid.block_1/attn_1/block_2`` -> ``mid_block.resnets.0/attentions.0/resnets.1``,
  ``norm_out`` -> ``conv_norm_out``, ``nin_shortcut`` -> ``conv_shortcut``, attention
  ``norm/q/k/v/proj_out`` -> ``group_norm/to_q/to_k/to_v/to_out.0`` (still 1x1 conv weights
  ``[C, C, 1, 1]``, which the converter reads as Linear). ``loss.*`` (the training loss's
  discriminator and LPIPS weights) is dropped; any other name keeps its name, so the converter
  reports it as unexpected.

  Args:
    state: the single file's state dict (lazy mappings stay lazy).
    prefix: the VAE's prefix in it (``"first_stage_model."`` in SD files, ``"vae."`` in some,
      ``""`` in a standalone VAE checkpoint).

  Returns:
    A lazy `Renamed` view: diffusers name -> the LDM array.

  Raises:
    ValueError: no name under `prefix`.
  """
  names = [k[len(prefix):] for k in state if k.startswith(prefix)]
  if not names:
    raise ValueError(f"no VAE weights under the prefix {prefix!r} in this checkpoint; pass "
                     "prefix='vae.' or '' for files that store it so")
  ups = [int(m.group(1)) for n in names if (m := re.match(r"decoder\.up\.(\d+)\.", n))]
  up_levels = max(ups) + 1 if ups else 0
  table = {}
  for name in names:
    new = _ldm_to_diffusers(name, up_levels)
    if new is not None:
      table[new] = prefix + name
  return Renamed(state, table)
