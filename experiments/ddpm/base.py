"""The DDPM family's base: the noise process, the loss and the sampler defaults.

Every DDPM experiment (ddpm_digits, ddpm_cifar, ddpm_cond_digits, ddpm_cond_cifar) starts from
`get_config()` and sets its data, network, optimizer and schedule; no experiment file loads
another. Loaded by path:
`experiment_module("base", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, smoke_schedule


def get_config() -> ml_collections.ConfigDict:
  """DDPM with Ho et al.'s linear betas (T = 1000), the simple loss, Adam and 50-step DDIM.

  Unconditional eps-prediction by default; `model.num_classes > 0` makes it class-conditional
  with classifier-free guidance (`diffusion.cond_drop_prob`, `sample.guidance_scale`).
  """
  c = base_config()
  c.method = "diffusion.ddpm"

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"
  c.diffusion.num_timesteps = 1000
  c.diffusion.beta_start = 1e-4
  c.diffusion.beta_end = 0.02
  c.diffusion.loss_type = "mse"
  c.diffusion.prediction = "eps"   # what the network predicts: eps | x0 | v
  c.diffusion.cond_drop_prob = 0.1  # conditional models: P(label -> null class) in training (CFG)

  c.model.num_classes = 0          # > 0: class-conditional U-Net (label + null embedding)
  c.model.dropout_prng = "threefry"  # "unsafe_rbg": faster dropout masks (ddpm.DDPM docstring)

  c.optim.name = "adam"

  c.sample.sampler = "ddim"        # ddpm (ancestral, num_timesteps steps) | ddim | dpmpp_2m
                                   # | euler | heun
  c.sample.steps = 50              # every sampler but ddpm
  c.sample.eta = 0.0               # ddim
  c.sample.spacing = "uniform"     # ddim: uniform | quadratic | trailing (no step at t = 0)
  c.sample.dpm_spacing = "linspace"  # dpmpp_2m: linspace | leading | trailing
  c.sample.rho = 7.0               # euler, heun: Karras sigma-grid exponent
  c.sample.guidance_scale = 1.0    # conditional models: CFG w (1 = conditional, 0 = uncond.)
  # Classifier guidance (Dhariwal & Nichol): a diffusion.noisy_classifier run trained on this
  # model's data and noise process; its EMA classifier adds classifier_scale * grad log p(y|x_t).
  c.sample.classifier = ml_collections.ConfigDict()
  c.sample.classifier.workdir = ""  # "" off
  c.sample.classifier.step = ml_collections.FieldReference(None, field_type=int)  # None: latest
  c.sample.classifier_scale = 0.0   # s (0: unguided; the classifier is not called)
  c.sample.clip_denoised = True
  c.sample.num = 64
  c.sample.batch_size = 64
  return c


def digits(smoke: bool = False) -> ml_collections.ConfigDict:
  """The CPU recipe on the bundled digits (16x16; `smoke`: 8x8, seconds) that ddpm_digits is and
  ddpm_cond_digits builds on."""
  c = get_config()

  digits_data(c, smoke=smoke)

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = (8,)
  c.model.dropout = 0.0
  c.model.num_groups = 8

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 1000
  c.train.ema_decay = 0.995
  c.train.ema_warmup = True
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.sample_every = 500
  c.train.eval_every = 500
  c.train.eval_batches = 4

  if smoke:
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.attn_resolutions = (4,)
    c.model.num_groups = 4
    c.diffusion.num_timesteps = 20
    smoke_schedule(c, num_steps=6, checkpoint_every=3)
    c.sample.steps = 5
  return c


def cifar(*, bf16: bool = False, smoke: bool = False) -> ml_collections.ConfigDict:
  """DDPM on CIFAR-10, the paper's setup (Ho et al. 2020) that ddpm_cifar is and ddpm_cond_cifar
  builds on; `bf16`: bfloat16 compute, `smoke`: a seconds-long run."""
  c = get_config()

  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.batch_size = 128
  c.data.random_flip = True

  c.model.ch = 128
  c.model.ch_mult = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.1
  c.model.num_groups = 32

  c.optim.lr = 2e-4
  c.optim.warmup_steps = 5000
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 800_000
  c.train.ema_decay = 0.9999
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 50_000
  c.train.eval_every = 10_000

  if bf16:
    c.model.dtype = "bfloat16"
  if smoke:
    c.data.batch_size = 8
    c.model.ch = 32
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.num_groups = 8
    c.diffusion.num_timesteps = 100
    c.optim.warmup_steps = 10
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.sample_every = 0
    c.train.eval_every = 0
    c.sample.steps = 10
    c.sample.num = 16
    c.sample.batch_size = 16
  return c


def _continuous(c: ml_collections.ConfigDict, method: str, prediction: str
                ) -> ml_collections.ConfigDict:
  """A DDPM config on a continuous process: the same U-Net, optimizer, data and EMA; the
  discrete chain's keys (schedule, betas, T) and its samplers' options are dropped."""
  c.method = method
  c.diffusion = ml_collections.ConfigDict(dict(
      loss_type=c.diffusion.loss_type, prediction=prediction,
      cond_drop_prob=c.diffusion.cond_drop_prob))
  for key in ("eta", "spacing", "dpm_spacing", "rho", "classifier", "classifier_scale"):
    del c.sample[key]
  return c


def flow_matching(c: ml_collections.ConfigDict, *, time_distribution: str = "logit_normal"
                  ) -> ml_collections.ConfigDict:
  """Turns a DDPM config into flow matching on the linear path (`jgen.diffusion.flow_matching`):
  a velocity U-Net, t ~ `time_distribution` (SD3's logit-normal(0, 1) by default; 'uniform'
  is rectified flow's), Euler's method on the ODE with the same number of steps."""
  c = _continuous(c, "diffusion.flow_matching", "velocity")
  c.flow_matching = ml_collections.ConfigDict()
  c.flow_matching.process = "linear"  # a name of jgen.ops.processes.PROCESSES
  c.flow_matching.time_distribution = time_distribution  # uniform | logit_normal | mode
  c.flow_matching.loc = 0.0        # logit_normal: m
  c.flow_matching.scale = 1.0      # logit_normal: s; mode: s in [-1, 2 / (pi - 2)]
  c.flow_matching.time_input = 1000.0  # the U-Net sees 1000 t (DDPM's timestep range)
  c.flow_matching.latent = False   # True: on a frozen first stage's latents (the ldm block)
  c.flow_matching.reflow = ml_collections.ConfigDict()
  c.flow_matching.reflow.pairs = 0  # > 0: a reflow stage on init_from.workdir's couples
  c.flow_matching.reflow.seed = 0
  c.sample.sampler = "ode_euler"   # ode_euler | ode_heun | ode_midpoint
  c.sample.shift = 1.0             # SD3's timestep shift (> 1: more steps at high noise)
  c.sample.clip_denoised = False
  return c


def edm(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a DDPM config into EDM (`jgen.diffusion.edm`): the preconditioned denoiser on the
  same U-Net, log-normal sigmas with EDM's weighting, Algorithm 2 with Heun steps."""
  c = _continuous(c, "diffusion.edm", "x0")
  c.edm = ml_collections.ConfigDict()
  c.edm.sigma_min = 0.002
  c.edm.sigma_max = 80.0
  c.edm.sigma_data = 0.5
  c.edm.p_mean = -1.2
  c.edm.p_std = 1.2
  c.sample.sampler = "edm"         # edm (Algorithm 2) | heun | euler | ode_*
  c.sample.steps = 18              # EDM's CIFAR-10 setting (35 evaluations)
  c.sample.rho = 7.0
  c.sample.s_churn = 0.0           # 0: deterministic (Algorithm 1)
  c.sample.s_tmin = 0.0
  c.sample.s_tmax = float("inf")
  c.sample.s_noise = 1.0
  c.sample.clip_denoised = False
  return c
