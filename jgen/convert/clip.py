"""CLIP text encoders in: transformers / diffusers folders and single-file SD checkpoints.

`clip_text_from_transformers(config, state)` maps a transformers ``CLIPTextModel`` state dict
(diffusers' ``text_encoder/``) and its ``config.json`` onto `jgen.nn.clip.CLIPTextModel`:

  text_model.embeddings.token_embedding.weight      -> token_embedding/embedding
  text_model.embeddings.position_embedding.weight   -> position_embedding/embedding
  text_model.encoder.layers.{i}.layer_norm1|2       -> layers_{i}/layer_norm1|2
  text_model.encoder.layers.{i}.self_attn.X_proj    -> layers_{i}/self_attn/X_proj  (X = q,k,v,out)
  text_model.encoder.layers.{i}.mlp.fc1|fc2         -> layers_{i}/mlp/fc1|fc2
  text_model.final_layer_norm                       -> final_layer_norm

(Linear ``[O, I]`` -> Dense kernel ``[I, O]``; LayerNorm weight -> scale). The buffer
``text_model.embeddings.position_ids`` is ignored. transformers 5 saves a ``CLIPTextModel``
without the ``text_model.`` level; both layouts are read.

Single files carry no config.json; they are renamed to the transformers names by a lazy view
and their config is inferred from shapes (`config_from_state`):

* SD 1.x (`sd1_clip_names`): ``cond_stage_model.transformer.`` + the transformers names, in
  old files without the ``text_model.`` level. Activation ``quick_gelu``.
* SD 2.x (`openclip_to_transformers_names`): OpenCLIP's text tower under
  ``cond_stage_model.model.``: ``token_embedding.weight``, ``positional_embedding``,
  ``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight / in_proj_bias (q, k, v stacked along
  the output axis: rows [0, C), [C, 2C), [2C, 3C)), attn.out_proj, ln_2, mlp.c_fc,
  mlp.c_proj}``, ``ln_final``. Activation ``gelu``. ``text_projection`` and ``logit_scale``
  belong to the CLIP head, not the text model, and are left out of the view.

SD 2.x reads the penultimate layer through the final LayerNorm: either convert all 24 layers
and call the model with ``output_layer=-2``, or do as diffusers does, ``drop_last=1`` (23
layers, the defaults give the same output); see `jgen.nn.clip`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.convert.common import Renamed, StateDict, Tree
from jgen.nn.clip import CLIPTextModel

__all__ = ["TextTowerView", "clip_text_from_transformers", "config_from_state",
           "model_from_config", "openclip_to_transformers_names", "sd1_clip_names"]

_LAYER = "text_model.encoder.layers.{i}."
_OPENCLIP_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.")
_HF_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")


class TextTowerView(Renamed):
  """A `Renamed` view of a single file's text tower under transformers names that also knows
  the tower's activation (``hidden_act``), which `config_from_state` cannot see in the names.
  """

  def __init__(self, source: Mapping[str, Any], names: Mapping[str, Any], hidden_act: str):
    super().__init__(source, names)
    self.hidden_act = hidden_act


def model_from_config(config: Mapping[str, Any], *, dtype: Any = jnp.float32,
                      param_dtype: Any = jnp.float32) -> CLIPTextModel:
  """The `CLIPTextModel` of a transformers ``CLIPTextConfig`` dict (its ``config.json``).

  A full ``CLIPConfig`` (with ``text_config``) is accepted too. Raises ValueError when a
  field the model needs is absent.
  """
  config = config.get("text_config", config)
  need = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
          "num_attention_heads")
  lacking = [k for k in need if k not in config]
  if lacking:
    raise ValueError(f"the CLIP text config lacks {lacking}: pass the text encoder's "
                     "config.json (or config_from_state(state) for a single file)")
  eos = config.get("eos_token_id", 2)
  return CLIPTextModel(
      vocab_size=int(config["vocab_size"]),
      max_position_embeddings=int(config.get("max_position_embeddings", 77)),
      hidden_size=int(config["hidden_size"]),
      intermediate_size=int(config["intermediate_size"]),
      num_hidden_layers=int(config["num_hidden_layers"]),
      num_attention_heads=int(config["num_attention_heads"]),
      hidden_act=config.get("hidden_act", "quick_gelu"),
      layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
      eos_token_id=None if eos == 2 else int(eos),
      dtype=dtype, param_dtype=param_dtype)


def clip_text_from_transformers(config: Mapping[str, Any], state: Mapping[str, Any], *,
                                dtype: Any = jnp.float32, param_dtype: Any = np.float32
                                ) -> tuple[CLIPTextModel, dict]:
  """A transformers ``CLIPTextModel`` (config.json dict + state dict) -> (module, variables).

  Args:
    config: the ``config.json`` dict (or `config_from_state`'s).
    state: name -> array with transformers names, ``text_model.embeddings.…`` as transformers
      4 (and so every published diffusers folder) saves them, or ``embeddings.…`` as
      transformers 5 saves a ``CLIPTextModel``; names outside ``text_model.`` (a
      ``CLIPTextModelWithProjection``'s ``text_projection``) are not read. A lazy mapping (a
      safetensors file, a `Renamed` view) is read one leaf at a time.
    dtype: the module's compute dtype.
    param_dtype: the dtype of the converted parameters.

  Returns:
    (the module, ``{"params": tree}``).

  Raises:
    ConversionError: names missing, unexpected or mis-shaped for this config (all listed).
  """
  model = model_from_config(config, dtype=dtype, param_dtype=param_dtype)
  ids = jax.ShapeDtypeStruct((1, model.max_position_embeddings), jnp.int32)
  expected = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  prefix = "text_model." if any(k.startswith("text_model.") for k in state) else ""
  tree = Tree(StateDict(state, prefix), dtype=param_dtype)
  tree.embed("token_embedding", "embeddings.token_embedding")
  tree.embed("position_embedding", "embeddings.position_embedding")
  for i in range(model.num_hidden_layers):
    src, dst = f"encoder.layers.{i}.", f"layers_{i}/"
    tree.norm(dst + "layer_norm1", src + "layer_norm1")
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      tree.dense(f"{dst}self_attn/{proj}", f"{src}self_attn.{proj}")
    tree.norm(dst + "layer_norm2", src + "layer_norm2")
    tree.dense(dst + "mlp/fc1", src + "mlp.fc1")
    tree.dense(dst + "mlp/fc2", src + "mlp.fc2")
  tree.norm("final_layer_norm", "final_layer_norm")
  params = tree.finish(expected, "CLIP text encoder", ignore=("embeddings.position_ids",))
  return model, {"params": params}


def _layer_count(names: list[str], pattern: re.Pattern) -> int:
  found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
  return max(found) + 1 if found else 0


def sd1_clip_names(state: Mapping[str, Any], prefix: str = "cond_stage_model.transformer."
                   ) -> TextTowerView:
  """An SD 1.x single file's text encoder, viewed under transformers names (lazy).

  Keys ``{prefix}text_model.X`` (or, in old files, ``{prefix}X``) -> ``text_model.X``; the
  ``position_ids`` buffer is dropped. SDXL's first text encoder is the same with
  ``prefix="conditioner.embedders.0.transformer."``.

  Raises:
    ValueError: no key under `prefix`.
  """
  names = {}
  for key in state:
    if not key.startswith(prefix):
      continue
    rest = key[len(prefix):]
    new = rest if rest.startswith("text_model.") else "text_model." + rest
    if not new.endswith("embeddings.position_ids"):
      names[new] = key
  if not names:
    raise ValueError(f"no key starts with {prefix!r}: not an SD 1.x checkpoint with a CLIP text "
                     "encoder (an SD 2.x file keeps OpenCLIP's under 'cond_stage_model.model.': "
                     "use openclip_to_transformers_names)")
  return TextTowerView(state, names, "quick_gelu")


def _rows(part: int, width: int):
  return lambda w: w[part * width:(part + 1) * width]


def openclip_to_transformers_names(state: Mapping[str, Any],
                                   prefix: str = "cond_stage_model.model.", *,
                                   drop_last: int = 0) -> TextTowerView:
  """An SD 2.x single file's OpenCLIP text tower, viewed under transformers names (lazy).

  The fused ``attn.in_proj_weight`` [3C, C] and ``in_proj_bias`` [3C] are split into q, k, v
  (rows ``[0, C)``, ``[C, 2C)``, ``[2C, 3C)``) when read; ``text_projection``,
  ``logit_scale`` and any vision tower stay out of the view.

  Args:
    state: the single file's state dict.
    prefix: where the OpenCLIP model sits (SDXL's second encoder:
      ``"conditioner.embedders.1.model."``).
    drop_last: leave the last `drop_last` blocks out, as diffusers does for SD 2.x (1: a
      23-layer model whose ``last_hidden_state`` is SD 2.x's penultimate-layer context).

  Raises:
    ValueError: no OpenCLIP text tower under `prefix`, or `drop_last` not below its depth.
  """
  keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
  depth = _layer_count(keys, _OPENCLIP_BLOCK)
  if depth == 0 or "token_embedding.weight" not in keys:
    raise ValueError(f"no OpenCLIP text tower under {prefix!r} (expected "
                     f"{prefix}token_embedding.weight and {prefix}transformer.resblocks.0.*): "
                     "an SD 1.x file keeps its CLIP under 'cond_stage_model.transformer.': use "
                     "sd1_clip_names")
  if not 0 <= drop_last < depth:
    raise ValueError(f"drop_last={drop_last} must be in [0, {depth}) for a {depth}-block tower")
  width = int(np.shape(state[prefix + "token_embedding.weight"])[1])
  names: dict[str, Any] = {
      "text_model.embeddings.token_embedding.weight": prefix + "token_embedding.weight",
      "text_model.embeddings.position_embedding.weight": prefix + "positional_embedding",
      "text_model.final_layer_norm.weight": prefix + "ln_final.weight",
      "text_model.final_layer_norm.bias": prefix + "ln_final.bias",
  }
  for i in range(depth - drop_last):
    src, dst = f"{prefix}transformer.resblocks.{i}.", _LAYER.format(i=i)
    for part, proj in enumerate(("q_proj", "k_proj", "v_proj")):
      names[f"{dst}self_attn.{proj}.weight"] = (src + "attn.in_proj_weight", _rows(part, width))
      names[f"{dst}self_attn.{proj}.bias"] = (src + "attn.in_proj_bias", _rows(part, width))
    for new, old in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                     ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                     ("mlp.fc2", "mlp.c_proj")):
      names[f"{dst}{new}.weight"] = f"{src}{old}.weight"
      names[f"{dst}{new}.bias"] = f"{src}{old}.bias"
  # A name the file lacks stays out of the view, so the converter reports it as missing.
  return TextTowerView(state, {new: old for new, old in names.items()
                               if (old if isinstance(old, str) else old[0]) in state}, "gelu")


def config_from_state(state: Mapping[str, Any], *, hidden_act: str | None = None,
                      head_dim: int = 64) -> dict[str, Any]:
  """A transformers ``CLIPTextConfig`` dict inferred from the shapes of a state dict.

  Reads a raw OpenCLIP tower (``…token_embedding.weight``, ``…transformer.resblocks.{i}.…``;
  activation ``gelu``) or transformers names (``…text_model.encoder.layers.{i}.…`` with or
  without the ``text_model.`` level, under any prefix: an SD 1.x file, a folder's state dict;
  activation ``quick_gelu``, or the ``hidden_act`` of a `TextTowerView`). vocab_size and
  hidden_size come from the token embedding, max_position_embeddings from the position
  embedding, intermediate_size from fc1 / c_fc, num_hidden_layers from the highest block index;
  the heads cannot be read from shapes and are hidden_size / head_dim (64 in every CLIP text
  encoder).

  Args:
    state: the state dict (names -> arrays; only shapes are read).
    hidden_act: overrides the activation guessed from the layout.
    head_dim: the width of one attention head.

  Raises:
    ValueError: no CLIP text tower, or two (an SDXL file: view one of them first).
  """
  keys = list(state)
  openclip = [k[:-len("transformer.resblocks.0.attn.in_proj_weight")] for k in keys
              if k.endswith("transformer.resblocks.0.attn.in_proj_weight")]
  hf = [k[:-len("encoder.layers.0.self_attn.q_proj.weight")] for k in keys
        if k.endswith("encoder.layers.0.self_attn.q_proj.weight")]
  found = [("openclip", p) for p in openclip] + [("transformers", p) for p in hf]
  if len(found) != 1:
    what = "no CLIP text tower" if not found else f"{len(found)} text towers ({found})"
    raise ValueError(f"config_from_state found {what} in the state dict; pass the names of one "
                     "tower (sd1_clip_names / openclip_to_transformers_names give such a view)")
  layout, prefix = found[0]
  shape = lambda name: tuple(int(s) for s in np.shape(state[prefix + name]))
  if layout == "openclip":
    vocab, width = shape("token_embedding.weight")
    positions = shape("positional_embedding")[0]
    intermediate = shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
    layers = _layer_count([k[len(prefix):] for k in keys if k.startswith(prefix)],
                          _OPENCLIP_BLOCK)
    act = "gelu"
  else:
    emb = prefix + "embeddings."
    if emb + "token_embedding.weight" not in state:
      raise ValueError(f"found {prefix}encoder.layers.0.* but not {emb}token_embedding.weight")
    vocab, width = shape("embeddings.token_embedding.weight")
    positions = shape("embeddings.position_embedding.weight")[0]
    intermediate = shape("encoder.layers.0.mlp.fc1.weight")[0]
    layers = _layer_count([k[len(prefix):] for k in keys if k.startswith(prefix)], _HF_LAYER)
    act = getattr(state, "hidden_act", "quick_gelu")
  if width % head_dim:
    raise ValueError(f"hidden_size {width} is not a multiple of head_dim={head_dim}: pass the "
                     "head width of this model")
  return {"vocab_size": vocab, "hidden_size": width, "intermediate_size": intermediate,
          "num_hidden_layers": layers, "num_attention_heads": width // head_dim,
          "max_position_embeddings": positions, "hidden_act": hidden_act or act,
          "layer_norm_eps": 1e-5, "eos_token_id": 2}
