"""A U-Net conditioned on a class label through cross-attention to learned label tokens (the
class-conditional latent diffusion network of `jgen.diffusion.ldm`)."""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.unet import UNet

__all__ = ["ClassTokenUNet"]


class ClassTokenUNet(nn.Module):
  """A U-Net conditioned on a class label through cross-attention to learned label tokens.

  ``context = T[y]``, ``T`` of shape ``[num_classes + 1, num_tokens, unet.context_dim]``
  (rows initialized N(0, 1) as flax's `nn.Embed`; row ``num_classes`` is the null class), then
  ``unet(x, t, {"context": context})``. It takes the conditions dict of `jgen.nn.conditioning`
  with ``label`` only, so `ConditionalDDPM` trains and guides it as any label-conditional
  network (CFG replaces the label by the null class, i.e. the learned null tokens). A U-Net
  with ``embedding_dim > 0`` also takes ``embedding`` [B, embedding_dim], passed through (the
  guidance-scale input of a latent consistency student, `jgen.diffusion.lcm`).

  Attributes:
    unet: the network, with ``context_dim > 0`` and ``num_classes = 0``.
    num_classes: classes of the label.
    num_tokens: tokens L per label.
  """

  unet: UNet
  num_classes: int
  num_tokens: int = 4

  @property
  def condition_keys(self) -> tuple[str, ...]:
    return ("label", "embedding") if self.unet.embedding_dim else ("label",)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, conditions: Mapping[str, jax.Array] | None,
               *, train: bool) -> jax.Array:
    if not conditions or "label" not in conditions:
      raise KeyError(f"ClassTokenUNet needs the condition 'label'; got "
                     f"{sorted(conditions or {})}")
    label = jnp.asarray(conditions["label"])
    if label.shape != (x.shape[0],) or not jnp.issubdtype(label.dtype, jnp.integer):
      raise ValueError(f"label must be an integer array of shape [B]=({x.shape[0]},) with "
                       f"values in 0..{self.num_classes} ({self.num_classes}: null), got "
                       f"{label.dtype}{label.shape}")
    d = self.unet.context_dim
    tokens = nn.Embed(self.num_classes + 1, self.num_tokens * d, name="label_tokens")(label)
    context = tokens.reshape(x.shape[0], self.num_tokens, d)
    extra = {k: conditions[k] for k in ("embedding",) if k in conditions}  # the U-Net checks
    return self.unet(x, t, {"context": context, **extra}, train=train)
