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
import numpy as np
import optax

from jgen.nn.classifier import NoisyClassifier
from jgen.nn.dtypes import compute_dtype
from jgen.ops.schedules import Schedule, q_sample, schedule_from_config
from jgen.train import init_from, run_record
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


@dataclasses.dataclass(frozen=True, eq=False)
class GuidingClassifier:
  """A trained noise-aware classifier, loaded from its run to guide a diffusion sampler.

  Attributes:
    model: the classifier network (`model.apply(params, x_t, t, train=False) -> logits`).
    params: its EMA parameters as host arrays (the guided sampler takes them as an argument,
      `state.frozen["classifier"]`, never as compile-time constants).
    schedule: the noise process it was trained on.
    image_shape: (H, W, C) it was trained on.
    workdir: the classifier run's work directory.
    step: the checkpoint step loaded.
  """

  model: NoisyClassifier
  params: Any
  schedule: Schedule
  image_shape: tuple[int, int, int]
  workdir: str
  step: int

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def logits_fn(self, params) -> LogitsFn:
    """The classifier as `logits_fn(x_t, t)` (dropout off), for `classifier_grad_fn`."""
    return lambda x, t: self.model.apply(params, x, t, train=False)

  def check_guides(self, schedule: Schedule, image_shape: tuple[int, int, int]) -> None:
    """Raises ValueError unless the classifier was trained on `schedule` and `image_shape`.

    Guidance adds grad_x log p(y | x_t, t) at the sampler's t; a classifier trained on another
    noise process sees inputs of another noise level at the same t.
    """
    problems = []
    if tuple(image_shape) != tuple(self.image_shape):
      problems.append(f"image shape {tuple(image_shape)} vs the classifier's "
                      f"{tuple(self.image_shape)}")
    if schedule.num_timesteps != self.schedule.num_timesteps:
      problems.append(f"num_timesteps {schedule.num_timesteps} vs the classifier's "
                      f"{self.schedule.num_timesteps}")
    elif not np.allclose(np.asarray(schedule.betas), np.asarray(self.schedule.betas),
                         rtol=1e-5, atol=1e-8):
      problems.append("the betas differ (diffusion.schedule / beta_start / beta_end)")
    if problems:
      raise ValueError(
          f"the classifier in {self.workdir} (step {self.step}) cannot guide this model: "
          + "; ".join(problems) + ". Train the classifier with this model's data and "
          "diffusion settings (experiments/ddpm/noisy_classifier_digits.py shows how).")


def load_guiding_classifier(workdir: str, step: int | None = None) -> GuidingClassifier:
  """The EMA classifier of a `diffusion.noisy_classifier` run, built from its run record.

  Reads the classifier run's recorded config (`jgen.train.run_record`) for the network and the
  noise process, and its checkpoint (latest, or `step`) through `jgen.train.init_from`; shapes
  are checked against the network before anything compiles.

  Raises:
    ValueError: `workdir` is not a noisy-classifier run, or its checkpoint does not fit.
  """
  config = run_record.latest_config(workdir)
  if config.get("method") != "diffusion.noisy_classifier":
    raise ValueError(f"{workdir} is a {config.get('method')!r} run; classifier guidance needs "
                     "a 'diffusion.noisy_classifier' run "
                     "(experiments/ddpm/noisy_classifier_digits.py)")
  model = make_classifier(config.model)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  spec = init_from.InitFrom(workdir=workdir, step=step, source="ema",
                            into="frozen/classifier", name="sample.classifier")
  params, loaded_step = init_from.load(spec)
  abstract = jax.eval_shape(lambda rng: model.init(rng, jnp.zeros((1, *image_shape)),
                                                   jnp.zeros((1,), jnp.int32), train=False),
                            jax.random.key(0))
  init_from.raise_problems(
      init_from.fit_problems(abstract, params, where="sample.classifier", what="ema",
                             require_all=True),
      what=f"the classifier checkpoint {workdir} step {loaded_step}")
  return GuidingClassifier(model=model, params=params,
                           schedule=schedule_from_config(config.diffusion),
                           image_shape=image_shape, workdir=workdir, step=loaded_step)


def make_method(config: Any) -> NoisyClassifierMethod:
  """Translates an experiment config into a `NoisyClassifierMethod`."""
  return NoisyClassifierMethod(
      model=make_classifier(config.model),
      schedule=schedule_from_config(config.diffusion),
      tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
      image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
      ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
      low_noise_fraction=config.classifier.low_noise_fraction)
