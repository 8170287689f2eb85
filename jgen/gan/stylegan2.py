"""StyleGAN2 (Karras et al. 2020). `method = "gan.stylegan2"`.

Networks: `jgen.nn.stylegan2` (mapping, modulated skip synthesis, residual discriminator).
`StyleGAN2` is a `jgen.gan.adversarial.GAN` whose generator renders through style mixing,
per-layer noise and truncation; its step is the same two pure updates of `jgen.gan.updates`:

    D:  softplus(D(G(z))) + softplus(-D(x)) + [s % k_r == 0] k_r gamma / 2 E||grad_x D(x)||^2
    G:  softplus(-D(G(z))) + [s % k_pl == 0] k_pl pl_weight E[(a - m)^2]

(k_r = `r1_every`, k_pl = `pl_every`; the non-saturating loss; lazy R1 of `updates.r1`,
gamma = `gan.r1_gamma`, every 16; lazy path-length regularization of `updates.path_length` w.r.t. ws
on B / `pl_batch_shrink` examples, every 4, its running mean m with decay 0.01 in
``model_state["path_length"]``). The lazy terms enter the step they are due in, scaled by their
interval; the reference runs them as separate optimizer steps and therefore rescales Adam's learning
rate and betas by c = k / (k + 1) for each network -- jgen adds them to the main step's loss instead
(one step, one optimizer), so the configured lr and betas are used as they are.

* Style mixing (`style_mixing`, 0.9): with that probability per step, one cutoff
  c ~ U{1, ..., num_ws - 1} for the batch and the style inputs l >= c taken from the mapping
  of a second z (the reference's per-batch cutoff); applied to the fakes of both updates and
  of the path-length term.
* Tracked average w (``model_state["w_avg"]``): after each step w_avg <- mean_B(w) + beta
  (w_avg - mean_B(w)), beta = `w_avg_beta` = 0.995, from the mapping of the generator
  step's z (the reference updates it on every training-mode mapping call).
* Truncation (`truncation`, psi; `--config.sample.truncation`): w' = w_avg + psi (w - w_avg) at
  every layer; psi = 0 renders w_avg's image for every z, psi = 1 is no truncation.
* Noise inputs: random per example in training and sampling; the style-mixing figure and PPL
  use "const" noise (one map per layer, shared by every image: the reference's
  noise_mode='const'), so their images depend on w alone.
* EMA generator (`train.ema_decay`), used by sampling, evaluation, PPL and the figures; the
  tracked w_avg is the trained generator's (the reference copies G's buffers into G_ema).

ADA, class conditioning (`gan.num_classes`: the embedding in the mapping input, the projection
discriminator) and the optimizers are the `GAN`'s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jgen.gan import updates
from jgen.gan.adversarial import GAN, ConditionalGAN, ada_fields, discriminator_optim
from jgen.nn import stylegan2 as nets
from jgen.nn.dtypes import compute_dtype
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

PyTree = Any

__all__ = ["ConditionalStyleGAN2", "StyleGAN2", "make_method", "style_groups", "truncate"]


def truncate(w: jax.Array, w_avg: jax.Array, psi: float | jax.Array) -> jax.Array:
  """The truncation trick: w_avg + psi (w - w_avg)."""
  return w_avg + psi * (w - w_avg)


def style_groups(num_blocks: int) -> tuple[tuple[str, int, int], ...]:
  """(name, first, end) ws index ranges of the coarse, middle and fine styles: the blocks
  split in thirds (blocks [round(L i / 3), round(L (i + 1) / 3))), block b owning ws
  [2 b, 2 b + 2)."""
  bounds = [round(num_blocks * i / 3) for i in range(4)]
  names = ("coarse", "middle", "fine")
  return tuple((names[i], 2 * bounds[i], 2 * bounds[i + 1]) for i in range(3)
               if bounds[i + 1] > bounds[i])


@dataclasses.dataclass(frozen=True, eq=False)
class StyleGAN2(GAN):
  """StyleGAN2 as a method of the loop (module docstring).

  Attributes (beyond `GAN`'s):
    style_mixing: style mixing probability per step.
    pl_weight, pl_every, pl_decay, pl_batch_shrink: the path-length term (weight 0: off).
    w_avg_beta: decay of the tracked average w.
    truncation: psi of sampling.
  """

  style_mixing: float = 0.9
  pl_weight: float = 2.0
  pl_every: int = 4
  pl_decay: float = 0.01
  pl_batch_shrink: int = 2
  w_avg_beta: float = 0.995
  truncation: float = 1.0
  name: str = "stylegan2"

  def __post_init__(self):
    super().__post_init__()
    if self.n_critic != 1:
      raise ValueError(f"StyleGAN2 takes one discriminator step per generator step; got "
                       f"gan.n_critic={self.n_critic}")
    if not 0.0 <= self.style_mixing <= 1.0:
      raise ValueError(f"gan.style_mixing is a probability, got {self.style_mixing}")
    if self.pl_every < 1 or self.pl_batch_shrink < 1 or self.pl_weight < 0:
      raise ValueError(f"need gan.pl_weight >= 0, gan.pl_every >= 1, gan.pl_batch_shrink >= "
                       f"1; got {self.pl_weight}, {self.pl_every}, {self.pl_batch_shrink}")
    if not 0.0 <= self.w_avg_beta < 1.0 or not math.isfinite(self.truncation):
      raise ValueError(f"need 0 <= gan.w_avg_beta < 1 and a finite sample.truncation; got "
                       f"{self.w_avg_beta}, {self.truncation}")

  # ------------------------------------------------------------------ rendering

  @property
  def num_ws(self) -> int:
    return self.generator.num_ws

  def map(self, g_params: PyTree, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """w [B, w_dim] of the mapping network."""
    return self.generator.apply({"params": g_params}, z, labels,
                                method=nets.StyleGAN2Generator.map)

  def broadcast(self, w: jax.Array) -> jax.Array:
    """w [B, D] -> ws [B, num_ws, D]."""
    return jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, w.shape[-1]))

  def synthesize(self, g_params: PyTree, ws: jax.Array, key: jax.Array,
                 noise_mode: str = "random") -> jax.Array:
    """Images of ws [B, num_ws, w_dim]; `key` draws the noise inputs."""
    return self.generator.apply({"params": g_params}, ws, noise_mode, rngs={"noise": key},
                                method=nets.StyleGAN2Generator.synthesize)

  def mixed_ws(self, g_params: PyTree, z: jax.Array, labels: jax.Array | None,
               key: jax.Array) -> jax.Array:
    """ws of z with style mixing regularization (module docstring)."""
    ws = self.broadcast(self.map(g_params, z, labels))
    if not self.style_mixing or self.num_ws < 2:
      return ws
    k_cut, k_p, k_z = jax.random.split(key, 3)
    cutoff = jax.random.randint(k_cut, (), 1, self.num_ws)
    cutoff = jnp.where(jax.random.uniform(k_p, ()) < self.style_mixing, cutoff, self.num_ws)
    other = self.map(g_params, jax.random.normal(k_z, z.shape), labels)
    layer = jnp.arange(self.num_ws)[None, :, None]
    return jnp.where(layer < cutoff, ws, other[:, None])

  def _train_apply(self, key: jax.Array) -> updates.ApplyFn:
    """The generator of training: z -> mixed ws -> images with random noise (key-bound)."""
    k_mix, k_noise = jax.random.split(key)

    def apply(params, model_state, z, conditions=None, *, train):
      del train
      labels = None if conditions is None else conditions.get("label")
      return self.synthesize(params, self.mixed_ws(params, z, labels, k_mix), k_noise
                             ), model_state

    return apply

  def _path_length(self, key: jax.Array) -> updates.Regularizer:
    k_mix, k_noise = jax.random.split(key)

    def mapping(params, model_state, z, conditions):
      del model_state
      return self.mixed_ws(params, z, None if conditions is None else conditions["label"],
                           k_mix)

    def synthesis(params, model_state, ws, conditions=None, *, train):
      del conditions, train
      return self.synthesize(params, ws, k_noise), model_state

    return updates.path_length(synthesis, weight=self.pl_weight, decay=self.pl_decay,
                               every=self.pl_every, mapping=mapping,
                               batch_shrink=self.pl_batch_shrink)

  def render(self, g_params: PyTree, w_avg: jax.Array, z: jax.Array,
             labels: jax.Array | None, key: jax.Array, *, psi: float | None = None,
             noise_mode: str = "random") -> jax.Array:
    """Images of z at truncation psi (default `truncation`), no style mixing."""
    psi = self.truncation if psi is None else psi
    w = truncate(self.map(g_params, z, labels), w_avg, psi)
    return self.synthesize(g_params, self.broadcast(w), key, noise_mode)

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    state = super().init(rng, batch)
    model_state = {**state.model_state,
                   "w_avg": jnp.zeros((self.generator.w_dim,), jnp.float32),
                   "path_length": {"mean": jnp.zeros((), jnp.float32)}}
    return state.replace(model_state=model_state)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    key = lambda i: jax.random.fold_in(rng, i)  # noqa: E731
    reals = batch["image"]
    b = reals.shape[0]
    labels = batch["label"] if self.num_classes else None
    cond = None if labels is None else {"label": labels}
    g_params = state.model_params["generator"]

    z = jax.random.normal(key(0), (b, self.z_dim))
    fake, _ = self._train_apply(key(1))(g_params, {}, z, cond, train=True)
    d_apply = self._seen_by_d(state, key(2))
    state, d_metrics = updates.discriminator_update(
        state, d_apply, reals, fake, rng=key(3), step=state.step, conditions=cond,
        loss=self.loss, regularizers=self.regularizers(d_apply))

    z = jax.random.normal(key(4), (b, self.z_dim))
    regs = (self._path_length(key(5)),) if self.pl_weight else ()
    state, g_metrics = updates.generator_update(
        state, self._train_apply(key(6)), self._seen_by_d(state, key(7)), z, rng=key(8),
        step=state.step, conditions=cond, loss=self.loss, regularizers=regs)

    w_mean = jnp.mean(self.map(g_params, z, labels), axis=0)
    w_avg = w_mean + self.w_avg_beta * (state.model_state["w_avg"] - w_mean)
    state = state.replace(model_state={**state.model_state, "w_avg": w_avg})
    metrics = {**d_metrics, **g_metrics, "loss": d_metrics["d_loss"],
               "pl_mean": state.model_state["path_length"]["mean"]}
    if self.ada:
      state, ada_metrics = self._update_ada(state, d_metrics["real_sign"], b)
      metrics.update(ada_metrics)
    return state, metrics

  def sample_with_labels(self, state: TrainState, rng: jax.Array, labels: jax.Array | None,
                         n: int) -> jax.Array:
    """`n` images of the EMA generator at psi = `truncation`, random noise inputs, clipped
    to [-1, 1] (the synthesis output is linear)."""
    k_z, k_noise = jax.random.split(rng)
    z = jax.random.normal(k_z, (n, self.z_dim))
    return jnp.clip(self.render(state.ema_params["generator"], state.model_state["w_avg"], z,
                                labels, k_noise), -1.0, 1.0)

  @property
  def sample_tag(self) -> str:
    psi = "" if self.truncation == 1.0 else f"_psi{self.truncation:g}"
    return f"{self.name}_ema{psi}"

  def with_truncation(self, psi: float) -> "StyleGAN2":
    """The same method sampling at truncation psi."""
    return dataclasses.replace(self, truncation=float(psi))

  # ------------------------------------------------------------------ figures and PPL

  def path_length_fns(self, state: TrainState) -> dict[str, Any]:
    """PPL in W (`jgen.metrics.ppl.path_length_distances` arguments): lerp between the
    (truncated) ws of z0 and z1, rendered by the EMA synthesis with const noise; conditional
    pairs share the label (i mod num_classes)."""
    params, w_avg = state.ema_params["generator"], state.model_state["w_avg"]

    def mapping_fn(z):
      w = truncate(self.map(params, z, self.sample_labels(z.shape[0])), w_avg,
                   self.truncation)
      return self.broadcast(w)

    return {"space": "w", "mapping_fn": mapping_fn, "latent_shape": (self.z_dim,),
            "generator_fn": lambda ws: self.synthesize(params, ws, jax.random.key(0), "const")}

  def sample_figures(self, state: TrainState, rng: jax.Array) -> dict[str, tuple[jax.Array,
                                                                                 int]]:
    """The style-mixing figure (the paper's figure 3): the top row renders 5 sources A, the
    left column sources B in groups of two rows per style group (coarse, middle, fine: see
    `style_groups`); every other cell renders A's ws with that group's ws taken from B.
    Truncation and const noise as in `path_length_fns`. Returns {"style_mixing": (images in
    [-1, 1] row-major with a blank corner, 6 columns)}."""
    num_a, rows = 5, 2
    groups = style_groups(self.num_ws // 2)
    params, w_avg = state.ema_params["generator"], state.model_state["w_avg"]
    k_a, k_b = jax.random.split(rng)
    n_b = rows * len(groups)
    za, zb = jax.random.normal(k_a, (num_a, self.z_dim)), jax.random.normal(k_b, (n_b,
                                                                                  self.z_dim))
    wa = truncate(self.map(params, za, self.sample_labels(num_a)), w_avg, self.truncation)
    wb = truncate(self.map(params, zb, self.sample_labels(n_b)), w_avg, self.truncation)
    layer = jnp.arange(self.num_ws)
    ws = [self.broadcast(wa), self.broadcast(wb)]
    for g, (_, lo, hi) in enumerate(groups):
      take_b = ((layer >= lo) & (layer < hi))[None, None, :, None]     # [1, 1, L, 1]
      b = wb[g * rows:(g + 1) * rows][:, None, None, :]                  # [rows, 1, 1, D]
      a = wa[None, :, None, :]                                           # [1, A, 1, D]
      ws.append(jnp.where(take_b, b, a).reshape(rows * num_a, self.num_ws, -1))
    images = self.synthesize(params, jnp.concatenate(ws), jax.random.key(0), "const")
    img_a, img_b, mixes = images[:num_a], images[num_a:num_a + n_b], images[num_a + n_b:]
    mixes = mixes.reshape(n_b, num_a, *images.shape[1:])
    corner = jnp.ones_like(images[:1])
    top = jnp.concatenate([corner, img_a])
    body = jnp.concatenate([img_b[:, None], mixes], axis=1).reshape(-1, *images.shape[1:])
    return {"style_mixing": (jnp.clip(jnp.concatenate([top, body]), -1.0, 1.0), num_a + 1)}


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalStyleGAN2(StyleGAN2, ConditionalGAN):
  """A class-conditional StyleGAN2 (`num_classes` > 0): the loop's `Conditional` method."""


def make_method(config: Any) -> StyleGAN2:
  """Translates `model` (features, d_features, z_dim, w_dim, mapping_layers, d_architecture,
  mbstd_group, conv, dtype; optional, with today's behaviour when absent: resample ("fir" |
  "exact"), conv_clamp (0: none), noise_buffers, d_flatten ("nhwc" | "nchw"),
  mapping_lr_mul (0.01): `jgen.nn.stylegan2`'s reference options), `gan` (loss, r1_gamma,
  r1_every, style_mixing, pl_*, w_avg_beta, num_classes, ADA), `optim` / `optim_d`, `train`
  and `sample.truncation` into a StyleGAN2; inconsistencies are errors here, before anything
  compiles."""
  m, g, d = config.model, config.gan, config.data
  dtype = compute_dtype(m.dtype)
  features = tuple(int(f) for f in m.features)
  d_features = tuple(int(f) for f in (m.d_features or features))
  num_classes = int(g.num_classes)
  group = int(m.mbstd_group)
  if group and d.batch_size > group and d.batch_size % group:
    raise ValueError(f"data.batch_size ({d.batch_size}) must be a multiple of "
                     f"model.mbstd_group ({group})")
  resample = str(m.get("resample", "fir"))
  clamp = float(m.get("conv_clamp", 0.0) or 0.0) or None
  generator = nets.StyleGAN2Generator(
      image_size=d.image_size, features=features, channels=d.channels, z_dim=m.z_dim,
      w_dim=m.w_dim, mapping_layers=m.mapping_layers, num_classes=num_classes, conv=m.conv,
      dtype=dtype, mapping_lr_mul=float(m.get("mapping_lr_mul", 0.01)), resample=resample,
      conv_clamp=clamp, noise_buffers=bool(m.get("noise_buffers", False)))
  discriminator = nets.StyleGAN2Discriminator(
      features=d_features, architecture=m.d_architecture, mbstd_group=group,
      num_classes=num_classes, mapping_layers=m.d_mapping_layers,
      conv=m.conv, dtype=dtype, resample=resample, conv_clamp=clamp,
      flatten=str(m.get("d_flatten", "nhwc")))
  nets._check(features, d.image_size)  # pylint: disable=protected-access
  nets._check(d_features, d.image_size)  # pylint: disable=protected-access
  total = config.train.num_steps
  cls = ConditionalStyleGAN2 if num_classes else StyleGAN2
  return cls(generator=generator, discriminator=discriminator,
             tx_g=make_optimizer(config.optim, total_steps=total),
             tx_d=make_optimizer(discriminator_optim(config), total_steps=total),
             loss=g.loss, z_dim=m.z_dim, num_classes=num_classes, n_critic=g.n_critic,
             r1_gamma=g.r1_gamma, r1_every=g.r1_every, ema_decay=config.train.ema_decay,
             ema_warmup=config.train.ema_warmup, style_mixing=g.style_mixing,
             pl_weight=g.pl_weight, pl_every=g.pl_every, pl_decay=g.pl_decay,
             pl_batch_shrink=g.pl_batch_shrink, w_avg_beta=g.w_avg_beta,
             truncation=float(config.sample.truncation), **ada_fields(g))
