"""Multi-scale flows: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018).

A `MultiScaleFlow` maps an image-shaped input `v` `[B, H, W, C]` to a tuple of latents, one per
level, each with a standard-normal prior, and the log-det of the whole map:

    z_list, logdet = model.apply(variables, v, method="forward")
    log p(v) = sum_l log N(z_l; 0, I) + logdet
    v = model.apply(variables, z_list, method="inverse")

Every level but the last ends in a `Split` that factors out half of the channels (a Gaussian
prior learned from the kept half in Glow, the standard normal in RealNVP); the last latent has a
learned prior in Glow (`learn_top`). The model is built for one image shape: `forward` and
`inverse` raise ValueError on any other. H and W must be divisible by `2^S` for the model's `S`
squeezes: any power of two of at least `2^S` (8, 16, 32 ... for images), and also sizes such as
MNIST's 28 x 28 with two squeezes (28 -> 14 -> 7). C may be anything (1 and 3 for images).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.nn.flow_layers import (ActNorm, AdditiveCoupling, AffineCoupling, InvConv1x1,
                              LearnedPrior, Split, Squeeze)
from jgen.ops.likelihoods import standard_normal_log_prob

__all__ = ["Glow", "MultiScaleFlow", "RealNVP"]


def _squeezed(shape: tuple[int, int, int]) -> tuple[int, int, int]:
  h, w, c = shape
  return (h // 2, w // 2, 4 * c)


class MultiScaleFlow(nn.Module):
  """A stack of levels of invertible layers with multi-scale splits (the base of both models).

  Subclasses define `level_layers(level) -> list[nn.Module]` (the invertible layers of a level,
  in forward order, squeezes included) and `num_squeezes(level) -> int` (how many of them are
  `Squeeze`), and may override `split_learned` and `learn_top`.

  Attributes:
    image_shape: `(H, W, C)` of the inputs.
    num_levels: number of levels (scales); `num_levels - 1` splits.
  """

  image_shape: tuple[int, int, int]
  num_levels: int = 3

  split_learned = True
  learn_top = False

  def setup(self):
    if len(self.image_shape) != 3 or self.num_levels < 1:
      raise ValueError(f"{type(self).__name__} needs an image shape (H, W, C) and at least one "
                       f"level, got {tuple(self.image_shape)} and {self.num_levels} levels")
    h, w, _ = self.image_shape
    factor = 2 ** sum(self.num_squeezes(i) for i in range(self.num_levels))
    if h % factor or w % factor:
      raise ValueError(f"{type(self).__name__} with {self.num_levels} levels squeezes by "
                       f"{factor}: height and width must be multiples of {factor} (e.g. powers "
                       f"of two of at least {factor}), got image shape {tuple(self.image_shape)}")
    self.levels = [tuple(self.level_layers(i)) for i in range(self.num_levels)]
    self.splits = [Split(learned=self.split_learned) for _ in range(self.num_levels - 1)]
    self.top = LearnedPrior() if self.learn_top else None

  def latent_shapes(self) -> tuple[tuple[int, int, int], ...]:
    """Shapes (without the batch axis) of the latents `forward` returns, first level first."""
    shape, out = tuple(self.image_shape), []
    for i in range(self.num_levels):
      for _ in range(self.num_squeezes(i)):
        shape = _squeezed(shape)
      if i < self.num_levels - 1:
        h, w, c = shape
        out.append((h, w, c - c // 2))
        shape = (h, w, c // 2)
    out.append(shape)
    return tuple(out)

  def forward(self, x: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """`(latents, logdet)`: one latent per level and `log |det d(latents)/dx|` per example."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"{type(self).__name__} was built for images of shape "
                       f"{tuple(self.image_shape)}, got input of shape {x.shape}")
    logdet = jnp.zeros((x.shape[0],), jnp.float32)
    latents = []
    h = x
    for i, layers in enumerate(self.levels):
      for layer in layers:
        h, ld = layer(h)
        logdet = logdet + ld
      if i < self.num_levels - 1:
        h, ld = self.splits[i](h)
        logdet = logdet + ld
        c = h.shape[-1] // 2
        latents.append(h[..., c:])
        h = h[..., :c]
    if self.top is not None:
      h, ld = self.top(h)
      logdet = logdet + ld
    latents.append(h)
    return tuple(latents), logdet

  def inverse(self, latents: Sequence[jax.Array]) -> jax.Array:
    """The input `x` whose `forward(x)[0]` is `latents`."""
    expected = self.latent_shapes()
    got = tuple(tuple(z.shape[1:]) for z in latents)
    batch = {z.shape[0] for z in latents}
    if got != expected or len(batch) != 1 or any(z.ndim != 4 for z in latents):
      raise ValueError(f"{type(self).__name__} built for images of shape "
                       f"{tuple(self.image_shape)} inverts latents of shapes [B, *s] for s in "
                       f"{expected}, got {[tuple(z.shape) for z in latents]}")
    h = latents[-1]
    if self.top is not None:
      h = self.top(h, reverse=True)[0]
    for i in reversed(range(self.num_levels)):
      if i < self.num_levels - 1:
        h = self.splits[i](jnp.concatenate([h, latents[i]], axis=-1), reverse=True)[0]
      for layer in reversed(self.levels[i]):
        h = layer(h, reverse=True)[0]
    return h

  def log_prob(self, x: jax.Array) -> jax.Array:
    """`log p(x)` per example under the flow, nats (a density on the input space)."""
    latents, logdet = self.forward(x)
    return sum(standard_normal_log_prob(z) for z in latents) + logdet

  def __call__(self, x: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
    return self.forward(x)


class RealNVP(MultiScaleFlow):
  """RealNVP's multi-scale architecture (Dinh et al. 2017, section 3.6).

  Each level but the last: 3 checkerboard affine couplings with alternating masks, a squeeze,
  3 channel-mask affine couplings with alternating halves, then half of the channels is
  factored out (standard-normal prior). The last level: 4 checkerboard couplings. Scales are
  `exp(c * tanh(r))`. The coupling networks are residual networks; an ActNorm after each
  coupling stands in for the paper's batch normalization of the flow.

  Attributes:
    hidden: feature maps of the coupling networks.
    num_blocks: residual blocks per coupling network.
    actnorm: an ActNorm layer after every coupling.
  """

  hidden: int = 64
  num_blocks: int = 8
  actnorm: bool = True

  split_learned = False

  def num_squeezes(self, level: int) -> int:
    return 0 if level == self.num_levels - 1 else 1

  def _coupling(self, mask: str, parity: int) -> list[nn.Module]:
    layer = AffineCoupling(mask=mask, parity=parity, hidden=self.hidden,
                           num_blocks=self.num_blocks, scale="tanh")
    return [layer, ActNorm()] if self.actnorm else [layer]

  def level_layers(self, level: int) -> list[nn.Module]:
    if level == self.num_levels - 1:
      return [m for p in range(4) for m in self._coupling("checkerboard", p % 2)]
    layers = [m for p in range(3) for m in self._coupling("checkerboard", p % 2)]
    layers.append(Squeeze())
    layers += [m for p in range(3) for m in self._coupling("channel", p % 2)]
    return layers


class Glow(MultiScaleFlow):
  """Glow (Kingma & Dhariwal 2018): L levels of squeeze, K steps of flow, split.

  A step of flow is ActNorm -> invertible 1x1 convolution -> coupling (affine with a sigmoid
  scale, or additive), the coupling network's last layer zero-initialized. Splits have a
  Gaussian prior learned from the kept half; with `learn_top` the last latent has a learned
  prior too.

  Attributes:
    num_steps: K, steps of flow per level.
    hidden: channels of the coupling networks.
    coupling: 'affine' or 'additive'.
    lu: LU-decomposed 1x1 convolutions (else free matrices with `slogdet`).
    learn_top_prior: learned prior of the last latent.
  """

  num_steps: int = 32
  hidden: int = 512
  coupling: str = "affine"
  lu: bool = True
  learn_top_prior: bool = True

  @property
  def learn_top(self) -> bool:
    return self.learn_top_prior

  def num_squeezes(self, level: int) -> int:
    return 1

  def level_layers(self, level: int) -> list[nn.Module]:
    if self.coupling not in ("affine", "additive"):
      raise ValueError(f"unknown Glow coupling {self.coupling!r}; use 'affine' or 'additive'")
    layers = [Squeeze()]
    for _ in range(self.num_steps):
      coupling = (AffineCoupling(hidden=self.hidden, scale="sigmoid")
                  if self.coupling == "affine" else AdditiveCoupling(hidden=self.hidden))
      layers += [ActNorm(), InvConv1x1(lu=self.lu), coupling]
    return layers
