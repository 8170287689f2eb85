"""The adversarial train step shared by every GAN family, as a method of the one loop.

A `GAN` holds both networks and both optimizers; one loop step is one jitted update of both:
`n_critic` discriminator (critic) steps, then one generator step, then the generator's EMA.

State layout (`jgen.train.TrainState`):

* `params = {"generator": ..., "discriminator": ...}`;
* `opt_state = {"generator": ..., "discriminator": ...}`, each network's own optax state; the
  static `tx` is `per_network({...})`, the two optimizers side by side (its `init` builds that
  dict). The GAN step updates one network at a time with `GAN.tx_g` / `GAN.tx_d` and never calls
  `TrainState.apply_gradients` (whose EMA covers all params);
* `ema_params = {"generator": ...}`: only the generator is averaged (sampling uses it);
* `model_state = {"generator": {...}, "discriminator": {...}}`: batch-norm statistics
  (`{"batch_stats": ...}`, empty without batch norm); the generator's statistics go with its EMA
  parameters at sampling time;
* `step` counts generator updates; the discriminator's optimizer counts its own.

Real data: the loop's batch holds `n_critic * b` images (set `data.batch_size` to that); the
critic step k reads images k, k + n_critic, k + 2 n_critic, ... (every shard of a
data-parallel batch contributes equally to every chunk) and the generator step makes b images.
Keys: `fold_in(rng, k)` for critic step k, `fold_in(rng, n_critic)` for the generator step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jgen.gan import losses
from jgen.nn import gan as nets
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState, ema_decay_at, ema_update

PyTree = Any

__all__ = ["GAN", "ARCHS", "gan_from_config", "per_network", "split_critic_batches"]

NETWORKS = ("generator", "discriminator")

# arch -> (generator class, discriminator class)
ARCHS = {
    "dcgan": (nets.DCGANGenerator, nets.DCGANDiscriminator),
    "resnet": (nets.ResNetGenerator, nets.ResNetCritic),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def per_network(txs: Mapping[str, optax.GradientTransformation]
                ) -> optax.GradientTransformation:
  """Optimizers side by side: `txs[k]` updates the subtree `params[k]` with its own state."""

  def init(params):
    return {k: tx.init(params[k]) for k, tx in txs.items()}

  def update(grads, state, params=None):
    out = {k: tx.update(grads[k], state[k], None if params is None else params[k])
           for k, tx in txs.items()}
    return {k: u for k, (u, _) in out.items()}, {k: s for k, (_, s) in out.items()}

  return optax.GradientTransformation(init, update)


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
    clip: clip every discriminator weight to [-clip, clip] after each of its steps (0: none).
    ema_decay, ema_warmup: EMA of the generator's parameters, used by `sample`.
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
  clip: float = 0.0
  ema_decay: float = 0.999
  ema_warmup: bool = True
  name: str = "gan"

  def __post_init__(self):
    if self.loss not in losses.LOSSES:
      raise ValueError(f"unknown GAN loss {self.loss!r}; choose one of {sorted(losses.LOSSES)}")
    if self.n_critic < 1:
      raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
    if (self.gp_weight or self.r1_gamma) and getattr(self.discriminator, "norm", "") == "batch":
      raise ValueError("gradient penalties need a critic that scores each example on its own: "
                       "use layer or no normalization in the discriminator, not batch norm")

  # ------------------------------------------------------------------ networks

  def _labels(self, batch: Mapping[str, jax.Array]) -> jax.Array | None:
    return batch["label"] if self.num_classes else None

  def sample_labels(self, n: int) -> jax.Array | None:
    """Labels of `sample(state, rng, n)`: 0, 1, ..., num_classes - 1, 0, 1, ... (None if
    unconditional)."""
    return jnp.arange(n) % self.num_classes if self.num_classes else None

  def generate(self, params: PyTree, model_state: PyTree, z: jax.Array,
               labels: jax.Array | None = None, *, train: bool = False
               ) -> tuple[jax.Array, PyTree]:
    """`(images, new_model_state)` of the generator (statistics change only with `train`)."""
    return _apply(self.generator, params, model_state, z, labels, train=train)

  def discriminate(self, params: PyTree, model_state: PyTree, x: jax.Array,
                   labels: jax.Array | None = None, *, train: bool = False
                   ) -> tuple[jax.Array, PyTree]:
    """`(scores [B], new_model_state)` of the discriminator."""
    return _apply(self.discriminator, params, model_state, x, labels, train=train)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    x = batch["image"][:1]
    labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.z_dim)), labels, train=False)
    d_vars = self.discriminator.init(d_rng, x, labels, train=False)
    params = {"generator": g_vars.pop("params"), "discriminator": d_vars.pop("params")}
    if self.clip:
      params["discriminator"] = losses.clip_weights(params["discriminator"], self.clip)
    tx = per_network({"generator": self.tx_g, "discriminator": self.tx_d})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        ema_params={"generator": jax.tree.map(jnp.copy, params["generator"])},
        opt_state=tx.init(params), rng=jax.random.key_data(state_rng), tx=tx,
        ema_decay=self.ema_decay, ema_warmup=self.ema_warmup,
        model_state={"generator": dict(g_vars), "discriminator": dict(d_vars)})

  # ------------------------------------------------------------------ losses

  def discriminator_loss_fn(self, d_params: PyTree, d_state: PyTree, real: jax.Array,
                            fake: jax.Array, labels: jax.Array | None, rng: jax.Array
                            ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """`(loss, (new_d_state, metrics))` of one critic step on real and (fixed) fake images."""
    real_logits, d_state = self.discriminate(d_params, d_state, real, labels, train=True)
    fake_logits, d_state = self.discriminate(d_params, d_state, fake, labels, train=True)
    adv = losses.discriminator_loss(self.loss, real_logits, fake_logits)
    metrics = {"d_loss": adv, "real_score": jnp.mean(real_logits),
               "fake_score": jnp.mean(fake_logits)}
    loss = adv
    d_fn = lambda v: self.discriminate(d_params, d_state, v, labels, train=True)[0]
    if self.gp_weight:
      metrics["gp"] = losses.gradient_penalty(d_fn, real, fake, rng, weight=self.gp_weight)
      loss = loss + metrics["gp"]
    if self.r1_gamma:
      metrics["r1"] = losses.r1_penalty(d_fn, real, gamma=self.r1_gamma)
      loss = loss + metrics["r1"]
    return loss, (d_state, metrics)

  def generator_loss_fn(self, g_params: PyTree, g_state: PyTree, d_params: PyTree,
                        d_state: PyTree, z: jax.Array, labels: jax.Array | None
                        ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """`(loss, (new_g_state, metrics))` of one generator step (D's statistics not updated)."""
    fake, g_state = self.generate(g_params, g_state, z, labels, train=True)
    logits, _ = self.discriminate(d_params, d_state, fake, labels, train=True)
    loss = losses.generator_loss(self.loss, logits)
    return loss, (g_state, {"g_loss": loss})

  # ------------------------------------------------------------------ the loop's contract

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    n = self.n_critic
    reals = split_critic_batches(batch["image"], n)
    labels = split_critic_batches(batch["label"], n) if self.num_classes else None
    b = reals.shape[1]
    g_params, g_state = state.params["generator"], state.model_state["generator"]

    def critic_step(carry, k):
      d_params, d_opt, d_state = carry
      z_rng, gp_rng = jax.random.split(jax.random.fold_in(rng, k))
      y = None if labels is None else labels[k]
      fake, _ = self.generate(g_params, g_state, jax.random.normal(z_rng, (b, self.z_dim)), y,
                              train=True)
      grads, (d_state, metrics) = jax.grad(self.discriminator_loss_fn, has_aux=True)(
          d_params, d_state, reals[k], jax.lax.stop_gradient(fake), y, gp_rng)
      updates, d_opt = self.tx_d.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      if self.clip:
        d_params = losses.clip_weights(d_params, self.clip)
      return (d_params, d_opt, d_state), {**metrics, "d_grad_norm": optax.global_norm(grads)}

    carry = (state.params["discriminator"], state.opt_state["discriminator"],
             state.model_state["discriminator"])
    # Unrolled: XLA:CPU runs convolutions inside a while loop far slower (about 30x here).
    (d_params, d_opt, d_state), d_metrics = jax.lax.scan(critic_step, carry, jnp.arange(n),
                                                         unroll=True)
    d_metrics = jax.tree.map(jnp.mean, d_metrics)

    z = jax.random.normal(jax.random.fold_in(rng, n), (b, self.z_dim))
    y = None if labels is None else labels[0]
    g_grads, (g_state, g_metrics) = jax.grad(self.generator_loss_fn, has_aux=True)(
        g_params, g_state, d_params, d_state, z, y)
    updates, g_opt = self.tx_g.update(g_grads, state.opt_state["generator"], g_params)
    g_params = optax.apply_updates(g_params, updates)
    decay = ema_decay_at(state.step, state.ema_decay, warmup=state.ema_warmup)
    state = state.replace(
        step=state.step + 1,
        params={"generator": g_params, "discriminator": d_params},
        ema_params={"generator": ema_update(state.ema_params["generator"], g_params, decay)},
        opt_state={"generator": g_opt, "discriminator": d_opt},
        model_state={"generator": g_state, "discriminator": d_state})
    metrics = {**d_metrics, **g_metrics, "g_grad_norm": optax.global_norm(g_grads),
               "loss": d_metrics["d_loss"]}
    if self.loss == "wasserstein":  # the critic's estimate of W1 (its negated loss)
      metrics["wasserstein"] = -d_metrics["d_loss"]
    return state, metrics

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The discriminator's loss and mean scores on held-out real images vs EMA samples
    (statistics in inference mode); `wasserstein` = mean real - mean fake score."""
    x = batch["image"]
    labels = self._labels(batch)
    fake, _ = self.generate(state.ema_params["generator"], state.model_state["generator"],
                            jax.random.normal(rng, (x.shape[0], self.z_dim)), labels)
    d_params, d_state = state.params["discriminator"], state.model_state["discriminator"]
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


def _apply(module: nn.Module, params: PyTree, model_state: PyTree, x: jax.Array,
           labels: jax.Array | None, *, train: bool) -> tuple[jax.Array, PyTree]:
  variables = {"params": params, **model_state}
  if train and model_state:
    out, updates = module.apply(variables, x, labels, train=True, mutable=list(model_state))
    return out, dict(updates)
  return module.apply(variables, x, labels, train=train), model_state


def gan_from_config(config: Any, **fixed) -> GAN:
  """Translates a config (`model`, `gan`, `optim` for G, `optim_d` for D, `train`) into a GAN.

  `fixed` overrides fields a family defines (e.g. `loss="wasserstein"` for WGAN).
  """
  m, g = config.model, config.gan
  if m.arch not in ARCHS:
    raise ValueError(f"unknown GAN architecture {m.arch!r}; choose one of {sorted(ARCHS)}")
  if m.dtype not in DTYPES:
    raise ValueError(f"unknown compute dtype {m.dtype!r}; choose one of {sorted(DTYPES)}")
  g_cls, d_cls = ARCHS[m.arch]
  num_classes = fixed.pop("num_classes", g.num_classes)
  dtype = DTYPES[m.dtype]
  generator = g_cls(image_size=config.data.image_size, channels=config.data.channels,
                    features=m.g_features, num_classes=num_classes, embed_dim=m.embed_dim,
                    norm=m.g_norm, dtype=dtype)
  discriminator = d_cls(features=m.d_features, num_classes=num_classes,
                        conditioning=m.conditioning, norm=m.d_norm, dtype=dtype)
  fields = dict(loss=g.loss, z_dim=m.z_dim, n_critic=g.n_critic, gp_weight=g.gp_weight,
                r1_gamma=g.r1_gamma, clip=g.clip, ema_decay=config.train.ema_decay,
                ema_warmup=config.train.ema_warmup)
  fields.update(fixed)
  total = config.train.num_steps
  return GAN(generator=generator, discriminator=discriminator,
             tx_g=make_optimizer(config.optim, total_steps=total),
             tx_d=make_optimizer(config.optim_d, total_steps=total * fields["n_critic"]),
             num_classes=num_classes, **fields)
