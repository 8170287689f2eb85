"""The CLIP text tower (Radford et al. 2021): Stable Diffusion's text encoder.

Equal, leaf for leaf and output for output, to transformers' ``CLIPTextModel``; the converters
in `jgen.convert.clip` fill it from transformers / diffusers folders and from single-file SD
checkpoints. For token ids ``t`` [B, L] (L <= ``max_position_embeddings``, 77):

  h_0 = E_tok[t] + E_pos[0..L-1]
  h_i = h'_i + MLP(LN2(h'_i)),  h'_i = h_{i-1} + Attn(LN1(h_{i-1}))     (i = 1..N)
  Attn(x) = W_o concat_heads(softmax(q k^T / sqrt(d) + M) v),  q, k, v = W_q x, W_k x, W_v x
  MLP(x) = fc2(act(fc1(x)))

with the causal mask ``M_ij = 0`` for ``j <= i`` and ``-inf`` otherwise (no padding mask: SD
attends over all 77 positions, padding included, and the causal mask already keeps padding out
of every real token's state). ``act`` is ``quick_gelu``, ``x sigmoid(1.702 x)`` (OpenAI CLIP,
SD 1.x), or the exact ``gelu``, ``x Phi(x)`` with the normal CDF via erf (OpenCLIP, SD 2.x);
``last_hidden_state = LN_final(h_N)``.

**Which layer Stable Diffusion reads** (``output_layer``, ``final_norm``):

* SD 1.x: ``last_hidden_state`` (the defaults).
* SD 2.x: the penultimate layer through the final LayerNorm, ``LN_final(h_{N-1})`` of the
  24-layer OpenCLIP ViT-H tower (ldm's ``FrozenOpenCLIPEmbedder(layer="penultimate")``).
  diffusers stores SD 2.x text encoders with ``num_hidden_layers=23`` (its single-file converter
  drops ``resblocks.23``), so a diffusers SD 2.x folder is converted with 23 layers and read with
  the defaults; a full 24-layer tower is read with ``output_layer=-2``: the two are equal.
* diffusers' ``clip_skip=c`` (``encode_prompt``: ``final_layer_norm(hidden_states[-(c + 1)])``):
  ``output_layer=-(c + 1)``.
* SDXL reads ``hidden_states[-2]`` with no final LayerNorm: ``output_layer=-2,
  final_norm=False``.

``output_layer`` indexes the list ``[h_0, h_1, ..., h_N]`` as Python does (transformers'
``hidden_states``): ``-1`` (= None) is ``h_N``, ``-2`` is ``h_{N-1}``, ``0`` the embeddings.
Layers after the one asked for are not computed.

**Pooled output** (``return_pooled=True``): ``LN_final(h_N)`` at the end-of-text position of
each row, the input of CLIP's text projection. Which position follows transformers: with
``eos_token_id=None`` (configs whose ``eos_token_id`` is 2, as every SD checkpoint's is) it is
``argmax_j t_j``, since ``<|endoftext|>`` = 49407 is the largest id of the original vocabulary
(wrong once textual-inversion tokens above it are in the prompt); with an id it is the first
``j`` where ``t_j == eos_token_id``.

Compute runs in ``dtype`` (bfloat16 works); the attention softmax is float32, and LayerNorm
statistics are float32 (Flax's default).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.transformer import _attend

Array = jax.Array
Dtype = Any

__all__ = ["CLIPAttention", "CLIPEncoderLayer", "CLIPMLP", "CLIPTextModel", "pool_eos",
           "quick_gelu"]

HiddenAct = Literal["quick_gelu", "gelu"]
_INIT = nn.initializers.normal(0.02)


def quick_gelu(x: Array) -> Array:
  """OpenAI CLIP's GELU approximation: ``x sigmoid(1.702 x)``."""
  return x * jax.nn.sigmoid(1.702 * x)


def _activation(name: str):
  if name == "quick_gelu":
    return quick_gelu
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  raise ValueError(f"hidden_act={name!r} is not a CLIP activation; use 'quick_gelu' (OpenAI "
                   "CLIP, SD 1.x) or 'gelu' (OpenCLIP, SD 2.x)")


def pool_eos(hidden: Array, input_ids: Array, eos_token_id: int | None = None) -> Array:
  """``hidden`` [B, L, C] at each row's end-of-text position -> [B, C].

  Args:
    hidden: the final-LayerNorm hidden states.
    input_ids: int [B, L] token ids.
    eos_token_id: None: the position of the largest id (``argmax_j t_j``, transformers'
      rule for configs with ``eos_token_id == 2``); an id: its first occurrence.
  """
  if eos_token_id is None:
    pos = jnp.argmax(input_ids, axis=-1)
  else:
    pos = jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)
  return jnp.take_along_axis(hidden, pos[:, None, None], axis=1)[:, 0]


class CLIPAttention(nn.Module):
  """Causal multi-head self-attention with separate ``q_proj``, ``k_proj``, ``v_proj``,
  ``out_proj`` (all with bias): ``softmax(q k^T / sqrt(d) + M) v``, softmax in float32.

  Attributes:
    hidden_size: width C; ``num_heads`` must divide it (head size d = C / heads).
    num_heads: attention heads.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  hidden_size: int
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``x`` [B, L, C] -> [B, L, C]."""
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_attention_heads={self.num_heads} must divide "
                       f"hidden_size={self.hidden_size}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)
    b, length, c = x.shape
    heads = lambda y: y.reshape(b, length, self.num_heads, c // self.num_heads)
    q = heads(nn.Dense(c, name="q_proj", **kw)(x))
    k = heads(nn.Dense(c, name="k_proj", **kw)(x))
    v = heads(nn.Dense(c, name="v_proj", **kw)(x))
    out = _attend(q, k, v, mask=None, causal=True)
    return nn.Dense(c, name="out_proj", **kw)(out.reshape(b, length, c))


class CLIPMLP(nn.Module):
  """``fc2(act(fc1(x)))``, ``fc1``: C -> intermediate_size, ``fc2``: back to C."""

  hidden_size: int
  intermediate_size: int
  hidden_act: HiddenAct = "quick_gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)
    h = _activation(self.hidden_act)(nn.Dense(self.intermediate_size, name="fc1", **kw)(x))
    return nn.Dense(self.hidden_size, name="fc2", **kw)(h)


class CLIPEncoderLayer(nn.Module):
  """Pre-LayerNorm block: ``x + Attn(LN1(x))``, then ``x + MLP(LN2(x))``."""

  hidden_size: int
  intermediate_size: int
  num_heads: int
  hidden_act: HiddenAct = "quick_gelu"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, name=name, **kw)
    x = x + CLIPAttention(self.hidden_size, self.num_heads, name="self_attn",
                          **kw)(norm("layer_norm1")(x))
    return x + CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, name="mlp",
                       **kw)(norm("layer_norm2")(x))


class CLIPTextModel(nn.Module):
  """The CLIP text transformer (see the module docstring for the math and SD's layer choice).

  Parameters: ``token_embedding``, ``position_embedding`` (Embed), ``layers_{i}/{layer_norm1,
  self_attn/{q_proj,k_proj,v_proj,out_proj}, layer_norm2, mlp/{fc1,fc2}}``,
  ``final_layer_norm``.

  Attributes:
    vocab_size: token ids 0..vocab_size-1 (49408 for CLIP's BPE vocabulary).
    max_position_embeddings: longest input (77).
    hidden_size: width C (768 SD 1.x, 1024 SD 2.x).
    intermediate_size: MLP hidden width (4 C).
    num_hidden_layers: N blocks (12 SD 1.x, 24 OpenCLIP ViT-H, 23 in diffusers' SD 2.x).
    num_attention_heads: heads per block (C / 64 in every SD text encoder).
    hidden_act: ``"quick_gelu"`` or ``"gelu"`` (exact, erf).
    layer_norm_eps: epsilon of every LayerNorm.
    eos_token_id: the pooled output's position rule (see `pool_eos`); None = argmax of ids.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  vocab_size: int = 49408
  max_position_embeddings: int = 77
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  hidden_act: HiddenAct = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.token_embedding = nn.Embed(self.vocab_size, self.hidden_size, embedding_init=_INIT,
                                    **kw)
    self.position_embedding = nn.Embed(self.max_position_embeddings, self.hidden_size,
                                       embedding_init=nn.initializers.normal(0.01), **kw)
    self.layers = [CLIPEncoderLayer(self.hidden_size, self.intermediate_size,
                                    self.num_attention_heads, self.hidden_act,
                                    self.layer_norm_eps, **kw)
                   for _ in range(self.num_hidden_layers)]
    self.final_layer_norm = nn.LayerNorm(epsilon=self.layer_norm_eps, **kw)

  def __call__(self, input_ids: Array, *, train: bool = False, output_layer: int | None = None,
               final_norm: bool = True, return_pooled: bool = False
               ) -> Array | tuple[Array, Array]:
    """Token ids -> hidden states (and the pooled output).

    Args:
      input_ids: int32 [B, L], L <= max_position_embeddings.
      train: accepted for the common module interface; CLIP's text tower has no dropout.
      output_layer: which of ``[h_0, ..., h_N]`` to return, Python indexing (None = -1 = the
        last layer; -2 = the penultimate, SD 2.x on a full tower).
      final_norm: apply ``final_layer_norm`` to that layer (False: SDXL's raw ``h_{N-1}``).
      return_pooled: also return ``LN_final(h_N)`` at the end-of-text positions, [B, C].

    Returns:
      [B, L, C] hidden states in ``dtype``, or (hidden states, pooled [B, C]).

    Raises:
      ValueError: L longer than ``max_position_embeddings`` or ``output_layer`` out of range.
    """
    del train
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    length = input_ids.shape[1]
    if length > self.max_position_embeddings:
      raise ValueError(f"input_ids have {length} positions but the model has "
                       f"max_position_embeddings={self.max_position_embeddings}: tokenize with "
                       f"max_length={self.max_position_embeddings}")
    n = self.num_hidden_layers
    index = n if output_layer is None else output_layer
    if not -(n + 1) <= index <= n:
      raise ValueError(f"output_layer={output_layer} is outside the {n + 1} hidden states "
                       f"[embeddings, layer 1, ..., layer {n}] (use -1 .. -{n + 1} or 0 .. {n})")
    index %= n + 1
    h = self.token_embedding(input_ids) + self.position_embedding(jnp.arange(length))[None]
    last = n if return_pooled else index
    selected = h
    for i, layer in enumerate(self.layers[:last]):
      h = layer(h)
      if i + 1 == index:
        selected = h
    out = self.final_layer_norm(selected) if final_norm else selected
    if not return_pooled:
      return out
    pooled = pool_eos(self.final_layer_norm(h), input_ids, self.eos_token_id)
    return out, pooled
