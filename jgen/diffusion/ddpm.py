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
from jgen.diffusion.samplers import ddim_sample, ddpm_sample
from jgen.diffusion.solvers import DPM_SPACINGS, dpmpp_2m_sample, euler_sample, heun_sample
from jgen.nn.conditioning import conditions_from_batch, drop_conditions, null_conditions
from jgen.nn.dtypes import compute_dtype
from jgen.nn.unet import UNet
from jgen.ops.schedules import Schedule, schedule_from_config
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "heun")
DROPOUT_PRNGS = ("threefry", "unsafe_rbg")

Conditions = dict[str, jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class DDPM:
  """A diffusion model trained with the simple loss; unconditional (see `ConditionalDDPM`).

  Attributes:
    model: the network, `model.apply(params, x_t, t, conditions, train=...) -> prediction`.
    schedule: the forward noise process.
    tx: optimizer.
    image_shape: (H, W, C) of the data.
    ema_decay: EMA decay of the sampling parameters.
    ema_warmup: ramp the EMA decay up as (1+step)/(10+step).
    loss_type: 'mse' (the paper's) or 'l1'.
    prediction: what the network predicts: 'eps', 'x0' or 'v'.
    sampler: 'ddpm' (ancestral, all T steps), 'ddim', 'dpmpp_2m', 'euler' or 'heun'.
    sample_steps: steps (model evaluations for dpmpp_2m / euler) of every sampler but 'ddpm'.
    eta: DDIM eta (0: deterministic).
    spacing: DDIM step spacing, 'uniform', 'quadratic' or 'trailing'.
    dpm_spacing: DPM-Solver++ step spacing, 'linspace', 'leading' or 'trailing'.
    rho: Karras sigma-grid exponent of 'euler' and 'heun'.
    clip_denoised: clip the predicted x0 to [-1, 1] while sampling.
    guidance_scale: classifier-free guidance scale w (conditional models only; 1 = none).
    cond_drop_prob: probability of training with the null condition (conditional only).
    dropout_prng: the bit generator of the dropout masks: 'threefry' (JAX's default; the same
      masks under any sharding) or 'unsafe_rbg' (XLA's RngBitGenerator, seeded from the
      threefry key: different masks, which may change with the sharding), cheaper on CPU
      (`benchmarks/unet_profile.py`; docs/guide/performance.md).
  """

  model: UNet
  schedule: Schedule
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
  clip_denoised: bool = True
  guidance_scale: float = 1.0
  cond_drop_prob: float = 0.1
  dropout_prng: str = "threefry"

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")
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
    return lambda x, t: self.model.apply(params, x, t, conditions, train=train, rngs=rngs)

  def eps_fn(self, params, conditions: Conditions | None = None, *, train: bool = False,
             dropout_rng: jax.Array | None = None) -> ModelFn:
    """The network as the `eps_fn(x_t, t)` that the samplers take (converted from x0 / v)."""
    return to_eps_fn(self.model_fn(params, conditions, train=train, dropout_rng=dropout_rng),
                     self.schedule, self.prediction)

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
    return ddpm_loss(model_fn, self.schedule, batch["image"], noise_rng,
                          prediction=self.prediction, loss_type=self.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of the EMA parameters (dropout off, true conditions) on a held-out batch."""
    model_fn = self.model_fn(state.ema_params, self.batch_conditions(batch), train=False)
    _, metrics = ddpm_loss(model_fn, self.schedule, batch["image"], rng,
                                prediction=self.prediction, loss_type=self.loss_type)
    return metrics

  def run_sampler(self, eps_fn: ModelFn, rng: jax.Array, n: int, *,
                  grad_fn: ModelFn | None = None, grad_scale: float = 0.0) -> jax.Array:
    """`n` images in [-1, 1] from `eps_fn(x_t, t)` with the configured sampler.

    With `grad_fn` (grad_x log p(y | x_t, t) of a classifier) the sampler is classifier-guided
    with scale `grad_scale`: the ancestral mean shifted by s Sigma grad ('ddpm'), or eps by
    -sqrt(1 - abar_t) s grad (every other sampler).
    """
    shape = (n, *self.image_shape)
    clip = self.clip_denoised
    if self.sampler == "ddpm" and grad_fn is not None:
      return classifier_guided_ddpm_sample(eps_fn, self.schedule, rng, shape, grad_fn,
                                           grad_scale, clip_denoised=clip)
    if self.sampler == "ddpm":
      return ddpm_sample(eps_fn, self.schedule, rng, shape, clip_denoised=clip)
    if grad_fn is not None:
      eps_fn = classifier_guided_eps_fn(eps_fn, grad_fn, self.schedule, grad_scale)
    if self.sampler == "ddim":
      return ddim_sample(eps_fn, self.schedule, rng, shape, steps=self.sample_steps,
                         eta=self.eta, spacing=self.spacing, clip_denoised=clip)
    if self.sampler == "dpmpp_2m":
      return dpmpp_2m_sample(eps_fn, self.schedule, rng, shape, steps=self.sample_steps,
                             spacing=self.dpm_spacing, clip_denoised=clip)
    solver = euler_sample if self.sampler == "euler" else heun_sample
    return solver(eps_fn, self.schedule, rng, shape, steps=self.sample_steps, rho=self.rho,
                  clip_denoised=clip)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1] from the EMA parameters with the configured sampler."""
    return self.run_sampler(self.eps_fn(state.ema_params), rng, n)

  @property
  def sample_tag(self) -> str:
    """Names the sampler settings in output file names."""
    if self.sampler == "ddpm":
      return f"ddpm{self.schedule.num_timesteps}"
    if self.sampler == "ddim":
      return f"ddim{self.sample_steps}_eta{self.eta:g}_{self.spacing}"
    if self.sampler == "dpmpp_2m":
      return f"dpmpp2m{self.sample_steps}_{self.dpm_spacing}"
    return f"{self.sampler}{self.sample_steps}_rho{self.rho:g}"


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

  def guided_eps_fn(self, params, conditions: Conditions) -> ModelFn:
    """The denoiser `eps_fn(x_t, t)` for `conditions`: CFG at scale `guidance_scale` with a
    conditional U-Net, the plain model otherwise (classifier guidance is `run_sampler`'s)."""
    if self.model.num_classes < 1:
      return self.eps_fn(params)

    def eps_cond_fn(x, t, c):
      return self.eps_fn(params, c, train=False)(x, t)
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
    eps_fn = self.guided_eps_fn(state.ema_params, conditions)
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


def make_ddpm(config: Any, *, image_shape: tuple[int, int, int],
              guidance_scale: float | None = None) -> DDPM:
  """The `DDPM` that `config`'s `model`, `diffusion`, `optim`, `train` and `sample` blocks
  (experiments/ddpm/base.py defines every field) describe, on arrays of `image_shape` (images,
  or a first stage's latents); a `ConditionalDDPM` when the U-Net is class-conditional
  (`model.num_classes` > 0) or a classifier guides (`sample.classifier`). `guidance_scale`
  replaces `sample.guidance_scale` (1: a method that guides by its own condition)."""
  s = config.sample
  model = make_unet(config.model)
  kwargs = {}
  if s.classifier.workdir:
    kwargs = {"classifier": load_guiding_classifier(s.classifier.workdir, s.classifier.step),
              "classifier_scale": float(s.classifier_scale)}
  elif s.classifier_scale:
    raise ValueError(f"sample.classifier_scale={s.classifier_scale} needs a guiding classifier:"
                     " set sample.classifier.workdir to a diffusion.noisy_classifier run")
  cls = ConditionalDDPM if model.num_classes > 0 or kwargs else DDPM
  return cls(model=model, schedule=schedule_from_config(config.diffusion),
             tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
             image_shape=image_shape,
             ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup,
             loss_type=config.diffusion.loss_type, prediction=config.diffusion.prediction,
             sampler=s.sampler, sample_steps=s.steps, eta=s.eta, spacing=s.spacing,
             dpm_spacing=s.dpm_spacing, rho=s.rho, clip_denoised=s.clip_denoised,
             guidance_scale=s.guidance_scale if guidance_scale is None else guidance_scale,
             cond_drop_prob=config.diffusion.cond_drop_prob,
             dropout_prng=config.model.dropout_prng, **kwargs)


def make_method(config: Any) -> DDPM:
  """Translates an experiment config into a `DDPM` on its images (`make_ddpm`)."""
  size = config.data.image_size
  return make_ddpm(config, image_shape=(size, size, config.data.channels))
