"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation, as a composition of the pure
adversarial updates of `jgen.gan.updates`.

Generators G_AB: A -> B and G_BA: B -> A (`jgen.nn.translation.ResnetGenerator`), discriminators
D_A (real A vs G_BA(b)) and D_B (real B vs G_AB(a)) (`PatchDiscriminator`: one score per
patch, [N, h, w]). With a, b batches of the two domains, ||.||_1 the mean absolute error and
lambda = `cycle_weight` (10), lambda_idt = `identity_weight` (0.5), the generators minimize

    L_G = g(D_B(G_AB(a))) + g(D_A(G_BA(b)))                                  (adversarial)
        + lambda (||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1)         (cycle)
        + lambda lambda_idt (||G_AB(b) - b||_1 + ||G_BA(a) - a||_1)          (identity)

in one `update` of the group ("g_ab", "g_ba") (one loss, each generator its own optimizer),
then each discriminator minimizes, in its own `discriminator_update`,

    L_D = 1/2 [c(D(x), 1) + c(D(x~), 0)]

on real images x and fakes x~ drawn from its image history buffer (`jgen.gan.history`, 50
images, in `model_state`, so checkpointed). The criterion c follows the reference
implementation (pytorch-CycleGAN-and-pix2pix, `GANLoss`), whose discriminator loss is halved:

* `least_squares` (LSGAN, the paper's): c(s, t) = mean((s - t)^2), so g(s) = mean((s - 1)^2)
  and L_D = jgen's `least_squares` discriminator loss (which holds the 1/2 already);
* `non_saturating` ("vanilla"): c = binary cross-entropy with logits, g(s) = mean(softplus(-s))
  and L_D = 1/2 of jgen's `non_saturating` discriminator loss.

The fakes the discriminators see are the ones the generators' loss made (before the generator
step), as in the reference's `optimize_parameters`. One loop step is one generator-group update
(`state.step` counts these) and one update of each discriminator.

Identity terms need images of A and B to have the same number of channels (G_AB must accept
b); with `identity_weight` = 0 they are not computed and the channels may differ.

EMA: off by default (`ema_decay` = 0, as the paper, whose generators are used as trained); with
`ema_decay` > 0 both generators are averaged (`EmaSpec("ema", decay, warmup, "g_(ab|ba)/.*")`)
and `translate` / `evaluate` use the averages.

Learning rate: the paper's schedule, constant for the first half of the run and then linear
to zero, is `jgen.train.optim`'s 'linear' (`optim.schedule = "linear"`, `optim.decay_from` =
0.5); the reference decays once per epoch, this evaluates the same line at every step.

State: `params`, `opt_state` (and EMAs) keyed `g_ab`, `g_ba`, `d_a`, `d_b`; `model_state` the
four networks' other collections plus `history = {"fake_a": ..., "fake_b": ...}` (the buffers
of D_A's and D_B's fakes). Keys of step `rng`: `fold_in(rng, k)`, k = 0 generators, 1 and 2
the history queries of fake B and fake A, 3 and 4 the updates of D_B and D_A.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jgen.gan import history as history_lib
from jgen.gan import losses, updates
from jgen.gan.adversarial import discriminator_optim
from jgen.nn.dtypes import compute_dtype
from jgen.nn.translation import PatchDiscriminator, ResnetGenerator
from jgen.ops.image import psnr
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any
Metrics = dict[str, jax.Array]

__all__ = ["CRITERIA", "CycleGAN", "cycle_loss", "identity_loss", "l1", "make_method"]

GENERATORS = ("g_ab", "g_ba")
DIRECTIONS = ("AtoB", "BtoA")


# ---------------------------------------------------------------------- losses


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """mean |x - y| over every element (the reference's `nn.L1Loss`)."""
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def cycle_loss(a: jax.Array, rec_a: jax.Array, b: jax.Array, rec_b: jax.Array) -> jax.Array:
  """||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1, given the reconstructions."""
  return l1(rec_a, a) + l1(rec_b, b)


def identity_loss(a: jax.Array, idt_a: jax.Array, b: jax.Array, idt_b: jax.Array) -> jax.Array:
  """||G_BA(a) - a||_1 + ||G_AB(b) - b||_1, given idt_a = G_BA(a) and idt_b = G_AB(b)."""
  return l1(idt_a, a) + l1(idt_b, b)


def _ls_generator(fake_logits: jax.Array) -> jax.Array:
  return 2.0 * losses.least_squares_generator_loss(fake_logits)   # mean((s - 1)^2)


def _bce_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  return 0.5 * losses.bce_discriminator_loss(real_logits, fake_logits)


# kind -> (discriminator loss(real, fake) with the reference's 1/2, generator loss(fake))
CRITERIA = {
    "least_squares": (losses.least_squares_discriminator_loss, _ls_generator),
    "non_saturating": (_bce_discriminator, losses.non_saturating_generator_loss),
}


# ---------------------------------------------------------------------- the method


def _apply(module: nn.Module) -> updates.ApplyFn:
  """`(params, model_state, x, conditions, *, train) -> (out, model_state)` of a translation
  network called as `module(x, train=...)` (conditions unused)."""

  def apply(params, model_state, x, conditions=None, *, train: bool):
    del conditions
    variables = {"params": params, **model_state}
    if train and model_state:
      out, new = module.apply(variables, x, train=True, mutable=list(model_state))
      return out, dict(new)
    return module.apply(variables, x, train=train), model_state

  return apply


@dataclasses.dataclass(frozen=True, eq=False)
class CycleGAN:
  """CycleGAN as a method of the loop (a `Translates` and `Evaluates` method); pure in the state.

  Attributes:
    g_ab, g_ba: generators `G(x, *, train) -> images in [-1, 1]` (A -> B and B -> A).
    d_a, d_b: discriminators `D(x, *, train) -> scores [N, ...]` of domains A and B.
    tx_g, tx_d: the optimizer of each generator and of each discriminator.
    loss: a kind of `CRITERIA`.
    cycle_weight: lambda of the cycle loss (10).
    identity_weight: lambda_idt, the identity loss's weight relative to lambda (0.5; 0: off).
    history_size: images in each discriminator's history buffer (50; 0: the latest fakes).
    ema_decay, ema_warmup: EMA of both generators (decay 0: none, the paper's choice).
    direction: "AtoB" or "BtoA", what `translate` does (`translation_names` ("B",) / ("A",)).
  """

  g_ab: nn.Module
  g_ba: nn.Module
  d_a: nn.Module
  d_b: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  loss: str = "least_squares"
  cycle_weight: float = 10.0
  identity_weight: float = 0.5
  history_size: int = 50
  ema_decay: float = 0.0
  ema_warmup: bool = False
  direction: str = "AtoB"

  def __post_init__(self):
    if self.loss not in CRITERIA:
      raise ValueError(f"CycleGAN: unknown loss {self.loss!r}; choose one of {sorted(CRITERIA)}")
    if self.direction not in DIRECTIONS:
      raise ValueError(f"CycleGAN: direction must be one of {DIRECTIONS}, got "
                       f"{self.direction!r} (set --config.sample.direction)")
    if self.history_size < 0 or self.cycle_weight < 0 or self.identity_weight < 0:
      raise ValueError("CycleGAN: history_size, cycle_weight and identity_weight must be >= 0")

  # ------------------------------------------------------------------ the networks

  def apply_fns(self) -> dict[str, updates.ApplyFn]:
    """`{name: apply function}` of the four networks."""
    return {k: _apply(getattr(self, k)) for k in ("g_ab", "g_ba", "d_a", "d_b")}

  def _check_channels(self, a: jax.Array, b: jax.Array) -> None:
    if self.identity_weight and a.shape[-1] != b.shape[-1]:
      raise ValueError(
          f"CycleGAN: the identity loss feeds B images to G_AB and A images to G_BA, so it "
          f"needs domains with the same number of channels; A has {a.shape[-1]} and B "
          f"{b.shape[-1]}. Set --config.gan.identity_weight=0 to train without it.")
    for name, module, want in (("g_ab", self.g_ab, b), ("g_ba", self.g_ba, a)):
      out = getattr(module, "out_channels", None)
      if out is not None and out != want.shape[-1]:
        raise ValueError(f"CycleGAN: {name} makes {out}-channel images but its target domain "
                         f"has {want.shape[-1]} channels")

  def translate_with(self, params: PyTree, model_state: PyTree, x: jax.Array, *,
                     direction: str) -> jax.Array:
    """The generator of `direction` ("AtoB": G_AB) applied to `x` in inference mode."""
    name = "g_ab" if direction == "AtoB" else "g_ba"
    out, _ = self.apply_fns()[name](params[name], model_state[name], x, train=False)
    return out

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    a, b = batch["image_a"][:1], batch["image_b"][:1]
    self._check_channels(a, b)
    keys = jax.random.split(rng, 5)
    variables = {"g_ab": self.g_ab.init(keys[0], a, train=False),
                 "g_ba": self.g_ba.init(keys[1], b, train=False),
                 "d_a": self.d_a.init(keys[2], a, train=False),
                 "d_b": self.d_b.init(keys[3], b, train=False)}
    params = {k: dict(v)["params"] for k, v in variables.items()}
    model_state = {k: {c: x for c, x in dict(v).items() if c != "params"}
                   for k, v in variables.items()}
    if self.history_size:
      model_state["history"] = {
          "fake_a": history_lib.init_history(self.history_size, a.shape[1:]),
          "fake_b": history_lib.init_history(self.history_size, b.shape[1:])}
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "g_(ab|ba)/.*"),)
            if self.ema_decay else ())
    txs = {"g_ab": self.tx_g, "g_ba": self.tx_g, "d_a": self.tx_d, "d_b": self.tx_d}
    return TrainState.create(params=params, tx=per_network(txs), rng=keys[4], emas=emas,
                             model_state=model_state)

  # ------------------------------------------------------------------ the loop's contract

  def generator_loss_fn(self, a: jax.Array, b: jax.Array) -> updates.LossFn:
    """`loss_fn(params, model_state, rng)` of the generator group (module docstring's L_G).

    Its metrics hold `g_adv_ab`, `g_adv_ba`, `cycle_a`, `cycle_b`, `idt_a`, `idt_b`
    (unweighted terms), `g_loss` (L_G), and the fakes `fake_a`, `fake_b` (arrays, for the
    discriminators' step; `train_step` takes them out of the metrics).
    """
    fns = self.apply_fns()
    g_crit = CRITERIA[self.loss][1]

    def loss_fn(params, model_state, rng):
      del rng
      ms = dict(model_state)

      def g(name, x):
        out, ms[name] = fns[name](params[name], ms[name], x, train=True)
        return out

      def d(name, x):  # training mode, as in its own step; statistics not updated here
        return fns[name](params[name], model_state[name], x, train=True)[0]

      fake_b, fake_a = g("g_ab", a), g("g_ba", b)
      rec_a, rec_b = g("g_ba", fake_b), g("g_ab", fake_a)
      adv_ab, adv_ba = g_crit(d("d_b", fake_b)), g_crit(d("d_a", fake_a))
      cyc_a, cyc_b = l1(rec_a, a), l1(rec_b, b)
      total = adv_ab + adv_ba + self.cycle_weight * (cyc_a + cyc_b)
      metrics = {"g_adv_ab": adv_ab, "g_adv_ba": adv_ba, "cycle_a": cyc_a, "cycle_b": cyc_b}
      if self.identity_weight:
        idt_b, idt_a = g("g_ab", b), g("g_ba", a)
        metrics["idt_a"], metrics["idt_b"] = l1(idt_a, a), l1(idt_b, b)
        total = total + self.cycle_weight * self.identity_weight * (
            metrics["idt_a"] + metrics["idt_b"])
      metrics.update(g_loss=total, fake_a=fake_a, fake_b=fake_b)
      return total, (ms, metrics)

    return loss_fn

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    a, b = batch["image_a"], batch["image_b"]
    self._check_channels(a, b)
    key = lambda k: jax.random.fold_in(rng, k)
    state, g_metrics = updates.update(state, self.generator_loss_fn(a, b), networks=GENERATORS,
                                      rng=key(0), step=state.step, count_step=True)
    fake_a, fake_b = g_metrics.pop("fake_a"), g_metrics.pop("fake_b")
    g_metrics["g_grad_norm"] = g_metrics.pop("grad_norm")
    if self.history_size:
      buffers = state.model_state["history"]
      fake_b, hist_b = history_lib.query(buffers["fake_b"], fake_b, key(1))
      fake_a, hist_a = history_lib.query(buffers["fake_a"], fake_a, key(2))
      state = state.replace(model_state={**state.model_state,
                                         "history": {"fake_a": hist_a, "fake_b": hist_b}})
    fns, d_loss = self.apply_fns(), CRITERIA[self.loss][0]
    metrics = dict(g_metrics)
    for name, real, fake, k in (("d_b", b, fake_b, 3), ("d_a", a, fake_a, 4)):
      state, m = updates.discriminator_update(state, fns[name], real, fake, rng=key(k),
                                              step=state.step, loss=d_loss, network=name)
      metrics.update({f"{name}_{field.removeprefix('d_')}": v for field, v in m.items()})
    metrics["loss"] = metrics["g_loss"]
    return state, metrics

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Held-out translation metrics (generators in inference mode, EMA if kept).

    Always: `cycle_a` = ||G_BA(G_AB(a)) - a||_1 and `cycle_b`. When the batch has `paired`
    (`jgen.data.unpaired_derived`: `image_b` is the true translation of `image_a`), per-example
    means weighted by it: `l1_ab` = ||G_AB(a) - b||_1 and `psnr_ab` (dB, on [0, 1]), and
    `l1_ba`, `psnr_ba` of G_BA(b) against a.
    """
    del rng
    a, b = batch["image_a"], batch["image_b"]
    params, ms = state.ema_params, state.model_state
    fake_b = self.translate_with(params, ms, a, direction="AtoB")
    fake_a = self.translate_with(params, ms, b, direction="BtoA")
    out = {"cycle_a": l1(self.translate_with(params, ms, fake_b, direction="BtoA"), a),
           "cycle_b": l1(self.translate_with(params, ms, fake_a, direction="AtoB"), b)}
    if "paired" in batch:
      w = batch["paired"].astype(jnp.float32)
      mean = lambda v: jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1.0)
      per = lambda x, y: jnp.mean(jnp.abs(x - y), axis=tuple(range(1, x.ndim)))
      out.update(l1_ab=mean(per(fake_b, b)), psnr_ab=mean(psnr(fake_b, b)),
                 l1_ba=mean(per(fake_a, a)), psnr_ba=mean(psnr(fake_a, a)))
    return out

  # ------------------------------------------------------------------ Translates

  @property
  def translation_names(self) -> tuple[str, ...]:
    return (self.direction[-1],)

  def _fields(self) -> tuple[str, str, str]:
    """(source image, target image, source label) fields of `direction`."""
    return (("image_a", "image_b", "label_a") if self.direction == "AtoB"
            else ("image_b", "image_a", "label_b"))

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`source` = image_a (AtoB) or image_b (BtoA); `target` [B, 1, ...] = the other image
    when the batch is `paired`; `label` = the batch's `label` (or the source's own label,
    `label_a` / `label_b`, of an unpaired batch) when present."""
    source, target, own_label = self._fields()
    out = {"source": batch[source]}
    if "paired" in batch:
      out["target"] = batch[target][:, None]
    if "label" in batch:
      out["label"] = batch["label"]
    elif own_label in batch:
      out["label"] = batch[own_label]
    return out

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, 1, H, W, C']: the (EMA) generator of `direction`."""
    del rng
    return self.translate_with(state.ema_params, state.model_state, source,
                               direction=self.direction)[:, None]

  @property
  def sample_tag(self) -> str:
    return f"cyclegan_{self.direction}"


def make_method(config: Any) -> CycleGAN:
  """CycleGAN from a config: `model` (ngf, n_blocks, g_norm, ndf, d_layers, d_norm, dtype;
  upsample, down_padding: `ResnetGenerator`'s, absent in old run records: the defaults),
  `gan` (loss, cycle_weight, identity_weight, history_size), `optim` (and `optim_d` over it,
  `jgen.gan.adversarial.discriminator_optim`), `train` (num_steps, ema_decay, ema_warmup),
  `sample.direction`, `data.channels` (both domains)."""
  m, g = config.model, config.gan
  dtype = compute_dtype(m.dtype)
  channels = config.data.channels

  def generator():
    return ResnetGenerator(out_channels=channels, ngf=m.ngf, n_blocks=m.n_blocks,
                           norm=m.g_norm, dtype=dtype, upsample=m.get("upsample", "resize"),
                           down_padding=m.get("down_padding", "reflect"))

  def discriminator():
    return PatchDiscriminator(ndf=m.ndf, n_layers=m.d_layers, norm=m.d_norm, dtype=dtype)

  total = config.train.num_steps
  return CycleGAN(
      g_ab=generator(), g_ba=generator(), d_a=discriminator(), d_b=discriminator(),
      tx_g=make_optimizer(config.optim, total_steps=total),
      tx_d=make_optimizer(discriminator_optim(config), total_steps=total),
      loss=g.loss, cycle_weight=g.cycle_weight, identity_weight=g.identity_weight,
      history_size=g.history_size, ema_decay=config.train.ema_decay,
      ema_warmup=config.train.ema_warmup, direction=config.sample.direction)
