"""The GAN method of the one loop: a composition of the pure updates of `jgen.gan.updates`.

One loop step is `n_critic` `discriminator_update`s, then one `generator_update` (which also
advances the generator's EMA, `EmaSpec("ema", decay, warmup, "generator/.*")`). The same
`GAN.train_step` drives the loop's dcgan / cgan / wgan / wgan_gp and the 2-D toy trainer of
`jgen.gan.toy`: there is one adversarial step in the code base.

State layout (`jgen.train.TrainState`):

* `params = {"generator": ..., "discriminator": ...}`, `tx = per_network({...})`, so
  `opt_state = {"generator": ..., "discriminator": ...}`, each network's own optax state;
* `emas = {"ema": {"generator": ...}}`: only the generator is averaged (sampling uses
  `state.ema_params["generator"]`);
* `model_state = {"generator": {...}, "discriminator": {...}}`: batch-norm statistics
  (`{"batch_stats": ...}`, empty without batch norm); the generator's statistics go with its EMA
  parameters at sampling time;
* `step` counts generator updates; the critic's k-th update of step s is its update number
  s * n_critic + k (what its lazy regularizers test).

Regularizers: `gp_weight` (WGAN-GP), `r1_gamma` with `r1_every` (lazy R1: every k-th critic
step, gamma scaled by k), `clip` (a projection after every critic step).

ADA (`ada=True`, Karras et al. 2020, `jgen.gan.ada`): every image the discriminator sees, real
or fake, in its steps, its regularizers and the generator's step, goes through
`ada.augment` with probability p (`ada.augmented_apply`). p lives in
``model_state["ada"]`` (checkpointed: a resume continues it): fixed at `ada_p` when
`ada_target` is None, else, every `ada_interval` steps, moved by `ada.adjust_p` from the
mean of the critic's `real_sign` = E[sign D(aug(x_real))] over those steps (r_t) toward
`ada_target`. Logged as `ada_p` and `ada_rt`. Augmentation keys: `fold_in(rng, n_critic + 2 +
k)` for critic step k, `fold_in(rng, 2 n_critic + 2)` for the generator step (the other
streams are those of a run without ADA).

Real data: the loop's batch holds `n_critic * b` images (set `data.batch_size` to that); the
critic step k reads images k, k + n_critic, k + 2 n_critic, ... (every shard of a
data-parallel batch contributes equally to every chunk) and the generator step makes b images.
Keys: `fold_in(rng, k)` for critic step k, `fold_in(rng, n_critic)` for the generator step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jgen.gan import ada as ada_lib
from jgen.gan import losses, updates
from jgen.nn import gan as nets
from jgen.nn.dtypes import compute_dtype
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any

__all__ = ["ARCHS", "GAN", "ConditionalGAN", "ada_fields", "discriminator_optim",
           "gan_from_config", "split_critic_batches"]

# arch -> (generator class, discriminator class)
ARCHS = {
    "dcgan": (nets.DCGANGenerator, nets.DCGANDiscriminator),
    "resnet": (nets.ResNetGenerator, nets.ResNetCritic),
}


def split_critic_batches(x: jax.Array, n: int) -> jax.Array:
  """`[n * b, ...] -> [n, b, ...]`, chunk k holding rows k, k + n, k + 2n, ..."""
  if x.shape[0] % n:
    raise ValueError(f"the batch ({x.shape[0]}) must be a multiple of n_critic ({n}): set "
                     f"data.batch_size to n_critic * the GAN batch")
  return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class GAN:
  """A GAN as a method of the loop; every function is pure in the state.

  Attributes:
    generator: `G(z, labels, *, train) -> images`.
    discriminator: `D(x, labels, *, train) -> scores [B]`.
    tx_g, tx_d: the generator's and the discriminator's optimizers.
    loss: a kind of `jgen.gan.losses.LOSSES`.
    z_dim: latent size; z ~ N(0, I).
    num_classes: > 0 for class-conditional G and D (the batch's labels condition both).
    n_critic: discriminator steps per generator step.
    gp_weight: WGAN-GP gradient penalty lambda (0: none).
    r1_gamma: R1 penalty gamma (0: none).
    r1_every: lazy R1 interval in critic steps (StyleGAN2: 16); gamma is scaled by it.
    clip: clip every discriminator weight to [-clip, clip] after each of its steps (0: none).
    ema_decay, ema_warmup: EMA of the generator's parameters, used by `sample` (decay 0: no
      EMA, `sample` uses the trained generator).
    ada: augment every discriminator input (module docstring).
    ada_p: ADA's initial (or, with `ada_target` None, fixed) probability.
    ada_target: r_t target of the p update (stylegan2-ada: 0.6); None: fixed p.
    ada_interval: steps between p updates; `ada_kimg`: thousands of images for p to go 0 -> 1.
    ada_ops: the pipeline's operations (`jgen.gan.ada.OPS`).
    name: the family's name (sample file tags).
  """

  generator: nn.Module
  discriminator: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  loss: str = "non_saturating"
  z_dim: int = 100
  num_classes: int = 0
  n_critic: int = 1
  gp_weight: float = 0.0
  r1_gamma: float = 0.0
  r1_every: int = 1
  clip: float = 0.0
  ema_decay: float = 0.999
  ema_warmup: bool = True
  ada: bool = False
  ada_p: float = 0.0
  ada_target: float | None = 0.6
  ada_interval: int = 4
  ada_kimg: float = 500.0
  ada_ops: tuple[str, ...] = ada_lib.OPS
  name: str = "gan"

  def __post_init__(self):
    if self.loss not in losses.LOSSES:
      raise ValueError(f"unknown GAN loss {self.loss!r}; choose one of {sorted(losses.LOSSES)}")
    if self.n_critic < 1:
      raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
    if self.ada:
      ada_lib.parse_ops(self.ada_ops)
      if not 0.0 <= self.ada_p <= 1.0 or self.ada_interval < 1 or self.ada_kimg <= 0:
        raise ValueError(f"need 0 <= gan.ada_p <= 1, gan.ada_interval >= 1, gan.ada_kimg > 0; "
                         f"got {self.ada_p}, {self.ada_interval}, {self.ada_kimg}")
    if (self.gp_weight or self.r1_gamma) and getattr(self.discriminator, "norm", "") == "batch":
      raise ValueError("gradient penalties need a critic that scores each example on its own: "
                       "use layer or no normalization in the discriminator, not batch norm")

  # ------------------------------------------------------------------ the composition

  @property
  def g_apply(self) -> updates.ApplyFn:
    return updates.module_apply(self.generator)

  @property
  def d_apply(self) -> updates.ApplyFn:
    return updates.module_apply(self.discriminator)

  def regularizers(self, d_apply: updates.ApplyFn | None = None
                   ) -> tuple[updates.Regularizer, ...]:
    """The critic's regularizer terms (of `d_apply`, default `self.d_apply`)."""
    d_apply = self.d_apply if d_apply is None else d_apply
    regs = []
    if self.gp_weight:
      regs.append(updates.gradient_penalty(d_apply, weight=self.gp_weight))
    if self.r1_gamma:
      regs.append(updates.r1(d_apply, gamma=self.r1_gamma, every=self.r1_every))
    return tuple(regs)

  def _seen_by_d(self, state: TrainState, rng: jax.Array) -> updates.ApplyFn:
    """The discriminator as its steps see it: through ADA's pipeline at the state's p."""
    if not self.ada:
      return self.d_apply
    return ada_lib.augmented_apply(self.d_apply, rng, state.model_state["ada"]["p"],
                                   self.ada_ops)

  def _update_ada(self, state: TrainState, real_sign: jax.Array, images_per_step: int
                  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """Accumulates r_t and, every `ada_interval` steps, moves p (module docstring)."""
    new, metrics = ada_lib.track(state.model_state["ada"], real_sign,
                                 images_per_step=images_per_step, interval=self.ada_interval,
                                 target=self.ada_target, kimg=self.ada_kimg)
    return state.replace(model_state={**state.model_state, "ada": new}), metrics

  def projections(self) -> tuple:
    """The critic's projections after each of its steps (WGAN's clipping)."""
    return (updates.clip_projection(self.clip),) if self.clip else ()

  def _conditions(self, labels: jax.Array | None) -> dict[str, jax.Array] | None:
    return None if labels is None else {"label": labels}

  def sample_labels(self, n: int) -> jax.Array | None:
    """Labels of `sample(state, rng, n)`: 0, 1, ..., num_classes - 1, 0, 1, ... (None if
    unconditional)."""
    return jnp.arange(n) % self.num_classes if self.num_classes else None

  def generate(self, params: PyTree, model_state: PyTree, z: jax.Array,
               labels: jax.Array | None = None, *, train: bool = False
               ) -> tuple[jax.Array, PyTree]:
    """`(images, new_model_state)` of the generator (statistics change only with `train`)."""
    return self.g_apply(params, model_state, z, self._conditions(labels), train=train)

  def discriminate(self, params: PyTree, model_state: PyTree, x: jax.Array,
                   labels: jax.Array | None = None, *, train: bool = False
                   ) -> tuple[jax.Array, PyTree]:
    """`(scores [B], new_model_state)` of the discriminator."""
    return self.d_apply(params, model_state, x, self._conditions(labels), train=train)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    x = batch["image"][:1]
    labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.z_dim)), labels, train=False)
    d_vars = self.discriminator.init(d_rng, x, labels, train=False)
    params = {"generator": g_vars.pop("params"), "discriminator": d_vars.pop("params")}
    if self.clip:
      params["discriminator"] = losses.clip_weights(params["discriminator"], self.clip)
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "generator/.*"),)
            if self.ema_decay else ())
    model_state = {"generator": dict(g_vars), "discriminator": dict(d_vars)}
    if self.ada:
      model_state["ada"] = ada_lib.init_state(self.ada_p)
    return TrainState.create(
        params=params, tx=per_network({"generator": self.tx_g, "discriminator": self.tx_d}),
        rng=state_rng, emas=emas, model_state=model_state)

  # ------------------------------------------------------------------ the loop's contract

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    n = self.n_critic
    reals = split_critic_batches(batch["image"], n)
    labels = split_critic_batches(batch["label"], n) if self.num_classes else None
    b = reals.shape[1]
    projections = self.projections()
    g_params, g_state = state.model_params["generator"], state.model_state["generator"]

    def critic_step(state, k):
      z_rng, reg_rng = jax.random.split(jax.random.fold_in(rng, k))
      cond = None if labels is None else {"label": labels[k]}
      fake, _ = self.g_apply(g_params, g_state, jax.random.normal(z_rng, (b, self.z_dim)),
                             cond, train=True)
      d_apply = self._seen_by_d(state, jax.random.fold_in(rng, n + 2 + k))
      return updates.discriminator_update(
          state, d_apply, reals[k], fake, rng=reg_rng, step=state.step * n + k,
          conditions=cond, loss=self.loss, regularizers=self.regularizers(d_apply),
          projections=projections)

    # Unrolled: XLA:CPU runs convolutions inside a while loop far slower (about 30x here).
    state, d_metrics = jax.lax.scan(critic_step, state, jnp.arange(n), unroll=True)
    d_metrics = jax.tree.map(jnp.mean, d_metrics)

    z = jax.random.normal(jax.random.fold_in(rng, n), (b, self.z_dim))
    cond = None if labels is None else {"label": labels[0]}
    state, g_metrics = updates.generator_update(
        state, self.g_apply, self._seen_by_d(state, jax.random.fold_in(rng, 2 * n + 2)), z,
        rng=jax.random.fold_in(rng, n + 1), step=state.step, conditions=cond, loss=self.loss)
    metrics = {**d_metrics, **g_metrics, "loss": d_metrics["d_loss"]}
    if self.ada:
      state, ada_metrics = self._update_ada(state, d_metrics["real_sign"], b * n)
      metrics.update(ada_metrics)
    if self.loss == "wasserstein":  # the critic's estimate of W1 (its negated loss)
      metrics["wasserstein"] = -d_metrics["d_loss"]
    return state, metrics

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The discriminator's loss and mean scores on held-out real images vs EMA samples
    (statistics in inference mode); `wasserstein` = mean real - mean fake score."""
    x = batch["image"]
    labels = batch["label"] if self.num_classes else None
    fake, _ = self.generate(state.ema_params["generator"], state.model_state["generator"],
                            jax.random.normal(rng, (x.shape[0], self.z_dim)), labels)
    d_params, d_state = state.model_params["discriminator"], state.model_state["discriminator"]
    real_logits, _ = self.discriminate(d_params, d_state, x, labels)
    fake_logits, _ = self.discriminate(d_params, d_state, fake, labels)
    real, fake_s = jnp.mean(real_logits), jnp.mean(fake_logits)
    return {"loss": losses.discriminator_loss(self.loss, real_logits, fake_logits),
            "real_score": real, "fake_score": fake_s, "wasserstein": real - fake_s}

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images of the EMA generator in [-1, 1]; conditional: labels `sample_labels(n)`."""
    return self.sample_with_labels(state, rng, self.sample_labels(n), n)

  def sample_with_labels(self, state: TrainState, rng: jax.Array, labels: jax.Array | None,
                         n: int) -> jax.Array:
    """`n` images of the EMA generator for the given `labels` (`[n]`, or None)."""
    z = jax.random.normal(rng, (n, self.z_dim))
    images, _ = self.generate(state.ema_params["generator"], state.model_state["generator"],
                              z, labels)
    return images

  @property
  def sample_tag(self) -> str:
    return f"{self.name}_ema"

  def path_length_fns(self, state: TrainState) -> dict[str, Any]:
    """PPL in z (`jgen.metrics.ppl`): slerp at z's typical norm sqrt(z_dim), the EMA
    generator; conditional pairs share the label (i mod num_classes)."""
    params, g_state = state.ema_params["generator"], state.model_state["generator"]

    def generator_fn(z):
      return self.generate(params, g_state, z, self.sample_labels(z.shape[0]))[0]

    return {"space": "z", "generator_fn": generator_fn, "latent_shape": (self.z_dim,),
            "z_radius": math.sqrt(self.z_dim)}


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalGAN(GAN):
  """A class-conditional `GAN` (`num_classes` > 0): also the loop's `Conditional` method."""

  def __post_init__(self):
    super().__post_init__()
    if self.num_classes < 1:
      raise ValueError(f"a ConditionalGAN needs num_classes > 0, got {self.num_classes}")

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: Mapping[str, jax.Array], n: int) -> jax.Array:
    """`n` images for `conditions["label"]` (int32 `[n]`; `jgen.nn.conditioning`)."""
    return self.sample_with_labels(state, rng, conditions["label"], n)


def discriminator_optim(config: Any) -> dict[str, Any]:
  """The discriminator's optimizer config: `config.optim` with the fields that
  `config.optim_d` sets on its own (not None) put in.

  `optim_d`'s fields are placeholders (None: "follow optim"), so `--config.optim.lr=1e-4`
  moves both networks and `--config.optim_d.lr=4e-4` the discriminator only. `rules` are not
  an optimizer field (they select trainable leaves of the whole tree).
  """
  optim = {k: v for k, v in config.optim.items() if k != "rules"}
  own = {k: v for k, v in config.get("optim_d", {}).items() if v is not None}
  return {**optim, **own}


def ada_fields(gan_config: Any) -> dict[str, Any]:
  """The `GAN` fields of ADA from a config's `gan` block ({} when `gan.ada` is off)."""
  g = gan_config
  if not g.ada:
    return {}
  target = g.ada_target
  return dict(ada=True, ada_p=float(g.ada_p),
              ada_target=None if target is None else float(target),
              ada_interval=int(g.ada_interval), ada_kimg=float(g.ada_kimg),
              ada_ops=ada_lib.parse_ops(g.ada_ops))


def gan_from_config(config: Any, **fixed) -> GAN:
  """Translates a config (`model`, `gan`, `optim` for G, `optim_d` over it for D, `train`)
  into a GAN (a `ConditionalGAN` when `num_classes` > 0).

  `fixed` overrides fields a family defines (e.g. `loss="wasserstein"` for WGAN).
  """
  m, g = config.model, config.gan
  if m.arch not in ARCHS:
    raise ValueError(f"unknown GAN architecture {m.arch!r}; choose one of {sorted(ARCHS)}")
  dtype = compute_dtype(m.dtype)
  g_cls, d_cls = ARCHS[m.arch]
  num_classes = fixed.pop("num_classes", g.num_classes)
  generator = g_cls(image_size=config.data.image_size, channels=config.data.channels,
                    features=m.g_features, num_classes=num_classes, embed_dim=m.embed_dim,
                    norm=m.g_norm, dtype=dtype)
  discriminator = d_cls(features=m.d_features, num_classes=num_classes,
                        conditioning=m.conditioning, norm=m.d_norm, dtype=dtype)
  fields = dict(loss=g.loss, z_dim=m.z_dim, n_critic=g.n_critic, gp_weight=g.gp_weight,
                r1_gamma=g.r1_gamma, r1_every=g.r1_every, clip=g.clip,
                ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
  fields.update(ada_fields(g))
  fields.update(fixed)
  total = config.train.num_steps
  cls = ConditionalGAN if num_classes else GAN
  return cls(generator=generator, discriminator=discriminator,
             tx_g=make_optimizer(config.optim, total_steps=total),
             tx_d=make_optimizer(discriminator_optim(config),
                                 total_steps=total * fields["n_critic"]),
             num_classes=num_classes, **fields)
