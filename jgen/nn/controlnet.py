"""ControlNet (Zhang et al. 2023): a trainable copy of a frozen U-Net's down path and middle,
steered by a condition image, joined to the frozen U-Net through zero-initialised convolutions.

With the frozen U-Net F (skips s_1..s_n and middle output m) and the copy C of its embedding,
down path and middle (the same layout and parameter names, `jgen.nn.unet.encode`, so a base
checkpoint loads into both):

    f   = Z_in(E(c))                      E: a small conv net of the condition image c
    s'_i, m' = C(x_t, t, y; f added after conv_in)
    F's up path reads  s_i + Z_i(s'_i)  and  m + Z_mid(m')

where every Z is a convolution whose kernel and bias start at zero (Z_in 3 x 3, the others
1 x 1). At initialisation every residual is exactly 0, so the controlled model computes what
the base does, bit for bit, and the copy starts from the base's weights.

`ControlledUNet` puts the two side by side as one network for the DDPM machinery: its
conditions are the U-Net's plus ``hint`` (the condition image, in [-1, 1]), which classifier-free
guidance keeps in both branches (`jgen.nn.conditioning`). Its parameters are
``{"unet": ..., "control": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.layers import ddpm_conv
from jgen.nn.unet import UNet, encode

Array = jax.Array

__all__ = ["ControlNet", "ControlledUNet"]


class ControlNet(nn.Module):
  """The control branch: residuals for `UNet.__call__`'s ``control``.

  Attributes:
    unet: the controlled U-Net (its settings; the copy is built from them).
    hint_channels: channels of the condition encoder E's 3 x 3 convolutions (swish between).
  """

  unet: UNet
  hint_channels: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x: Array, t: Array, conditions: Mapping[str, Array] | None, hint: Array,
               *, train: bool) -> list[Array]:
    """Residuals [skip_1, ..., skip_n, middle] (zero at initialisation)."""
    cfg = self.unet
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    if hint.shape[:3] != jnp.shape(x)[:3]:
      raise ValueError(f"the hint must be [B, H, W, C] with the image's B, H, W "
                       f"{jnp.shape(x)[:3]}, got {hint.shape}")
    f = hint.astype(cfg.dtype)
    for i, c in enumerate(self.hint_channels):
      f = nn.swish(ddpm_conv(c, 3, name=f"hint_{i}", **kw)(f))
    f = ddpm_conv(cfg.ch, 3, init_scale=0.0, name="hint_zero", **kw)(f)
    _, hs, h, _ = encode(cfg, x, t, conditions, train=train, hint=f)
    zero = lambda v, name: ddpm_conv(v.shape[-1], 1, init_scale=0.0, name=name, **kw)(v)
    return [zero(s, f"zero_{i}") for i, s in enumerate(hs)] + [zero(h, "zero_mid")]


class ControlledUNet(nn.Module):
  """A U-Net with a ControlNet: what `DDPM.model` applies (conditions + ``hint``).

  Attributes:
    unet: the base U-Net (frozen in training: ``params/unet``).
    hint_channels: the condition encoder's channels.
  """

  unet: UNet
  hint_channels: Sequence[int] = (16, 32)

  @property
  def num_classes(self) -> int:
    return self.unet.num_classes

  @property
  def condition_keys(self) -> tuple[str, ...]:
    return (*self.unet.condition_keys, "hint")

  @nn.compact
  def __call__(self, x: Array, t: Array, conditions: Mapping[str, Any] | None = None, *,
               train: bool) -> Array:
    conditions = dict(conditions or {})
    if "hint" not in conditions:
      raise KeyError(f"a ControlledUNet needs the 'hint' condition; got {sorted(conditions)}")
    hint = jnp.asarray(conditions.pop("hint"))
    residuals = ControlNet(self.unet.clone(parent=None), tuple(self.hint_channels),
                           name="control")(x, t, conditions, hint, train=train)
    return self.unet(x, t, conditions, train=train, control=residuals)
