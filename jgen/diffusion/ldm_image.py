"""Image-conditioned latent diffusion (Rombach et al. 2022, Sec. 4.4-4.5): inpainting and
super-resolution on the latents of a frozen first stage, ``config.method = "diffusion.ldm_image"``
with ``config.ldm.task = "inpaint" | "sr"``.

The first stage, its frozen arrays and the recorded scale factor are latent diffusion's
(`jgen.diffusion.ldm.LatentDiffusion`, composed here: ``z = s E(x)``, ``s = 1 / std`` of the
first batch's latents, measured once in `init` and kept in ``state.model_state``; decoding
``D(q(z / s))``). A `jgen.nn.unet.UNet` with ``cond_channels`` learns eps on ``z`` with the
condition ``c`` concatenated to its input (LDM's ``conditioning_key: concat``):

* **inpaint** (LDM's inpainting model): with the mask m (1 on unknown pixels) and the image x
  in [-1, 1], ``c = [s E((1 - m) x), A_f(m)]`` -- the first stage's encoding of the masked
  image (unknown pixels set to 0, as LDM's ``masked_image = (1 - mask) * image``), scaled like
  the latents, and the mask area-averaged over the f x f pixels of each latent cell (the
  fraction of unknown pixels; nearest sampling, LDM's ``interpolate``, would miss a mask
  narrower than f). ``z + 1`` condition channels. Masks come from the data source
  ``derived:mask:box:SPEC`` (or ``mask:center``) of `jgen.data.derived`.
* **sr** (LDM's super-resolution model): the low-resolution image as ``c = A_f(s_lr)``, the
  mean over the f x f pixels of each latent cell of the source of ``derived:downsample:K:SPEC``
  (the K x K block means, repeated K x K). For K = f (4x SR at f = 4, the paper's setting) this
  is the low-resolution image itself at its own resolution, which equals the latent
  resolution, concatenated unresampled as in LDM's ``bsr_sr`` model; for K > f it is the
  low-resolution image nearest-upsampled to the latents, for K < f its area average. ``C``
  condition channels.

Classifier-free guidance is optional: with ``diffusion.cond_drop_prob = p > 0`` the condition
is replaced by zeros (the null image condition of `jgen.nn.conditioning`) with probability p,
and ``sample.guidance_scale = w`` samples with ``eps_0 + w (eps_c - eps_0)``.

It is the loop's `Translates` method: ``--mode=sample`` / ``--mode=eval`` turn held-out images
(or ``sample.source``, a folder of one's own) into condition | sample | original grids. An
inpainting *source* is the masked image with its unknown pixels NaN (the mask travels in the
image, since `translate` receives the source only; grids and npz files show NaN as black); a
source without a NaN pixel, e.g. a user's image, is inpainted in the centre H/2 x W/2
rectangle (``mask:center``). With ``ldm.paste`` (default) the final image pastes the known
pixels back: ``x = m D(z) + (1 - m) x_known``; `inpaint` returns the decoded image without it
too, so its fidelity outside the mask can be compared with the first stage's reconstruction.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion import ldm
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import to_eps_fn
from jgen.nn.conditioning import drop_conditions, null_conditions
from jgen.train.state import TrainState

__all__ = ["TASKS", "ImageLatentDiffusion", "area_downsample", "make_method", "masked_source",
           "source_mask"]

log = logging.getLogger(__name__)

TASKS = ("inpaint", "sr")
_DATA = {"inpaint": "derived:mask:", "sr": "derived:downsample:"}
PyTree = Any


def area_downsample(x: jax.Array, size: int) -> jax.Array:
  """``[B, H, W, C] -> [B, size, size, C]``: the mean of each (H/size) x (W/size) block.

  Raises:
    ValueError: H or W is not a multiple of `size`.
  """
  b, h, w, c = x.shape
  if h % size or w % size:
    raise ValueError(f"cannot area-average {h}x{w} images onto a {size}x{size} latent grid: "
                     "the image size must be a multiple of the latent size")
  return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))


def masked_source(image: jax.Array, mask: jax.Array) -> jax.Array:
  """An inpainting source: `image` with the pixels where ``mask > 0`` set to NaN (unknown)."""
  return jnp.where(mask > 0, jnp.nan, image)


def source_mask(source: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(image, mask)` of an inpainting source: mask float32 [B, H, W, 1], 1 where any channel is
  NaN; an image with no NaN gets the centre H/2 x W/2 mask (`jgen.data.derived.center_mask`).
  The image has its unknown pixels set to 0."""
  _, h, w, _ = source.shape
  unknown = jnp.isnan(source).any(axis=-1, keepdims=True)
  top, left, mh, mw = (h - max(1, h // 2)) // 2, (w - max(1, w // 2)) // 2, max(1, h // 2), \
      max(1, w // 2)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  center = ((rows >= top) & (rows < top + mh) & (cols >= left) & (cols < left + mw))[..., None]
  has_mask = unknown.any(axis=(1, 2, 3), keepdims=True)
  mask = jnp.where(has_mask, unknown, center[None]).astype(jnp.float32)
  return jnp.where(mask > 0, 0.0, jnp.nan_to_num(source)), mask


@dataclasses.dataclass(frozen=True, eq=False)
class ImageLatentDiffusion:
  """Inpainting or super-resolution latent diffusion (module docstring); `Translates`.

  Attributes:
    latent: the latent diffusion of the first stage (`latents`, `decode_latents`, the scale
      factor); its ``ddpm`` is the diffusion on latents, a `DDPM` whose model is a `UNet` with
      ``cond_channels`` = the condition's channels.
    task: 'inpaint' or 'sr'.
    paste: inpainting: paste the known pixels into the final images.
    guidance_scale: classifier-free guidance scale w (1: the conditional model only).
    cond_drop_prob: probability p of training with the null (zero) condition.
  """

  latent: ldm.LatentDiffusion
  task: str
  paste: bool = True
  guidance_scale: float = 1.0
  cond_drop_prob: float = 0.0

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"ldm.task must be one of {TASKS}, got {self.task!r}")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ValueError(f"diffusion.cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")
    if self.guidance_scale != 1.0 and self.cond_drop_prob == 0.0:
      raise ValueError(f"sample.guidance_scale={self.guidance_scale} needs a model trained with "
                       "the null condition: set diffusion.cond_drop_prob > 0 (e.g. 0.1), or "
                       "sample.guidance_scale=1")
    want = self.condition_channels
    if self.ddpm.model.cond_channels != want:
      raise ValueError(f"the U-Net takes {self.ddpm.model.cond_channels} condition channels, "
                       f"the {self.task} condition has {want}")

  @property
  def ddpm(self) -> ddpm_lib.DDPM:
    return self.latent.ddpm

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return self.latent.latent_shape

  @property
  def condition_channels(self) -> int:
    """``z + 1`` (masked-image latents and the mask) or ``C`` (the low-resolution image)."""
    return self.latent_shape[2] + 1 if self.task == "inpaint" else self.latent.image_shape[2]

  @property
  def translation_names(self) -> tuple[str, ...]:
    return ("inpainted",) if self.task == "inpaint" else ("upsampled",)

  # ------------------------------------------------------------------ conditions

  def inpaint_condition(self, frozen: PyTree, model_state: PyTree, image: jax.Array,
                        mask: jax.Array) -> jax.Array:
    """``[s E((1 - m) x), A_f(m)]``, ``[B, r, r, z + 1]``."""
    masked = jnp.where(mask > 0, 0.0, image)
    z = self.latent.latents(frozen, model_state, masked)
    return jnp.concatenate([z, area_downsample(mask.astype(z.dtype), z.shape[1])], axis=-1)

  def sr_condition(self, low: jax.Array) -> jax.Array:
    """``A_f(s_lr)``, ``[B, r, r, C]`` (the low-resolution image at the latent resolution)."""
    return area_downsample(low, self.latent_shape[0])

  def _check_batch(self, batch: dict[str, jax.Array]) -> None:
    need = {"target", "mask"} if self.task == "inpaint" else {"source", "target"}
    if not need <= set(batch):
      raise ValueError(
          f"diffusion.ldm_image (task {self.task!r}) trains on derived pairs with fields "
          f"{sorted(need)}, the batch has {sorted(batch)}: set --config.data.source="
          f"{_DATA[self.task]}{'box' if self.task == 'inpaint' else '4'}:<images>")

  def batch_condition(self, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array]
                      ) -> jax.Array:
    """The condition of a training (or held-out) batch of derived pairs."""
    self._check_batch(batch)
    if self.task == "inpaint":
      return self.inpaint_condition(frozen, model_state, batch["target"], batch["mask"])
    return self.sr_condition(batch["source"])

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """A random U-Net; the scale factor of the first batch's target latents (or the fixed one)
    in ``model_state``; ``frozen["autoencoder"]`` the loaded first stage."""
    self._check_batch(batch)
    ae, z, scale = self.latent.first_stage_init(batch["target"])
    frozen, model_state = {ldm.FROZEN: ae}, {"scale_factor": scale}
    cond = self.batch_condition(frozen, model_state, {k: v[:1] for k, v in batch.items()})
    params_rng, state_rng = jax.random.split(rng)
    params = self.ddpm.model.init(params_rng, z[:1] * scale, jnp.zeros((1,), jnp.int32),
                                  {"image": cond}, train=False)
    state = TrainState.create(params=params, tx=self.ddpm.tx, rng=state_rng,
                              ema_decay=self.ddpm.ema_decay, ema_warmup=self.ddpm.ema_warmup)
    return state.replace(model_state=model_state, frozen=frozen)

  def _model_fn(self, params, cond: dict[str, jax.Array], *, train: bool,
                dropout_rng: jax.Array | None = None):
    rngs = {"dropout": dropout_rng} if train else None
    return lambda x, t: self.ddpm.model.apply(params, x, t, cond, train=train, rngs=rngs)

  def loss_fn(self, params, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the target latents given the (CFG-dropped) concatenated condition."""
    z = self.latent.latents(frozen, model_state, batch["target"])
    cond = {"image": jax.lax.stop_gradient(self.batch_condition(frozen, model_state, batch))}
    if self.cond_drop_prob > 0:
      cond = drop_conditions(cond, jax.random.fold_in(rng, 2), self.cond_drop_prob)
    noise_rng, dropout_rng = jax.random.split(rng)
    model_fn = self._model_fn(params, cond, train=True, dropout_rng=dropout_rng)
    return ddpm_loss(model_fn, self.ddpm.schedule, z, noise_rng, prediction=self.ddpm.prediction,
                     loss_type=self.ddpm.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return ldm.latent_train_step(self.loss_fn, state, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The DDPM loss of the EMA parameters on held-out pairs (no dropout, true condition)."""
    z = self.latent.latents(state.frozen, state.model_state, batch["target"])
    cond = {"image": self.batch_condition(state.frozen, state.model_state, batch)}
    _, metrics = ddpm_loss(self._model_fn(state.ema_params, cond, train=False),
                           self.ddpm.schedule, z, rng, prediction=self.ddpm.prediction,
                           loss_type=self.ddpm.loss_type)
    return metrics

  def sample_latents(self, state: TrainState, rng: jax.Array, cond: jax.Array) -> jax.Array:
    """Scaled latents ``[B, r, r, z]`` for conditions ``[B, r, r, cond_channels]`` (EMA U-Net,
    the configured sampler, CFG at `guidance_scale`)."""
    conditions = {"image": cond}

    def eps_cond_fn(x, t, c):
      return to_eps_fn(self._model_fn(state.ema_params, c, train=False), self.ddpm.schedule,
                       self.ddpm.prediction)(x, t)

    eps_fn = cfg_eps_fn(eps_cond_fn, conditions, null_conditions(conditions),
                        self.guidance_scale)
    return self.ddpm.run_sampler(eps_fn, rng, cond.shape[0])

  def inpaint(self, state: TrainState, rng: jax.Array, image: jax.Array, mask: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """`(pasted, decoded)`: ``m D(z) + (1 - m) x`` and ``D(z)`` for the sampled latents z."""
    cond = self.inpaint_condition(state.frozen, state.model_state, image, mask)
    decoded = self.latent.decode_latents(state.frozen, state.model_state,
                                         self.sample_latents(state, rng, cond))
    return mask * decoded + (1.0 - mask) * image, decoded

  def upsample(self, state: TrainState, rng: jax.Array, low: jax.Array) -> jax.Array:
    """High-resolution images ``D(z)`` for low-resolution sources (nearest-upsampled to H, W)."""
    z = self.sample_latents(state, rng, self.sr_condition(low))
    return self.latent.decode_latents(state.frozen, state.model_state, z)

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``source``: the masked image with NaN unknown pixels (inpaint) or the low-resolution
    image (sr); ``target``: the original; ``label`` when present."""
    self._check_batch(batch)
    if self.task == "inpaint":
      source = masked_source(batch["target"], batch["mask"])
    else:
      source = batch["source"]
    inputs = {"source": source, "target": batch["target"][:, None]}
    if "label" in batch:
      inputs["label"] = batch["label"]
    return inputs

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, 1, H, W, C]``: inpainted (pasted with `paste`) or upsampled."""
    if self.task == "sr":
      return self.upsample(state, rng, source)[:, None]
    image, mask = source_mask(source)
    pasted, decoded = self.inpaint(state, rng, image, mask)
    return (pasted if self.paste else decoded)[:, None]

  @property
  def sample_tag(self) -> str:
    tag = f"ldm_{self.task}_{self.ddpm.sample_tag}"
    if self.guidance_scale != 1.0:
      tag += f"_w{self.guidance_scale:g}"
    return tag + ("_nopaste" if self.task == "inpaint" and not self.paste else "")


# ------------------------------------------------------------------ config boundary


def make_method(config: Any) -> ImageLatentDiffusion:
  """Translates a config (`ldm.task`, `init_from`, `ldm`, `model`, `diffusion`, `optim`,
  `train`, `sample`, `data.source`) into the method, checking it before any compile.

  Raises:
    ValueError: an unknown task, a data source that is not the task's derived pairs, a
      class-conditional U-Net, a U-Net that does not fit the latents, or a bad first stage.
  """
  lc = config.ldm
  task = lc.task
  if task not in TASKS:
    raise ValueError(f"ldm.task must be one of {TASKS}, got {task!r}")
  source = str(config.data.source)
  if not source.startswith(_DATA[task]):
    raise ValueError(f"ldm.task={task!r} trains on {_DATA[task]}...:<images> derived pairs "
                     f"(jgen.data.derived), got data.source={source!r}; e.g. "
                     f"--config.data.source={_DATA[task]}{'box' if task == 'inpaint' else '4'}"
                     ":digits")
  if int(config.model.num_classes):
    raise ValueError("diffusion.ldm_image conditions on an image only: set model.num_classes=0")
  first_stage, ae_params, latent_shape, workdir = ldm.load_frozen_first_stage(
      config, "diffusion.ldm_image", "experiments/ldm/inpaint_digits.py")
  size, channels = config.data.image_size, config.data.channels
  cond_channels = latent_shape[2] + 1 if task == "inpaint" else channels
  unet = dataclasses.replace(ddpm_lib.make_unet(config.model), cond_channels=cond_channels)
  factor = 2 ** (len(unet.ch_mult) - 1)
  if latent_shape[0] % factor:
    raise ValueError(f"the latents are {latent_shape[0]}x{latent_shape[1]}, not divisible by "
                     f"2**(len(model.ch_mult)-1)={factor}: shorten model.ch_mult")
  # Every DDPM setting, read once; CFG is this method's (on the image condition).
  base = ddpm_lib.make_ddpm(config, image_shape=latent_shape, guidance_scale=1.0)
  diffusion = dataclasses.replace(base, model=unet, image_shape=latent_shape)
  scale = lc.scale_factor
  latent = ldm.LatentDiffusion(first_stage=first_stage, ddpm=diffusion, ae_params=ae_params,
                               image_shape=(size, size, channels),
                               scale_factor=None if scale is None else float(scale),
                               quantize_samples=bool(lc.quantize_samples),
                               first_stage_workdir=workdir)
  return ImageLatentDiffusion(latent=latent, task=task, paste=bool(lc.paste),
                              guidance_scale=float(config.sample.guidance_scale),
                              cond_drop_prob=float(config.diffusion.cond_drop_prob))
