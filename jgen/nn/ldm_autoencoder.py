"""A first-stage autoencoder as one Flax module: `LDMEncoder` + `LDMDecoder` (+ a VQ codebook).

`LDMAutoencoder` holds the networks of a KL autoencoder (Stable Diffusion's VAE, diffusers'
``AutoencoderKL``) or a VQ one (``VQModel``, a VQ-GAN) with their parameters laid out as the
first-stage method stores them: ``{"params": {"encoder": ..., "decoder": ...[, "codebook"]}}``,
so ``variables["params"]`` is what `jgen.autoencoder.first_stage.FirstStage.encode` / ``decode``
take and what latent diffusion keeps in ``state.frozen["autoencoder"]``. It is the inference
view (no dropout, no losses) that converted checkpoints come back as::

  ae, variables = jgen.convert.autoencoder.autoencoder_from_diffusers(config, state)
  z = ae.apply(variables, images, method=ae.encode)        # images [B, H, W, C] in [-1, 1]
  x = ae.apply(variables, z, method=ae.decode)

Bottlenecks (h = E(x) the encoder output after ``quant_conv``, `[B, H/f, W/f, c]`):

* ``kl``: h = (mean, log-variance) of a diagonal Gaussian q(z | x), log-variance clipped to
  [-30, 20] (LDM's and diffusers' DiagonalGaussianDistribution); `encode` gives the mean, or
  z = mean + exp(logvar / 2) eps with a key.
* ``vq``: z_q = e_k, k = argmin_j ||h - e_j||^2 over the rows of the ``[K, D]`` codebook
  (`jgen.ops.quantizer.quantize`); `encode` gives z_q.

``scaling_factor`` and ``shift_factor`` are the diffusers config's latent normalization, kept
as plain attributes and not applied here (as in diffusers, a pipeline applies them): diffusion
runs on (z - shift_factor) * scaling_factor.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.ops import quantizer as vq
from jgen.nn.ldm_networks import LOGVAR_RANGE, LDMDecoder, LDMEncoder
from jgen.ops.likelihoods import reparameterize

__all__ = ["BOTTLENECKS", "LDMAutoencoder", "example_input"]

BOTTLENECKS = ("kl", "vq")


class LDMAutoencoder(nn.Module):
  """Encoder, decoder and (VQ) codebook of a first stage, with pure encode/decode methods.

  Attributes:
    encoder: the `LDMEncoder` (KL: ``2 z`` output channels; VQ: the code dimension D after
      ``quant_conv``).
    decoder: the `LDMDecoder`.
    bottleneck: 'kl' or 'vq'.
    num_codes: K, the codebook's rows (VQ).
    scaling_factor: the latent scale of the diffusion model trained on this first stage.
    shift_factor: the latent shift (subtracted before scaling; 0 for SD 1.x / 2.x).
  """

  encoder: LDMEncoder
  decoder: LDMDecoder
  bottleneck: str = "kl"
  num_codes: int = 0
  scaling_factor: float = 1.0
  shift_factor: float = 0.0

  def setup(self):
    if self.bottleneck not in BOTTLENECKS:
      raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {self.bottleneck!r}")
    if self.bottleneck == "vq":
      if self.num_codes < 1:
        raise ValueError(f"a VQ bottleneck needs num_codes >= 1, got {self.num_codes}")
      self.codebook = self.param("codebook", lambda rng: vq.init_codebook(
          rng, self.num_codes, self.code_dim))

  @property
  def code_dim(self) -> int:
    """Channels of the encoder's output h (KL: 2 z; VQ: D)."""
    e = self.encoder
    return e.out_channels if e.embed_dim is None else e.embed_dim

  def __call__(self, images: jax.Array) -> jax.Array:
    """Reconstructions `decode(encode(images))` (KL: from the posterior mean)."""
    return self.decode(self.encode(images))

  def moments(self, images: jax.Array) -> jax.Array:
    """The encoder output h `[B, H/f, W/f, c]` (diffusers: the KL posterior's parameters, or
    ``VQModel.encode(x).latents``, the latents before quantization)."""
    return self.encoder(images, train=False)

  def posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """KL: `(mean, logvar)` of q(z | x), each `[B, H/f, W/f, z]`."""
    self._need("kl", "posterior")
    mean, logvar = jnp.split(self.moments(images), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def quantize(self, h: jax.Array) -> vq.QuantizerOutput:
    """VQ: the nearest codes of `h` `[..., D]` (straight-through z_q, indices, losses)."""
    self._need("vq", "quantize")
    return vq.quantize(h, self.codebook)

  def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Latents of images in [-1, 1]: KL the posterior mean (a sample given `rng`); VQ z_q."""
    if self.bottleneck == "vq":
      return self.quantize(self.moments(images)).z_q
    mean, logvar = self.posterior(images)
    return mean if rng is None else reparameterize(rng, mean, logvar)

  def encode_indices(self, images: jax.Array) -> jax.Array:
    """VQ: code indices `[B, H/f, W/f]`."""
    return self.quantize(self.moments(images)).indices

  def decode(self, latents: jax.Array, *, quantize: bool = False) -> jax.Array:
    """Images `[B, h f, w f, C]` (unclipped) of latents `[B, h, w, z]`; VQ with `quantize`:
    the latents are first snapped to their nearest codes (diffusers' ``VQModel.decode(h)``;
    False is its ``force_not_quantize=True``)."""
    if quantize:
      latents = self.quantize(latents).z_q
    return self.decoder(latents, train=False)

  def decode_indices(self, indices: jax.Array) -> jax.Array:
    """VQ: images of code indices `[B, h, w]` (diffusers' ``lookup_from_codebook``)."""
    self._need("vq", "decode_indices")
    return self.decode(jnp.take(self.codebook, indices, axis=0))

  def _need(self, kind: str, what: str) -> None:
    if self.bottleneck != kind:
      raise ValueError(f"{what} needs a {kind!r} bottleneck; this autoencoder's is "
                       f"{self.bottleneck!r}")


def example_input(module: LDMAutoencoder, channels: int, batch: int = 1) -> jax.Array:
  """The smallest image `[batch, f, f, channels]` that `module.init` accepts."""
  f = 2 ** (len(module.encoder.ch_mult) - 1)
  return jnp.zeros((batch, f, f, channels), jnp.float32)
