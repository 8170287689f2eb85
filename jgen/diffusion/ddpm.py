"""DDPM (Ho et al. 2020) as a method of the one train loop, optionally class-conditional.

`config.method = "diffusion.ddpm"`. The config is translated into typed fields here, at the
boundary; the model, schedule, loss and samplers stay pure and usable without the loop.

* `config.diffusion.prediction`: the network predicts 'eps' (the paper's), 'x0' or 'v'
  (`jgen.diffusion.parameterization`); it is trained on that target and converted to eps for
  every sampler with `to_eps_fn`.
* `config.sample.sampler`: 'ddpm' (ancestral, all T steps), 'ddim', 'dpmpp_2m', 'euler' or
  'heun' (`jgen.diffusion.samplers` / `solvers`).
* `config.model.num_classes > 0` makes a `ConditionalDDPM`: the U-Net takes ``label`` (the
  batch field), trained with classifier-free guidance dropout (labels replaced by the null class
  with probability `config.diffusion.cond_drop_prob`) and sampled with guidance scale
  `config.sample.guidance_scale` (`jgen.diffusion.guidance`: 1 = conditional, 0 =
  unconditional). Only it is the loop's `Conditional` method.
* `config.sample.classifier.workdir` (and optional `.step`) names a trained
  `diffusion.noisy_classifier` run; its EMA classifier guides the sampler with scale
  `config.sample.classifier_scale` (Dhariwal & Nichol 2021, `jgen.diffusion.classifier_guidance`:
  on the mean for 'ddpm', on eps for every other sampler). Unconditional and conditional
  models alike then become a `ConditionalDDPM` (samples for asked labels); the classifier is
  read when the method is made and reaches the jitted sampler as `state.frozen["classifier"]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.diffusion.classifier_guidance import (classifier_grad_fn,
                                                classifier_guided_ddpm_sample,
                                                classifier_guided_eps_fn)
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import PREDICTIONS, to_eps_fn
from jgen.diffusion.noisy_classifier import GuidingClassifier, load_guiding_classifier
from jgen.diffusion.sampler_table import check_sampler, run_sampler, sampler_tag
from jgen.diffusion.solvers import DPM_SPACINGS
from jgen.nn.conditioning import conditions_from_batch, drop_conditions, null_conditions
from jgen.nn.dtypes import compute_dtype
from jgen.nn.unet import UNet
from jgen.ops.processes import Process
from jgen.ops.schedules import Schedule, schedule_from_config
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

DROPOUT_PRNGS = ("threefry", "unsafe_rbg")

Conditions = dict[str, jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class Objective:
  """How a denoising network is trained and called on a process: the one thing DDPM, flow
  matching and EDM differ in (the U-Net, conditions, guidance, EMA and samplers are shared).

  A subclass gives `check`, `network_fn` (the network's output as a prediction at process
  time t), `loss` and `sampling_prediction`.
  """

  def check(self, process: Process, prediction: str) -> None:
    """Raises ValueError if the objective cannot train `prediction` on `process`."""
    raise TypeError(f"{type(self).__name__} does not define check")

  def network_fn(self, apply: ModelFn, process: Process, prediction: str) -> ModelFn:
    """`fn(x_t, t)` at process time t from `apply(x, t_net)`, the raw network."""
    raise TypeError(f"{type(self).__name__} does not define network_fn")

  def loss(self, model_fn: ModelFn, process: Process, x0: jax.Array, rng: jax.Array, *,
           prediction: str, loss_type: str) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of `model_fn` (from `network_fn`) on clean data x0."""
    raise TypeError(f"{type(self).__name__} does not define loss")

  def sampling_prediction(self, prediction: str) -> str:
    """What the samplers get from a network of kind `prediction`."""
    raise TypeError(f"{type(self).__name__} does not define sampling_prediction")


@dataclasses.dataclass(frozen=True)
class ChainObjective(Objective):
  """DDPM's (Ho et al. 2020): integer t uniform over the chain, the network called at t itself,
  `ddpm_loss` on its 'eps', 'x0' or 'v' target; the samplers take eps."""

  def check(self, process, prediction):
    if not isinstance(process, Schedule):
      raise ValueError(f"DDPM's objective trains on its discrete chain (a Schedule), not "
                       f"{type(process).__name__}")
    if prediction not in PREDICTIONS:
      raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")

  def network_fn(self, apply, process, prediction):
    return apply

  def loss(self, model_fn, process, x0, rng, *, prediction, loss_type):
    return ddpm_loss(model_fn, process, x0, rng, prediction=prediction, loss_type=loss_type)

  def sampling_prediction(self, prediction):
    return "eps"


@dataclasses.dataclass(frozen=True, eq=False)
class DDPM:
  """A diffusion model trained with the simple loss; unconditional (see `ConditionalDDPM`).

  Attributes:
    model: the network, `model.apply(params, x_t, t, conditions, train=...) -> prediction`.
    schedule: the noising process: DDPM's discrete chain (a `Schedule`), or the continuous
      process of a subclass (`jgen.diffusion.flow_matching`, `jgen.diffusion.edm`).
    tx: optimizer.
    image_shape: (H, W, C) of the data.
    ema_decay: EMA decay of the sampling parameters.
    ema_warmup: ramp the EMA decay up as (1+step)/(10+step).
    loss_type: 'mse' (the paper's) or 'l1'.
    prediction: what the network predicts: 'eps', 'x0' or 'v'.
    sampler: a name of `jgen.diffusion.sampler_table.SAMPLERS`: 'ddpm' (ancestral, all T
      steps), 'ddim', 'dpmpp_2m', 'euler', 'heun', 'edm', 'ode_euler', 'ode_heun',
      'ode_midpoint' or 'sde_euler'.
    sample_steps: steps (model evaluations for dpmpp_2m / euler) of every sampler but 'ddpm'.
    eta: DDIM eta (0: deterministic).
    spacing: DDIM step spacing, 'uniform', 'quadratic' or 'trailing'.
    dpm_spacing: DPM-Solver++ step spacing, 'linspace', 'leading' or 'trailing'.
    rho: Karras sigma-grid exponent of 'euler', 'heun' and 'edm'.
    shift: timestep shift of the 'ode_*' samplers (1: uniform in t).
    s_churn, s_tmin, s_tmax, s_noise: the 'edm' sampler's stochasticity (Karras et al. 2022,
      Algorithm 2; s_churn = 0 is deterministic).
    clip_denoised: clip the predicted x0 to [-1, 1] while sampling.
    guidance_scale: classifier-free guidance scale w (conditional models only; 1 = none).
    cond_drop_prob: probability of training with the null condition (conditional only).
    objective: how the network is trained and called on `schedule` (`Objective`): DDPM's
      `ChainObjective` (the default), `flow_matching.FlowMatchingObjective` or
      `edm.EDMObjective`.
    dropout_prng: the bit generator of the dropout masks: 'threefry' (JAX's default; the same
      masks under any sharding) or 'unsafe_rbg' (XLA's RngBitGenerator, seeded from the
      threefry key: different masks, which may change with the sharding), cheaper on CPU
      (`benchmarks/unet_profile.py`; docs/guide/performance.md).
  """

  model: UNet
  schedule: Process
  tx: optax.GradientTransformation
  image_shape: tuple[int, int, int]
  ema_decay: float = 0.9999
  ema_warmup: bool = False
  loss_type: str = "mse"
  prediction: str = "eps"
  sampler: str = "ddim"
  sample_steps: int = 50
  eta: float = 0.0
  spacing: str = "uniform"
  dpm_spacing: str = "linspace"
  rho: float = 7.0
  shift: float = 1.0
  s_churn: float = 0.0
  s_tmin: float = 0.0
  s_tmax: float = float("inf")
  s_noise: float = 1.0
  clip_denoised: bool = True
  guidance_scale: float = 1.0
  cond_drop_prob: float = 0.1
  dropout_prng: str = "threefry"
  objective: Objective = dataclasses.field(default_factory=lambda: ChainObjective())

  def __post_init__(self):
    check_sampler(self.sampler, self.schedule)
    self.objective.check(self.schedule, self.prediction)
    if self.dropout_prng not in DROPOUT_PRNGS:
      raise ValueError(f"unknown dropout_prng {self.dropout_prng!r}; choose one of "
                       f"{DROPOUT_PRNGS}")
    if self.dpm_spacing not in DPM_SPACINGS:
      raise ValueError(f"unknown dpm_spacing {self.dpm_spacing!r}; choose one of "
                       f"{DPM_SPACINGS}")
    if not isinstance(self, ConditionalDDPM):
      if self.model.num_classes > 0:
        raise ValueError(f"the U-Net is class-conditional (num_classes="
                         f"{self.model.num_classes}); use ConditionalDDPM (make_method does "
                         "when model.num_classes > 0)")
      if self.guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={self.guidance_scale} needs a class-conditional "
                         "model; set model.num_classes > 0 (or sample.guidance_scale=1.0)")

  @property
  def num_classes(self) -> int:
    """Classes of the label condition (0: unconditional)."""
    return self.model.num_classes

  def batch_conditions(self, batch: dict[str, jax.Array]) -> Conditions | None:
    """The model's conditions of a batch (None when unconditional)."""
    keys = self.model.condition_keys
    return conditions_from_batch(batch, keys) if keys else None

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["image"][:1]
    conditions = ({"label": jnp.zeros((1,), jnp.int32)} if self.model.num_classes > 0
                  else None)
    params = self.model.init(params_rng, x, jnp.zeros((1,), jnp.int32), conditions,
                             train=False)
    return TrainState.create(params=params, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup)

  def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch shapes `init` reads (the loop restores a checkpoint without opening data)."""
    batch = {"image": jax.ShapeDtypeStruct((batch_size, *self.image_shape), jnp.float32)}
    if self.model.num_classes > 0:
      batch["label"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    return batch

  def model_fn(self, params, conditions: Conditions | None = None, *, train: bool = False,
               dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network's raw prediction (of kind `prediction`) as `fn(x_t, t)`."""
    if train and dropout_rng is not None and self.dropout_prng != "threefry":
      dropout_rng = jax.random.wrap_key_data(
          jax.random.bits(dropout_rng, (4,), jnp.uint32), impl=self.dropout_prng)
    rngs = {"dropout": dropout_rng} if train else None

    def apply(x, t):
      return self.model.apply(params, x, t, conditions, train=train, rngs=rngs)

    return self.objective.network_fn(apply, self.schedule, self.prediction)

  def eps_fn(self, params, conditions: Conditions | None = None, *, train: bool = False,
             dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network as the `eps_fn(x_t, t)` that the samplers take (converted from x0 / v)."""
    return to_eps_fn(self.model_fn(params, conditions, train=train, dropout_rng=dropout_rng),
                     self.schedule, self.prediction)

  @property
  def sampling_prediction(self) -> str:
    """What `sampling_fn` predicts: eps on DDPM's chain (every guidance of this family works
    on eps), the network's own prediction on a continuous process."""
    return self.objective.sampling_prediction(self.prediction)

  def sampling_fn(self, params, conditions: Conditions | None = None) -> ModelFn:
    """The model function the samplers take, predicting `sampling_prediction`."""
    if self.sampling_prediction == "eps":
      return self.eps_fn(params, conditions)
    return self.model_fn(params, conditions)

  def denoising_loss(self, model_fn: ModelFn, x0: jax.Array, rng: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of `model_fn` on clean data x0: the objective's loss."""
    return self.objective.loss(model_fn, self.schedule, x0, rng, prediction=self.prediction,
                               loss_type=self.loss_type)

  def train_conditions(self, batch: dict[str, jax.Array], rng: jax.Array) -> Conditions | None:
    """The conditions a training step feeds the model (with CFG dropout; None if unconditional)."""
    conditions = self.batch_conditions(batch)
    if conditions is None:
      return None
    return drop_conditions(conditions, rng, self.cond_drop_prob, num_classes=self.num_classes)

  def loss_fn(self, params, batch: dict[str, jax.Array], rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`loss_fn(params, batch, rng) -> (loss, metrics)` with dropout (and CFG dropout) on."""
    noise_rng, dropout_rng = jax.random.split(rng)
    conditions = self.train_conditions(batch, jax.random.fold_in(rng, 2))
    model_fn = self.model_fn(params, conditions, train=True, dropout_rng=dropout_rng)
    return self.denoising_loss(model_fn, batch["image"], noise_rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the EMA parameters (dropout off, true conditions) on a held-out batch."""
    model_fn = self.model_fn(state.ema_params, self.batch_conditions(batch), train=False)
    _, metrics = self.denoising_loss(model_fn, batch["image"], rng)
    return metrics

  def run_sampler(self, eps_fn: ModelFn, rng: jax.Array, n: int, *,
                  grad_fn: ModelFn | None = None, grad_scale: float = 0.0,
                  x_T: jax.Array | None = None) -> jax.Array:
    """`n` images in [-1, 1] from `eps_fn(x_t, t)` (a model function predicting
    `sampling_prediction`, e.g. `sampling_fn`) with the configured sampler.

    With `grad_fn` (grad_x log p(y | x_t, t) of a classifier) the sampler is classifier-guided
    with scale `grad_scale`: the ancestral mean shifted by s Sigma grad ('ddpm'), or eps by
    -sqrt(1 - abar_t) s grad (every other sampler). `x_T`: the starting noise (None: drawn
    from `rng`).
    """
    shape = (n, *self.image_shape)
    clip = self.clip_denoised
    if self.sampler == "ddpm" and grad_fn is not None:
      return classifier_guided_ddpm_sample(eps_fn, self.schedule, rng, shape, grad_fn,
                                           grad_scale, clip_denoised=clip, x_T=x_T)
    if grad_fn is not None:
      eps_fn = classifier_guided_eps_fn(eps_fn, grad_fn, self.schedule, grad_scale)
    return run_sampler(self.sampler, eps_fn, self.schedule, rng, shape,
                       prediction=self.sampling_prediction, clip_denoised=clip, x_T=x_T,
                       **self.sampler_options)

  @property
  def sampler_options(self) -> dict[str, Any]:
    """The options of `jgen.diffusion.sampler_table.run_sampler` (by their config names)."""
    return dict(steps=self.sample_steps, eta=self.eta, spacing=self.spacing,
                dpm_spacing=self.dpm_spacing, rho=self.rho, shift=self.shift,
                s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax,
                s_noise=self.s_noise)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] from the EMA parameters with the configured sampler."""
    return self.run_sampler(self.sampling_fn(state.ema_params), rng, n)

  @property
  def sample_tag(self) -> str:
    """Names the sampler settings in output file names."""
    return sampler_tag(self.sampler, num_timesteps=int(self.schedule.t_max) + 1,
                       **self.sampler_options)


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalDDPM(DDPM):
  """A `DDPM` that samples for asked labels: the loop's `Conditional` method.

  The labels steer the sampler through a class-conditional U-Net (`num_classes` > 0) with
  classifier-free guidance, through a guiding classifier (`classifier`), or both:

  * a conditional U-Net trains on the batch's ``label``, each example's label replaced by the
    null class (`num_classes`) with probability `cond_drop_prob`, and samples with guidance
    scale `guidance_scale` (`jgen.diffusion.guidance.cfg_eps_fn`);
  * a `classifier` (loaded from a `diffusion.noisy_classifier` run) adds
    `classifier_scale` * grad_x log p(y | x_t, t) (`DDPM.run_sampler`); training is unchanged.

  Attributes:
    classifier: the guiding classifier (None: classifier-free guidance only).
    classifier_scale: classifier guidance scale s (0: the classifier is not called).
  """

  classifier: GuidingClassifier | None = None
  classifier_scale: float = 0.0

  def __post_init__(self):
    if self.model.num_classes < 1 and self.classifier is None:
      raise ValueError("a ConditionalDDPM needs a class-conditional U-Net (model.num_classes "
                       "> 0) or a guiding classifier (sample.classifier.workdir)")
    if self.model.num_classes < 1 and self.guidance_scale != 1.0:
      raise ValueError(f"guidance_scale={self.guidance_scale} (classifier-free guidance) needs "
                       "a class-conditional U-Net; set model.num_classes > 0, or guide with "
                       "the classifier alone (sample.guidance_scale=1.0, "
                       "sample.classifier_scale=s)")
    super().__post_init__()
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ValueError(f"cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")
    if self.classifier is not None:
      self.classifier.check_guides(self.schedule, self.image_shape)
      if self.model.num_classes > 0 and self.model.num_classes != self.classifier.num_classes:
        raise ValueError(f"the U-Net has {self.model.num_classes} classes, the classifier in "
                         f"{self.classifier.workdir} {self.classifier.num_classes}: guide with "
                         "a classifier of the same classes")
    elif self.classifier_scale != 0.0:
      raise ValueError(f"classifier_scale={self.classifier_scale} needs a guiding classifier: "
                       "set sample.classifier.workdir to a diffusion.noisy_classifier run")

  @property
  def num_classes(self) -> int:
    """Classes of the label condition (the U-Net's, else the guiding classifier's)."""
    return self.model.num_classes or self.classifier.num_classes

  @property
  def sample_frozen(self) -> dict[str, Any]:
    """The guiding classifier's parameters, as `state.frozen["classifier"]` of the sampler."""
    return {} if self.classifier is None else {"classifier": self.classifier.params}

  def guided_sampling_fn(self, params, conditions: Conditions) -> ModelFn:
    """The sampling function (`sampling_fn`) for `conditions`: CFG at scale `guidance_scale`
    with a conditional U-Net, the plain model otherwise (classifier guidance is
    `run_sampler`'s). CFG is linear, so it is the same on eps, x0, v or a velocity."""
    if self.model.num_classes < 1:
      return self.sampling_fn(params)

    def eps_cond_fn(x, t, c):
      return self.sampling_fn(params, c)(x, t)
    null = null_conditions(conditions, num_classes=self.num_classes)
    return cfg_eps_fn(eps_cond_fn, conditions, null, self.guidance_scale)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for `conditions` (``{"label": int32 [n]}``, `jgen.nn.conditioning`).

    With a classifier, `state.frozen` must hold its parameters under ``"classifier"`` (the
    loop's `jit_sampler` puts `sample_frozen` there).
    """
    conditions = {k: jnp.asarray(v) for k, v in conditions.items()}
    for k, v in conditions.items():
      if v.shape[0] != n:
        raise ValueError(f"condition {k!r} has batch {v.shape[0]}, expected n={n}")
    eps_fn = self.guided_sampling_fn(state.ema_params, conditions)
    grad_fn = None
    if self.classifier is not None and self.classifier_scale != 0.0:
      if "classifier" not in state.frozen:
        raise ValueError("classifier guidance reads the classifier from state.frozen"
                         "['classifier']: sample through jgen.train.sampling.jit_sampler, or pass "
                         "state.replace(frozen={**state.frozen, **method.sample_frozen})")
      logits_fn = self.classifier.logits_fn(state.frozen["classifier"])
      grad_fn = classifier_grad_fn(logits_fn, conditions["label"])
    return self.run_sampler(eps_fn, rng, n, grad_fn=grad_fn,
                            grad_scale=self.classifier_scale)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images, every class in turn (labels 0, 1, ..., K-1, 0, ...)."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    tag = super().sample_tag
    if self.model.num_classes > 0:
      tag += f"_w{self.guidance_scale:g}"
    if self.classifier is not None:
      tag += f"_clf{self.classifier_scale:g}"
    return tag


def make_unet(model_config: Any) -> UNet:
  """The U-Net of a `config.model` block (`num_classes` > 0 for label conditioning)."""
  return UNet(ch=model_config.ch, ch_mult=tuple(model_config.ch_mult),
              num_res_blocks=model_config.num_res_blocks,
              attn_resolutions=tuple(model_config.attn_resolutions),
              dropout=model_config.dropout, num_groups=model_config.num_groups,
              num_classes=int(model_config.num_classes),
              dtype=compute_dtype(model_config.dtype))


def denoiser_fields(config: Any, *, image_shape: tuple[int, int, int],
                    guidance_scale: float | None = None) -> dict[str, Any]:
  """The `DDPM` fields every objective of this family reads the same way: the U-Net
  (`config.model`), optimizer, EMA, loss type, prediction, CFG dropout, sampler, step count,
  clipping and guidance scale (`guidance_scale` replaces `sample.guidance_scale`; 1: a method
  that guides by its own condition)."""
  s = config.sample
  return dict(model=make_unet(config.model),
              tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
              image_shape=image_shape,
              ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
              loss_type=config.diffusion.loss_type, prediction=config.diffusion.prediction,
              sampler=s.sampler, sample_steps=s.steps, clip_denoised=s.clip_denoised,
              guidance_scale=s.guidance_scale if guidance_scale is None else guidance_scale,
              cond_drop_prob=config.diffusion.cond_drop_prob,
              dropout_prng=config.model.dropout_prng)


def denoiser_class(fields: dict[str, Any], guided_by_classifier: bool = False) -> type[DDPM]:
  """`ConditionalDDPM` when the U-Net of `fields` is class-conditional or a classifier guides,
  else `DDPM`."""
  return (ConditionalDDPM if fields["model"].num_classes > 0 or guided_by_classifier
          else DDPM)


def make_ddpm(config: Any, *, image_shape: tuple[int, int, int],
              guidance_scale: float | None = None) -> DDPM:
  """The `DDPM` that `config`'s `model`, `diffusion`, `optim`, `train` and `sample` blocks
  (experiments/ddpm/base.py defines every field) describe, on arrays of `image_shape` (images,
  or a first stage's latents); a `ConditionalDDPM` when the U-Net is class-conditional
  (`model.num_classes` > 0) or a classifier guides (`sample.classifier`). `guidance_scale`
  replaces `sample.guidance_scale` (1: a method that guides by its own condition)."""
  s = config.sample
  fields = denoiser_fields(config, image_shape=image_shape, guidance_scale=guidance_scale)
  kwargs = {}
  if s.classifier.workdir:
    kwargs = {"classifier": load_guiding_classifier(s.classifier.workdir, s.classifier.step),
              "classifier_scale": float(s.classifier_scale)}
  elif s.classifier_scale:
    raise ValueError(f"sample.classifier_scale={s.classifier_scale} needs a guiding classifier:"
                     " set sample.classifier.workdir to a diffusion.noisy_classifier run")
  cls = denoiser_class(fields, bool(kwargs))
  return cls(**fields, schedule=schedule_from_config(config.diffusion), eta=s.eta,
             spacing=s.spacing, dpm_spacing=s.dpm_spacing, rho=s.rho, **kwargs)


def make_method(config: Any) -> DDPM:
  """Translates an experiment config into a `DDPM` on its images (`make_ddpm`)."""
  size = config.data.image_size
  return make_ddpm(config, image_shape=(size, size, config.data.channels))
