"""pix2pix (Isola et al. 2017): a conditional GAN for paired image-to-image translation.
`method = "gan.pix2pix"`.

A U-Net G maps a source image s to its target t (`jgen.nn.translation.UNetGenerator`, whose
dropout is its noise z); a PatchGAN D scores the channel concatenation [s, y] of the source and
a real (y = t) or translated (y = G(s)) target patch by patch (`PatchDiscriminator`, logits
[B, h, w]). With BCE on every patch logit:

  L_D = 1/2 [ E softplus(-D(s, t)) + E softplus(D(s, G(s))) ]        (halved, as the paper
                                                                     "divides the objective by
                                                                     2 while optimizing D")
  L_G = E softplus(-D(s, G(s))) + lambda E |G(s) - t|,  lambda = `l1_weight` (100)

(E over images and patches; L1 on [-1, 1] images; G's adversarial term non-saturating). One
loop step is a composition of `jgen.gan.updates`: `discriminator_update` of D against the
current G's translations (conditions `{"image": s}` concatenated by D's apply function), then
`update` of G on L_G against the updated D, with the same dropout key as the translations D
saw (so D and G see the same G(s), as in the reference's one forward pass). Adam(2e-4,
b1 = 0.5, b2 = 0.999) for both networks in the configs.

State: `params = {"generator", "discriminator"}`, `tx = per_network(...)`, `model_state` the
networks' batch statistics (`{}` with instance norm); `step` counts G updates.

EMA: the paper averages nothing, so `ema_decay = 0` (the configs' default) translates with the
trained generator; with `ema_decay > 0` an `EmaSpec("ema", ...)` averages the generator's
parameters and `translate` / `evaluate` use the average (the running batch statistics stay the
trained generator's, as in `jgen.gan.adversarial`).

Test time: dropout stays on (`translate(state, rng, s)`: the rng is the dropout key). Batch
norm uses the running statistics, unless `test_batch_stats`: then every image is normalized by
its own statistics, the paper's protocol ("batch normalization using the statistics of the
test batch", at batch size 1), independent of how the loop chunks and pads the held-out set.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jgen.ops.image import psnr
from jgen.gan import losses, updates
from jgen.gan.adversarial import discriminator_optim
from jgen.nn.dtypes import compute_dtype
from jgen.nn.translation import PatchDiscriminator, UNetGenerator
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any

__all__ = ["LOSSES", "Pix2Pix", "make_method", "pix2pix_generator_loss"]

LOSSES = ("non_saturating", "least_squares", "hinge", "minimax")


def pix2pix_generator_loss(fake_logits: jax.Array, fake: jax.Array, target: jax.Array, *,
                           l1_weight: float, loss: str = "non_saturating"
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_G = L_adv(D(s, G(s))) + l1_weight * mean |G(s) - t| (images in [-1, 1]).

  Returns:
    `(L_G, {"g_adv": L_adv, "l1": mean |G(s) - t|, "g_loss": L_G})`.
  """
  adv = losses.generator_loss(loss, fake_logits)
  l1 = jnp.mean(jnp.abs(fake.astype(jnp.float32) - target.astype(jnp.float32)))
  total = adv + l1_weight * l1
  return total, {"g_adv": adv, "l1": l1, "g_loss": total}


def _check_batch(batch: dict[str, jax.Array]) -> None:
  missing = {"source", "target"} - set(batch)
  if missing:
    raise ValueError(f"pix2pix trains on pairs: the batch needs fields 'source' and 'target', "
                     f"it has {sorted(batch)}; set data.source to 'paired:PATH', "
                     "'paired_btoa:PATH' or 'derived:TRANSFORM:SPEC'")


@dataclasses.dataclass(frozen=True, eq=False)
class Pix2Pix:
  """pix2pix as a method of the loop (`Translates`, `Evaluates`); see the module docstring.

  Attributes:
    generator: `G(s, *, train) -> t` (a `UNetGenerator`; rng stream 'dropout').
    discriminator: `D([s, y], *, train) -> logits [B, h, w]` (a `PatchDiscriminator`).
    tx_g, tx_d: the generator's and the discriminator's optimizers.
    l1_weight: lambda of the L1 term (100 in the paper).
    loss: the adversarial loss, one of `LOSSES` ('non_saturating': the paper's BCE).
    ema_decay, ema_warmup: EMA of the generator (decay 0: none, the paper).
    test_batch_stats: normalize each test image by its own batch-norm statistics.
  """

  generator: nn.Module
  discriminator: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  l1_weight: float = 100.0
  loss: str = "non_saturating"
  ema_decay: float = 0.0
  ema_warmup: bool = False
  test_batch_stats: bool = False

  translation_names = ("target",)

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f"pix2pix takes gan.loss in {LOSSES}, got {self.loss!r}")
    if self.l1_weight < 0:
      raise ValueError(f"gan.l1_weight must be >= 0, got {self.l1_weight}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"train.ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")

  # ------------------------------------------------------------------ the networks

  def g_apply(self, dropout_rng: jax.Array) -> updates.ApplyFn:
    """G's apply function `(params, model_state, s, conditions, *, train) -> (G(s), ms)` with
    its dropout key bound (`conditions` is unused)."""

    def apply(params, model_state, x, conditions=None, *, train: bool):
      del conditions
      variables = {"params": params, **model_state}
      rngs = {"dropout": dropout_rng}
      if train and model_state:
        out, new = self.generator.apply(variables, x, train=True, rngs=rngs,
                                        mutable=list(model_state))
        return out, dict(new)
      return self.generator.apply(variables, x, train=train, rngs=rngs), model_state

    return apply

  def d_apply(self, params: PyTree, model_state: PyTree, x: jax.Array,
              conditions: dict[str, jax.Array], *, train: bool) -> tuple[jax.Array, PyTree]:
    """D's apply function: logits [B, h, w] of [conditions["image"], x] (channels), ms."""
    pair = jnp.concatenate([conditions["image"].astype(x.dtype), x], axis=-1)
    variables = {"params": params, **model_state}
    if train and model_state:
      out, new = self.discriminator.apply(variables, pair, train=True,
                                          mutable=list(model_state))
      return out, dict(new)
    return self.discriminator.apply(variables, pair, train=train), model_state

  def d_loss(self, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The halved discriminator loss 1/2 L_D(real, fake) (the paper's)."""
    return 0.5 * losses.discriminator_loss(self.loss, real_logits, fake_logits)

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    _check_batch(batch)
    source, target = batch["source"][:1], batch["target"][:1]
    g_rng, d_rng, drop_rng, state_rng = jax.random.split(rng, 4)
    g_vars = self.generator.init({"params": g_rng, "dropout": drop_rng}, source, train=False)
    out = jax.eval_shape(lambda: self.generator.apply(g_vars, source, train=False,
                                                      rngs={"dropout": drop_rng}))
    if out.shape != target.shape:
      raise ValueError(f"the generator maps sources {source.shape[1:]} to {out.shape[1:]}, but "
                       f"the targets are {target.shape[1:]}: set data.channels to the "
                       "targets' channels")
    d_vars = self.discriminator.init(d_rng, jnp.concatenate([source, target], -1), train=False)
    params = {"generator": g_vars.pop("params"), "discriminator": d_vars.pop("params")}
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "generator/.*"),)
            if self.ema_decay else ())
    return TrainState.create(
        params=params, tx=per_network({"generator": self.tx_g, "discriminator": self.tx_d}),
        rng=state_rng, emas=emas,
        model_state={"generator": dict(g_vars), "discriminator": dict(d_vars)})

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One D step, then one G step (keys: fold_in(rng, 0) dropout, 1 D, 2 G)."""
    _check_batch(batch)
    source, target = batch["source"], batch["target"]
    cond = {"image": source}
    g_apply = self.g_apply(jax.random.fold_in(rng, 0))
    fake, _ = g_apply(state.model_params["generator"], state.model_state["generator"], source,
                      train=True)
    state, d_metrics = updates.discriminator_update(
        state, self.d_apply, target, fake, rng=jax.random.fold_in(rng, 1), step=state.step,
        conditions=cond, loss=self.d_loss, network="discriminator")

    def g_loss(params, model_state, rng):
      del rng
      fake, g_ms = g_apply(params["generator"], model_state["generator"], source, train=True)
      logits, _ = self.d_apply(params["discriminator"], model_state["discriminator"], fake,
                               cond, train=True)
      total, metrics = pix2pix_generator_loss(logits, fake, target, l1_weight=self.l1_weight,
                                              loss=self.loss)
      return total, ({**model_state, "generator": g_ms}, metrics)

    state, g_metrics = updates.update(state, g_loss, networks="generator",
                                      rng=jax.random.fold_in(rng, 2), count_step=True)
    g_metrics["g_grad_norm"] = g_metrics.pop("grad_norm")
    return state, {**d_metrics, **g_metrics, "loss": g_metrics["g_loss"]}

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    _check_batch(batch)
    inputs = {"source": batch["source"], "target": batch["target"][:, None]}
    if "label" in batch:
      inputs["label"] = batch["label"]
    return inputs

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 1, H, W, C']: G(s) of the (EMA) generator, dropout keyed by `rng`."""
    params, ms = state.ema_params["generator"], state.model_state["generator"]
    if not self.test_batch_stats:
      return self.g_apply(rng)(params, ms, source, train=False)[0][:, None]

    def one(s, key):  # one image, normalized by its own statistics (train-mode batch norm)
      return self.g_apply(key)(params, ms, s[None], train=True)[0][0]

    keys = jax.random.split(rng, source.shape[0])
    return jax.vmap(one)(source, keys)[:, None]

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Held-out `l1` = mean |G(s) - t| on [0, 1] images (half the training L1, which is on
    [-1, 1]; the same figure as `jgen.metrics.translation.l1_error`) and `psnr` = the mean
    over images of 10 log10(1 / MSE) on [0, 1] (dB, capped at 100)."""
    _check_batch(batch)
    y = self.translate(state, rng, batch["source"])[:, 0]
    t = batch["target"].astype(jnp.float32)
    return {"l1": 0.5 * jnp.mean(jnp.abs(y - t)), "psnr": jnp.mean(psnr(y, t))}

  @property
  def sample_tag(self) -> str:
    return "pix2pix_ema" if self.ema_decay else "pix2pix"


def make_method(config: Any) -> Pix2Pix:
  """Translates a config (`model`, `gan`, `optim` for G, `optim_d` over it for D, `train`)."""
  m, g = config.model, config.gan
  dtype = compute_dtype(m.dtype)
  generator = UNetGenerator(out_channels=config.data.channels, ngf=m.ngf,
                            num_downs=m.num_downs, norm=m.g_norm, dropout=m.dropout,
                            dtype=dtype,
                            dropout_placement=m.get("dropout_placement", "bottleneck"),
                            edge_bias=m.get("edge_bias", True))
  discriminator = PatchDiscriminator(ndf=m.ndf, n_layers=m.n_layers, norm=m.d_norm,
                                     dtype=dtype)
  total = config.train.num_steps
  return Pix2Pix(generator=generator, discriminator=discriminator,
                 tx_g=make_optimizer(config.optim, total_steps=total),
                 tx_d=make_optimizer(discriminator_optim(config), total_steps=total),
                 l1_weight=g.l1_weight, loss=g.loss, ema_decay=config.train.ema_decay,
                 ema_warmup=config.train.ema_warmup,
                 test_batch_stats=g.test_batch_stats)
