"""The noise-aware classifier of classifier guidance as a method of the one train loop.

`config.method = "diffusion.noisy_classifier"`. Trains `jgen.nn.classifier.NoisyClassifier`
with cross entropy on ``x_t = q_sample(schedule, x0, t, noise)``, t uniform over the schedule's
T steps (Dhariwal & Nichol 2021, Sec. 4), on batches with ``image`` and ``label``. Its EMA
parameters then guide an unconditional DDPM trained on the same schedule
(`jgen.diffusion.classifier_guidance`).

A classifier generates nothing. `sample` returns mid-gray images (all zeros in [-1, 1]) so that
the loop's end-of-training grid and ``--mode=sample`` run and plainly show that there is nothing
to look at; the classifier's quality is in `evaluate` (held-out loss and accuracy over all
noise levels and at low noise, t < T/4).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax

from jgen.diffusion.schedules import Schedule, get_schedule, q_sample
from jgen.nn.classifier import NoisyClassifier
from jgen.nn.dtypes import compute_dtype
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def noisy_classifier_loss(
    logits_fn: LogitsFn,
    schedule: Schedule,
    x0: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    *,
    t_max: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross entropy of p(y | x_t, t) with t uniform in {0, ..., t_max - 1}.

  `rng` is split as `t_rng, noise_rng = jax.random.split(rng)` (as `ddpm_loss`).

  Args:
    logits_fn: Classifier, (x_t [B, ...], t [B] int32) -> logits [B, num_classes].
    schedule: The diffusion schedule.
    x0: Clean images [B, ...].
    labels: Integer classes [B].
    rng: PRNG key.
    t_max: Static upper end (exclusive) of the timesteps; None: T.

  Returns:
    (loss, metrics): the mean cross entropy, and {'loss', 'accuracy'}.
  """
  chex.assert_rank(labels, 1)
  chex.assert_axis_dimension(x0, 0, labels.shape[0])
  t_max = schedule.num_timesteps if t_max is None else int(t_max)
  if not 1 <= t_max <= schedule.num_timesteps:
    raise ValueError(f"t_max must lie in [1, {schedule.num_timesteps}], got {t_max}")
  batch = x0.shape[0]
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (batch,), 0, t_max, dtype=jnp.int32)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  logits = logits_fn(q_sample(schedule, x0, t, noise), t)
  chex.assert_shape(logits, (batch, None))
  labels = labels.astype(jnp.int32)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
  return loss, {"loss": loss, "accuracy": accuracy}


def _labels(batch: dict[str, jax.Array]) -> jax.Array:
  if "label" not in batch:
    raise KeyError(f"the noisy classifier trains on labelled batches; got fields "
                   f"{sorted(batch)}. Use a data source with labels (digits, idx, tfds).")
  return batch["label"]


@dataclasses.dataclass(frozen=True, eq=False)
class NoisyClassifierMethod:
  """Trains p(y | x_t, t) on q_sample'd images (see the module docstring).

  Attributes:
    model: the classifier, `model.apply(params, x_t, t, train=...) -> logits`.
    schedule: the forward noise process (the one of the diffusion model to guide).
    tx: optimizer.
    image_shape: (H, W, C) of the data.
    ema_decay: EMA decay of the evaluated (and guiding) parameters.
    ema_warmup: ramp the EMA decay up as (1+step)/(10+step).
    low_noise_fraction: `evaluate` also reports the metrics at t < this fraction of T.
  """

  model: NoisyClassifier
  schedule: Schedule
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  low_noise_fraction: float = 0.25

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    params = self.model.init(params_rng, x, jnp.zeros((1,), jnp.int32), train=False)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  def logits_fn(self, params, *, train: bool = False,
                dropout_rng: jax.Array | None = None) -> LogitsFn:
    """The network as `logits_fn(x_t, t)`, what the loss and the guidance take."""
    rngs = {"dropout": dropout_rng} if train else None
    return lambda x, t: self.model.apply(params, x, t, train=train, rngs=rngs)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss_fn(params, batch, rng) -> (loss, metrics)` with dropout on."""
    noise_rng, dropout_rng = jax.random.split(rng)
    logits_fn = self.logits_fn(params, train=True, dropout_rng=dropout_rng)
    return noisy_classifier_loss(logits_fn, self.schedule, batch["image"], _labels(batch),
                                 noise_rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  @property
  def low_noise_t_max(self) -> int:
    """The exclusive upper timestep of the low-noise metrics (at least 1)."""
    return max(1, int(self.schedule.num_timesteps * self.low_noise_fraction))

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Held-out metrics of the EMA parameters (dropout off).

    Returns:
      {'loss', 'accuracy'} at t uniform over all T steps, and
      {'loss_low_noise', 'accuracy_low_noise'} at t uniform below `low_noise_t_max`.
    """
    logits_fn = self.logits_fn(state.ema_params, train=False)
    all_rng, low_rng = jax.random.split(rng)
    labels = _labels(batch)
    _, metrics = noisy_classifier_loss(logits_fn, self.schedule, batch["image"], labels,
                                       all_rng)
    _, low = noisy_classifier_loss(logits_fn, self.schedule, batch["image"], labels, low_rng,
                                   t_max=self.low_noise_t_max)
    return {**metrics, **{f"{k}_low_noise": v for k, v in low.items()}}

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Mid-gray images [n, H, W, C] (zeros): a classifier has no samples (module docstring)."""
    del state, rng
    return jnp.zeros((n, *self.image_shape), jnp.float32)

  @property
  def sample_tag(self) -> str:
    """Names the (empty) samples in output file names."""
    return "classifier_no_samples"


def make_classifier(model_config: Any) -> NoisyClassifier:
  """The classifier of a `config.model` block."""
  return NoisyClassifier(ch=model_config.ch, ch_mult=tuple(model_config.ch_mult),
                         num_res_blocks=model_config.num_res_blocks,
                         attn_resolutions=tuple(model_config.attn_resolutions),
                         num_classes=model_config.num_classes, dropout=model_config.dropout,
                         num_groups=model_config.num_groups,
                         dtype=compute_dtype(model_config.dtype))


def make_schedule_from_config(diffusion_config: Any) -> Schedule:
  """The schedule of a `config.diffusion` block (as `diffusion.ddpm` builds it)."""
  d = diffusion_config
  return get_schedule(d.schedule, d.num_timesteps,
                      **({"beta_start": d.beta_start, "beta_end": d.beta_end}
                         if d.schedule == "linear" else {}))


def make_method(config: Any) -> NoisyClassifierMethod:
  """Translates an experiment config into a `NoisyClassifierMethod`."""
  return NoisyClassifierMethod(
      model=make_classifier(config.model),
      schedule=make_schedule_from_config(config.diffusion),
      tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
      image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
      ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
      low_noise_fraction=config.get("classifier", {}).get("low_noise_fraction", 0.25))
