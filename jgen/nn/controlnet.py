"""ControlNet (Zhang et al. 2023): a trainable copy of a frozen U-Net's down path and middle,
steered by a condition image, joined to the frozen U-Net through zero-initialised convolutions.

With the frozen U-Net F (skips s_1..s_n and middle output m) and the copy C of its embedding,
down path and middle (the same layout and parameter names, `jgen.nn.unet.encode`, so a base
checkpoint loads into both):

    f   = Z_in(E(c))                      E: a small conv net of the condition image c
    s'_i, m' = C(x_t, t, y; f added after conv_in)
    F's up path reads  s_i + k_i Z_i(s'_i)  and  m + k_mid Z_mid(m')

where every Z is a convolution whose kernel and bias start at zero (Z_in 3 x 3, the others
1 x 1). At initialisation every residual is exactly 0, so the controlled model computes what
the base does, bit for bit, and the copy starts from the base's weights. The scales are
``k_i = conditioning_scale`` (1 by default); with ``guess_mode`` they grow with depth,
``k_i = conditioning_scale * 10^(-1 + (i - 1) / n)`` for the n skips and ``k_mid =
conditioning_scale`` (diffusers' ``ControlNetModel(..., guess_mode=True)`` scaling, 0.1 at the
first skip; the pipeline's other half of guess mode, running the ControlNet on the conditional
branch of guidance only, is not reproduced: jgen keeps the hint in both branches).

**The condition encoder E** (``hint_layout``), every conv 3 x 3 and followed by swish:

* ``"latent"`` (jgen's, the default): the hint at the image's resolution ``[B, H, W, C]``;
  stride-1 convs of ``hint_channels`` (16, 32), named ``hint_0, hint_1, ...``.
* ``"pixel"`` (Stable Diffusion's, diffusers' ``controlnet_cond_embedding``): the hint at
  ``2^(k-1)`` times the image's resolution for k ``hint_channels`` (SD: (16, 32, 96, 256), the
  512 x 512 condition image of a 64 x 64 latent); ``hint_0`` maps it to c_1 channels, then for
  each consecutive pair (c_i, c_(i+1)) a conv c_i -> c_i and a stride-2 conv c_i -> c_(i+1)
  padded by one on every side (``hint_1, hint_2, ...``: diffusers' ``conv_in, blocks.0,
  blocks.1, ...``).

Both end in the zero conv ``hint_zero`` to the U-Net's ``ch`` channels. ``hint_range`` is the
range the encoder reads: the ``hint`` condition, in [-1, 1] by jgen's convention
(`jgen.nn.conditioning`), is mapped linearly onto it first ((0, 1) for diffusers' ControlNets,
whose pipelines pass the control image unnormalised; the default (-1, 1) is no change).

**The scale as an attribute and a call argument.** ``conditioning_scale`` is an attribute (the
configured strength: part of the model an experiment config or a converter describes) and the
keyword argument of the same name overrides it per call. The argument may be a traced scalar,
so a sampler can sweep or schedule the strength inside one compiled function, where a changed
attribute (a new module, ``model.clone(conditioning_scale=0.5)``) retraces; neither touches
the parameters.

`ControlledUNet` puts the two side by side as one network for the DDPM machinery: its
conditions are the U-Net's plus ``hint`` (the condition image, in [-1, 1]), which classifier-free
guidance keeps in both branches (`jgen.nn.conditioning`). Its parameters are
``{"unet": ..., "control": ...}``, ``control`` being `ControlNet`'s own tree.
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

__all__ = ["HINT_LAYOUTS", "ControlNet", "ControlledUNet", "control_scales"]

HINT_LAYOUTS = ("latent", "pixel")  # ControlNet.hint_layout


def control_scales(n: int, conditioning_scale: Any = 1.0, *, guess_mode: bool = False) -> Array:
  """The factors of the n residuals (skips, then the middle): all ``conditioning_scale``, or
  with `guess_mode` ``conditioning_scale * logspace(-1, 0, n)`` (0.1 ... 1, the middle's 1)."""
  scale = jnp.asarray(conditioning_scale, jnp.float32)
  if guess_mode:
    return scale * jnp.logspace(-1.0, 0.0, n, dtype=jnp.float32)
  return jnp.broadcast_to(scale, (n,))


class ControlNet(nn.Module):
  """The control branch: residuals for `UNet.__call__`'s ``control``.

  Attributes:
    unet: the controlled U-Net (its settings; the copy is built from them).
    hint_channels: channels of the condition encoder E's 3 x 3 convolutions (swish between).
    hint_layout: 'latent' (stride-1 convs, the hint at the image's resolution) or 'pixel'
      (diffusers' layout: the hint at ``2^(len(hint_channels) - 1)`` times the resolution,
      downsampled by stride-2 convs); see the module docstring.
    hint_range: the range (lo, hi) E reads; the [-1, 1] hint is mapped linearly onto it.
    conditioning_scale: the factor of every residual (the call's argument overrides it).
    guess_mode: scale the residuals by depth as diffusers' guess mode does (`control_scales`).
  """

  unet: UNet
  hint_channels: Sequence[int] = (16, 32)
  hint_layout: str = "latent"
  hint_range: tuple[float, float] = (-1.0, 1.0)
  conditioning_scale: float = 1.0
  guess_mode: bool = False

  @property
  def hint_factor(self) -> int:
    """How many times larger than the image the hint is (per side)."""
    return 2 ** (len(tuple(self.hint_channels)) - 1) if self.hint_layout == "pixel" else 1

  def _encode_hint(self, hint: Array, x_shape: tuple[int, ...]) -> Array:
    """Z_in(E(hint)): ``[B, H, W, ch]`` features for the copy's ``conv_in`` output."""
    cfg = self.unet
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    if self.hint_layout not in HINT_LAYOUTS:
      raise ValueError(f"unknown hint_layout {self.hint_layout!r}; choose one of {HINT_LAYOUTS}")
    channels = tuple(self.hint_channels)
    if not channels:
      raise ValueError("hint_channels needs at least one entry")
    k = self.hint_factor
    want = (x_shape[0], x_shape[1] * k, x_shape[2] * k)
    if hint.ndim != 4 or hint.shape[:3] != want:
      raise ValueError(f"the hint must be [B, H, W, C] = {want + ('C',)} for images "
                       f"{tuple(x_shape)} (hint_layout={self.hint_layout!r}, "
                       f"{k}x the image's size), got {hint.shape}")
    f = hint.astype(cfg.dtype)
    lo, hi = (float(v) for v in self.hint_range)
    if (lo, hi) != (-1.0, 1.0):
      f = lo + (f + 1.0) * ((hi - lo) / 2.0)
    if self.hint_layout == "latent":
      for i, c in enumerate(channels):
        f = nn.swish(ddpm_conv(c, 3, name=f"hint_{i}", **kw)(f))
    else:
      f = nn.swish(ddpm_conv(channels[0], 3, name="hint_0", **kw)(f))
      for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        f = nn.swish(ddpm_conv(c_in, 3, name=f"hint_{2 * i + 1}", **kw)(f))
        f = nn.swish(ddpm_conv(c_out, 3, strides=2, padding=((1, 1), (1, 1)),
                               name=f"hint_{2 * i + 2}", **kw)(f))
    return ddpm_conv(cfg.ch, 3, init_scale=0.0, name="hint_zero", **kw)(f)

  @nn.compact
  def __call__(self, x: Array, t: Array, conditions: Mapping[str, Array] | None, hint: Array,
               *, train: bool, conditioning_scale: Any = None) -> list[Array]:
    """Residuals [skip_1, ..., skip_n, middle] (zero at initialisation).

    Args:
      x, t, conditions, train: as `UNet.__call__`.
      hint: the condition image ``[B, k H, k W, C]`` in [-1, 1] (k = `hint_factor`).
      conditioning_scale: overrides the attribute (a float or a traced scalar); None: keep it.

    Raises:
      ValueError: an unknown ``hint_layout`` or a hint of the wrong shape.
    """
    cfg = self.unet
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    f = self._encode_hint(jnp.asarray(hint), jnp.shape(x))
    _, hs, h, _ = encode(cfg, x, t, conditions, train=train, hint=f)
    zero = lambda v, name: ddpm_conv(v.shape[-1], 1, init_scale=0.0, name=name, **kw)(v)
    residuals = [zero(s, f"zero_{i}") for i, s in enumerate(hs)] + [zero(h, "zero_mid")]
    scale = self.conditioning_scale if conditioning_scale is None else conditioning_scale
    if not self.guess_mode and isinstance(scale, (int, float)) and scale == 1.0:
      return residuals
    scales = control_scales(len(residuals), scale, guess_mode=self.guess_mode)
    return [r * scales[i].astype(r.dtype) for i, r in enumerate(residuals)]


class ControlledUNet(nn.Module):
  """A U-Net with a ControlNet: what `DDPM.model` applies (conditions + ``hint``).

  Attributes:
    unet: the base U-Net (frozen in training: ``params/unet``).
    hint_channels, hint_layout, hint_range, conditioning_scale, guess_mode: the control
      branch's (`ControlNet`).
  """

  unet: UNet
  hint_channels: Sequence[int] = (16, 32)
  hint_layout: str = "latent"
  hint_range: tuple[float, float] = (-1.0, 1.0)
  conditioning_scale: float = 1.0
  guess_mode: bool = False

  @property
  def num_classes(self) -> int:
    return self.unet.num_classes

  @property
  def condition_keys(self) -> tuple[str, ...]:
    return (*self.unet.condition_keys, "hint")

  @nn.compact
  def __call__(self, x: Array, t: Array, conditions: Mapping[str, Any] | None = None, *,
               train: bool, conditioning_scale: Any = None) -> Array:
    """The base U-Net's output with the control branch's residuals added.

    Args:
      x, t, train: as `UNet.__call__`.
      conditions: the U-Net's conditions plus ``hint`` (`ControlNet`).
      conditioning_scale: overrides the attribute for this call (a float or a traced scalar).
    """
    conditions = dict(conditions or {})
    if "hint" not in conditions:
      raise KeyError(f"a ControlledUNet needs the 'hint' condition; got {sorted(conditions)}")
    hint = jnp.asarray(conditions.pop("hint"))
    residuals = ControlNet(self.unet.clone(parent=None), tuple(self.hint_channels),
                           hint_layout=self.hint_layout, hint_range=tuple(self.hint_range),
                           conditioning_scale=self.conditioning_scale,
                           guess_mode=self.guess_mode, name="control")(
                               x, t, conditions, hint, train=train,
                               conditioning_scale=conditioning_scale)
    return self.unet(x, t, conditions, train=train, control=residuals)
