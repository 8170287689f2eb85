"""The DDPM U-Net noise-prediction network (Ho et al., 2020), optionally conditional.

Follows the official CIFAR-10 model: with ``ch=128, ch_mult=(1, 2, 2, 2),
num_res_blocks=2, attn_resolutions=(16,)`` on 32x32x3 inputs it has
35,746,307 parameters.

Four optional conditionings, all off by default (the unconditional network, its parameter
tree and its outputs are unchanged), take their inputs from one conditions dict
(`jgen.nn.conditioning`):

* ``num_classes > 0``: ``label`` int32 ``[B]``; a ``num_classes + 1``-row embedding (the last
  row is the null class of classifier-free guidance) added to the timestep embedding, as in
  guided-diffusion: ``emb = time_mlp(t) + label_emb(label)``. Adds ``(num_classes + 1) * 4 ch``.
* ``context_dim > 0``: ``context`` float32 ``[B, L, context_dim]``; a `CrossAttnBlock` after
  every self-attention block (the attention resolutions and the middle), as in latent
  diffusion. Adds ``2 C^2 + 2 context_dim C + 6 C`` per attention block of ``C`` channels.
* ``cond_channels > 0``: ``image`` float32 ``[B, H, W, cond_channels]`` concatenated to the
  input channels (super-resolution callers upsample the low-resolution image to ``H, W``
  first). Adds ``9 cond_channels ch`` to the input conv.
* ``embedding_dim > 0``: ``embedding`` float32 ``[B, embedding_dim]``, a per-example vector
  (the denoising diffusion GAN's mapped latent z, a pooled text or image embedding); one dense
  layer projects it to the timestep embedding's size and adds it:
  ``emb = time_mlp(t) [+ label_emb(label)] + W e + b``, so every residual block reads it through
  its embedding projection. Adds ``(embedding_dim + 1) * 4 ch``. ``W`` starts from the DDPM
  initialiser scaled by ``embedding_init_scale`` (1: the condition acts from the first step;
  0: ``W = 0``, the network starts as the one without it, for adding the condition to a
  pretrained U-Net).

**Published layouts.** Options, all with today's behaviour as the default, make the same network
equal to diffusers' ``UNet2DModel`` (the DDPM checkpoints: the defaults) and
``UNet2DConditionModel`` (Stable Diffusion 1.x / 2.x; `jgen.convert.unet` sets them from a
``config.json``): ``norm_eps`` (1e-5 in SD), ``downsample_padding`` (1 in SD: one pixel on every
side instead of bottom/right only), ``flip_sin_to_cos`` / ``freq_shift`` of the timestep
embedding (SD: True / 0), ``attn_levels`` (attention by level index rather than feature height,
so one network serves every image size), and ``attention="transformer"``: at each attention
site a `jgen.nn.spatial_transformer.SpatialTransformer` (self-attention, cross-attention to the
context, GEGLU feed-forward; ``transformer_heads`` per level, ``transformer_depth`` blocks) in
place of `AttnBlock` + `CrossAttnBlock`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import (
    AttnBlock,
    CrossAttnBlock,
    Downsample,
    Norm,
    ResBlock,
    Upsample,
    ddpm_conv,
    ddpm_dense,
    ddpm_res_block,
    timestep_embedding,
)
from jgen.nn.spatial_transformer import SpatialTransformer

Array = jax.Array
Dtype = Any

__all__ = ["ATTENTIONS", "UNet", "encode"]

ATTENTIONS = ("ddpm", "transformer")  # UNet.attention


class UNet(nn.Module):
  """DDPM U-Net predicting the noise ``eps`` from ``(x_t, t)`` and optional conditions.

  Attention is applied after a residual block whenever the current feature
  map height is in ``attn_resolutions``, and in the middle of the network; with
  ``context_dim > 0`` each such self-attention is followed by cross-attention to the context.

  Attributes:
    ch: Base channel count.
    ch_mult: Channel multiplier per resolution level.
    num_res_blocks: Residual blocks per level on the down path (the up
      path uses one more).
    attn_resolutions: Feature-map heights at which to apply attention.
    dropout: Dropout rate of the residual blocks.
    num_groups: Groups of every group normalisation.
    out_ch: Output channels; ``None`` means the input channel count.
    resamp_with_conv: Use convolutions when down/upsampling.
    num_classes: Classes of the ``label`` condition; 0: no label conditioning. The label
      embedding has ``num_classes + 1`` rows; label ``num_classes`` is the null class.
    context_dim: Feature size ``D`` of the ``context`` condition ``[B, L, D]``; 0: no
      cross-attention.
    cross_attn_heads: Heads of the cross-attention blocks (does not change the parameter count).
    cond_channels: Channels of the ``image`` condition concatenated to the input; 0: none.
    embedding_dim: Size ``D`` of the ``embedding`` condition ``[B, D]`` added (projected) to
      the timestep embedding; 0: none.
    embedding_init_scale: Variance scale of the embedding projection's initialiser (0: zeros).
    image_context_dim: Size ``D`` of the ``image_context`` condition ``[B, N, D]``, image
      tokens that every cross-attention block also attends to through keys and values of
      their own (IP-Adapter's decoupled cross-attention, `CrossAttnBlock`); needs
      ``context_dim > 0``; 0: none.
    image_scale: lambda, the weight of the image tokens' attention output.
    norm_eps: Epsilon of every group normalisation (1e-6: DDPM; 1e-5: Stable Diffusion).
    downsample_padding: 0: the stride-2 convs pad bottom/right ('SAME'); 1: every side.
    flip_sin_to_cos: Timestep embedding ``[cos, sin]`` instead of ``[sin, cos]``.
    freq_shift: The timestep embedding's frequency shift (`timestep_embedding`).
    attn_levels: Levels (0: full resolution) with attention; None: by ``attn_resolutions``.
    attention: 'ddpm' (`AttnBlock`, + `CrossAttnBlock` with a context) or 'transformer'
      (`SpatialTransformer`, needs ``context_dim > 0``).
    transformer_heads: Heads of the transformer blocks: one number, or one per level (the
      middle uses the last level's).
    transformer_depth: Transformer blocks per attention site.
    dtype: Compute dtype. The output is always float32.
    param_dtype: Parameter dtype.
  """

  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  num_groups: int = 32
  out_ch: int | None = None
  resamp_with_conv: bool = True
  num_classes: int = 0
  context_dim: int = 0
  cross_attn_heads: int = 1
  cond_channels: int = 0
  embedding_dim: int = 0
  embedding_init_scale: float = 1.0
  image_context_dim: int = 0
  image_scale: float = 1.0
  norm_eps: float = 1e-6
  downsample_padding: int = 0
  flip_sin_to_cos: bool = False
  freq_shift: float = 1.0
  attn_levels: Sequence[int] | None = None
  attention: str = "ddpm"
  transformer_heads: int | Sequence[int] = 8
  transformer_depth: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def has_attention(self, level: int, height: int) -> bool:
    """Whether the blocks of `level` (feature height `height`) are followed by attention."""
    if self.attn_levels is not None:
      return level in tuple(self.attn_levels)
    return height in tuple(self.attn_resolutions)

  def heads(self, level: int) -> int:
    """The transformer heads at `level`."""
    if isinstance(self.transformer_heads, int):
      return self.transformer_heads
    return tuple(self.transformer_heads)[level]

  def _check_inputs(self, x: Array, t: Array) -> None:
    """Raises ValueError on inputs the network cannot process."""
    if self.attention not in ATTENTIONS:
      raise ValueError(f"unknown attention {self.attention!r}; choose one of {ATTENTIONS}")
    if self.attention == "transformer" and self.context_dim < 1:
      raise ValueError("attention='transformer' cross-attends to a context: set context_dim > 0")
    if (not isinstance(self.transformer_heads, int)
        and len(tuple(self.transformer_heads)) != len(self.ch_mult)):
      raise ValueError(f"transformer_heads needs one entry per level ({len(self.ch_mult)}), got "
                       f"{tuple(self.transformer_heads)}")
    if x.ndim != 4:
      raise ValueError(f"x must have shape [B, H, W, C] (NHWC), got shape {x.shape}.")
    if t.shape != (x.shape[0],):
      raise ValueError(f"t must have shape [B]=({x.shape[0]},), got shape {t.shape}.")
    factor = 2**(len(self.ch_mult) - 1)
    height, width = x.shape[1], x.shape[2]
    if height % factor or width % factor:
      raise ValueError(f"H and W must be divisible by 2**(len(ch_mult)-1)={factor} "
                       f"for ch_mult={tuple(self.ch_mult)}, got H={height}, "
                       f"W={width}.")

  @property
  def condition_keys(self) -> tuple[str, ...]:
    """The condition keys this network needs, e.g. ``("label",)``; ``()`` if unconditional."""
    keys = []
    if self.num_classes > 0:
      keys.append("label")
    if self.context_dim > 0:
      keys.append("context")
    if self.cond_channels > 0:
      keys.append("image")
    if self.embedding_dim > 0:
      keys.append("embedding")
    if self.image_context_dim > 0:
      keys.append("image_context")
    return tuple(keys)

  def _check_conditions(self, x: Array, conditions: Mapping[str, Array] | None
                        ) -> dict[str, Array]:
    """The needed conditions as arrays, checked against ``x``.

    Raises:
      KeyError: A condition the network needs is missing.
      ValueError: A condition the network was not built for, or one of the wrong shape or
        dtype.
    """
    conditions = {} if conditions is None else dict(conditions)
    needed = self.condition_keys
    extra = sorted(k for k in conditions if k not in needed and k != "null")
    if extra:
      raise ValueError(f"UNet got conditions {extra} it was not built for (it takes "
                       f"{list(needed)}); set num_classes / context_dim / cond_channels / "
                       "embedding_dim / image_context_dim.")
    missing = [k for k in needed if k not in conditions]
    if missing:
      raise KeyError(f"UNet(num_classes={self.num_classes}, context_dim={self.context_dim}, "
                     f"cond_channels={self.cond_channels}, embedding_dim={self.embedding_dim})"
                     f" needs the condition(s) {missing}; "
                     f"got {sorted(conditions)}.")
    out = {k: jnp.asarray(conditions[k]) for k in needed}
    b, hgt, wid = x.shape[:3]
    if "label" in out:
      label = out["label"]
      if label.shape != (b,) or not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(f"label must be an integer array of shape [B]=({b},) with values in "
                         f"0..{self.num_classes} ({self.num_classes}: null), got "
                         f"{label.dtype}{label.shape}.")
    if "context" in out:
      context = out["context"]
      if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
        raise ValueError(f"context must have shape [B, L, context_dim]=({b}, L, "
                         f"{self.context_dim}), got shape {context.shape}.")
    if "image" in out:
      image = out["image"]
      if image.shape != (b, hgt, wid, self.cond_channels):
        raise ValueError(f"image must have shape [B, H, W, cond_channels]=({b}, {hgt}, {wid}, "
                         f"{self.cond_channels}), got shape {image.shape}.")
    if "image_context" in out:
      tokens = out["image_context"]
      if self.context_dim < 1:
        raise ValueError("image_context needs cross-attention: set context_dim > 0")
      if tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != self.image_context_dim:
        raise ValueError(f"image_context must have shape [B, N, image_context_dim]=({b}, N, "
                         f"{self.image_context_dim}), got shape {tokens.shape}.")
    if "embedding" in out:
      embedding = out["embedding"]
      if (embedding.shape != (b, self.embedding_dim)
          or not jnp.issubdtype(embedding.dtype, jnp.floating)):
        raise ValueError(f"embedding must be a float array of shape [B, embedding_dim]=({b}, "
                         f"{self.embedding_dim}), got {embedding.dtype}{embedding.shape}.")
    return out

  @nn.compact
  def __call__(self, x: Array, t: Array, conditions: Mapping[str, Array] | None = None, *,
               train: bool, control: Sequence[Array] | None = None) -> Array:
    """Predicts the noise.

    Args:
      x: Noisy images ``[B, H, W, C]``.
      t: Timesteps ``[B]``, integer or floating point.
      conditions: The conditions dict (`jgen.nn.conditioning`) with the `condition_keys`
        entries: ``label`` int32 ``[B]``, ``context`` ``[B, L, context_dim]``, ``image``
        ``[B, H, W, cond_channels]``, ``embedding`` ``[B, embedding_dim]``; a ``null`` entry
        is ignored (the null condition is in the values). ``None`` or ``{}`` for an
        unconditional network.
      train: Enables dropout (needs a ``'dropout'`` rng) when True.
      control: ControlNet residuals (`jgen.nn.controlnet`): one per skip connection, in the
        order the down path makes them, then one for the middle block's output; each is added
        to its feature map before the up path reads it. None: no control.

    Returns:
      A float32 array of shape ``[B, H, W, out_ch or C]``.

    Raises:
      KeyError: A needed condition is missing.
      ValueError: If the input or condition shapes are invalid, or a condition is given
        that the network was not built for, or `control` does not match the skips.
    """
    out_ch = self.out_ch if self.out_ch is not None else jnp.shape(x)[-1]
    temb, hs, h, cond = encode(self, x, t, conditions, train=train)
    if control is not None:
      if len(control) != len(hs) + 1:
        raise ValueError(f"control needs {len(hs) + 1} residuals ({len(hs)} skips and the "
                         f"middle), got {len(control)}")
      hs = [a + c.astype(a.dtype) for a, c in zip(hs, control[:-1], strict=True)]
      h = h + control[-1].astype(h.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    num_levels = len(self.ch_mult)

    for level in reversed(range(num_levels)):
      for block in range(self.num_res_blocks + 1):
        prefix = f"up_{level}_block_{block}"
        h = jnp.concatenate([h, hs.pop()], axis=-1)
        h = _res_block(self, self.ch * self.ch_mult[level], prefix)(h, temb, train=train)
        if self.has_attention(level, h.shape[1]):
          h = _attention(self, h, cond, level, f"{prefix}_attn", f"{prefix}_cross_attn")
      if level != 0:
        up = Upsample(
            with_conv=self.resamp_with_conv,
            name=f"up_{level}_upsample",
            **kw,
        )
        h = up(h)

    h = nn.swish(Norm("group", self.num_groups, epsilon=self.norm_eps, name="norm_out", **kw)(h))
    h = ddpm_conv(out_ch, 3, init_scale=0.0, name="conv_out", **kw)(h)
    return h.astype(jnp.float32)


def _res_block(cfg: UNet, features: int, name: str) -> ResBlock:
  """The U-Net's residual block of `features` channels (its dropout, groups and dtypes)."""
  return ddpm_res_block(features, dropout=cfg.dropout, num_groups=cfg.num_groups,
                        norm_eps=cfg.norm_eps, name=name, dtype=cfg.dtype,
                        param_dtype=cfg.param_dtype)


def _attention(cfg: UNet, h: Array, cond: Mapping[str, Array], level: int, name: str,
               cross_name: str) -> Array:
  """Self-attention, then cross-attention to the context when the network has one; or the
  transformer block (``attention='transformer'``)."""
  kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
  if cfg.attention == "transformer":
    return SpatialTransformer(cfg.heads(level), cfg.transformer_depth, cfg.num_groups,
                              name=name, **kw)(h, cond["context"])
  h = AttnBlock(num_groups=cfg.num_groups, norm_eps=cfg.norm_eps, name=name, **kw)(h)
  if cfg.context_dim > 0:
    h = CrossAttnBlock(num_groups=cfg.num_groups, num_heads=cfg.cross_attn_heads,
                       name=cross_name, **kw)(h, cond["context"], cond.get("image_context"),
                                              cfg.image_scale)
  return h


def encode(cfg: UNet, x: Array, t: Array, conditions: Mapping[str, Array] | None, *,
           train: bool, hint: Array | None = None
           ) -> tuple[Array, list[Array], Array, dict[str, Array]]:
  """The U-Net's embedding, down path and middle, as submodules of the module being called.

  Called by `UNet.__call__` and by `jgen.nn.controlnet.ControlNet` (its trainable copy), so the
  copy's parameters have the U-Net's own names and a base checkpoint loads into both.

  Args:
    cfg: the U-Net whose layout (and settings) to build.
    x, t, conditions, train: as `UNet.__call__`.
    hint: features ``[B, H, W, ch]`` added after ``conv_in`` (ControlNet's condition), or None.

  Returns:
    (timestep embedding, the skip feature maps, the middle block's output, the checked
    conditions).
  """
  x = jnp.asarray(x)
  t = jnp.asarray(t)
  cfg._check_inputs(x, t)  # pylint: disable=protected-access
  cond = cfg._check_conditions(x, conditions)  # pylint: disable=protected-access
  kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
  num_levels = len(cfg.ch_mult)
  res_block = lambda features, name: _res_block(cfg, features, name)

  temb = timestep_embedding(t, cfg.ch, flip_sin_to_cos=cfg.flip_sin_to_cos,
                            freq_shift=cfg.freq_shift)
  temb = ddpm_dense(4 * cfg.ch, name="temb_dense0", **kw)(temb)
  temb = nn.swish(temb)
  temb = ddpm_dense(4 * cfg.ch, name="temb_dense1", **kw)(temb)
  if cfg.num_classes > 0:
    temb = temb + nn.Embed(cfg.num_classes + 1, 4 * cfg.ch, name="label_emb", **kw)(
        cond["label"])
  if cfg.embedding_dim > 0:
    temb = temb + ddpm_dense(4 * cfg.ch, init_scale=cfg.embedding_init_scale,
                             name="embedding_proj", **kw)(cond["embedding"].astype(cfg.dtype))

  h = x.astype(cfg.dtype)
  if cfg.cond_channels > 0:
    h = jnp.concatenate([h, cond["image"].astype(cfg.dtype)], axis=-1)
  h = ddpm_conv(cfg.ch, 3, name="conv_in", **kw)(h)
  if hint is not None:
    h = h + hint.astype(h.dtype)
  hs = [h]
  for level, mult in enumerate(cfg.ch_mult):
    for block in range(cfg.num_res_blocks):
      prefix = f"down_{level}_block_{block}"
      h = res_block(cfg.ch * mult, prefix)(hs[-1], temb, train=train)
      if cfg.has_attention(level, h.shape[1]):
        h = _attention(cfg, h, cond, level, f"{prefix}_attn", f"{prefix}_cross_attn")
      hs.append(h)
    if level != num_levels - 1:
      hs.append(Downsample(with_conv=cfg.resamp_with_conv, padding=cfg.downsample_padding,
                           name=f"down_{level}_downsample", **kw)(hs[-1]))

  h = hs[-1]
  mid_ch = h.shape[-1]
  h = res_block(mid_ch, "mid_block_1")(h, temb, train=train)
  h = _attention(cfg, h, cond, num_levels - 1, "mid_attn_1", "mid_cross_attn_1")
  h = res_block(mid_ch, "mid_block_2")(h, temb, train=train)
  return temb, hs, h, cond
