"""Latent diffusion (Rombach et al. 2022), stage 2: a class-conditional DDPM on the latents of a
frozen first stage, `config.method = "diffusion.ldm"`.

The first stage is a trained `autoencoder.first_stage` run (VQ-GAN or KL autoencoder), loaded
with ``init_from`` (``subtree="autoencoder"``, ``into="frozen/autoencoder"``): its EMA
parameters are ``state.frozen["autoencoder"]``, never optimized, stored in every checkpoint.
Its architecture is rebuilt from that run's record (`jgen.train.run_record.latest_config`),
so this config repeats none of it.

Diffusion runs unchanged (`jgen.diffusion.ddpm.ConditionalDDPM`: its loss, CFG dropout,
samplers, EMA) on the scaled latents

    z = s * E(x),    s = 1 / std(E(x_1))     (LDM's scale factor)

where E is the first stage's `encode` (VQ: the quantized codes; KL: the posterior mean) and
std is over every element of the encoded first training batch x_1 (population std, ddof 0),
measured once in `init` and kept in ``state.model_state["scale_factor"]`` (non-trainable,
checkpointed: a resume and ``--mode=sample`` read the recorded value, never re-measure);
``config.ldm.scale_factor`` fixes it instead. Sampling draws z with the DDPM sampler at the
latent shape, then decodes x = D(z / s) with the frozen decoder (VQ: z / s snapped to its
nearest code first, as LDM's VQ interface quantizes before decoding; ``ldm.quantize_samples``).

Conditioning is cross-attention (LDM's class-conditional ImageNet model): the label y indexes
a learned table of ``num_classes + 1`` rows of ``ldm.num_tokens`` tokens of size
``ldm.context_dim`` (`ClassTokenUNet`; the last row is the learned null condition of
classifier-free guidance), and the U-Net (`jgen.nn.unet.UNet` with ``context_dim``) attends
to those tokens at every attention resolution and in the middle.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.autoencoder.first_stage import FirstStage
from jgen.diffusion import ddpm as ddpm_lib
from jgen.nn.unet import UNet
from jgen.train import init_from as init_from_lib
from jgen.train import run_record
from jgen.train.method import load_method
from jgen.train.state import TrainState

__all__ = ["FROZEN", "ClassTokenUNet", "LatentDiffusion", "load_first_stage", "make_method",
           "measure_scale_factor"]

log = logging.getLogger(__name__)

FROZEN = "autoencoder"  # state.frozen key of the first stage (init_from.into="frozen/autoencoder")
PyTree = Any


class ClassTokenUNet(nn.Module):
  """A U-Net conditioned on a class label through cross-attention to learned label tokens.

  ``context = T[y]``, ``T`` of shape ``[num_classes + 1, num_tokens, unet.context_dim]``
  (rows initialized N(0, 1) as flax's `nn.Embed`; row ``num_classes`` is the null class), then
  ``unet(x, t, {"context": context})``. It takes the conditions dict of `jgen.nn.conditioning`
  with ``label`` only, so `ConditionalDDPM` trains and guides it as any label-conditional
  network (CFG replaces the label by the null class, i.e. the learned null tokens).

  Attributes:
    unet: the network, with ``context_dim > 0`` and ``num_classes = 0``.
    num_classes: classes of the label.
    num_tokens: tokens L per label.
  """

  unet: UNet
  num_classes: int
  num_tokens: int = 4

  @property
  def condition_keys(self) -> tuple[str, ...]:
    return ("label",)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, conditions: Mapping[str, jax.Array] | None,
               *, train: bool) -> jax.Array:
    if not conditions or "label" not in conditions:
      raise KeyError(f"ClassTokenUNet needs the condition 'label'; got "
                     f"{sorted(conditions or {})}")
    label = jnp.asarray(conditions["label"])
    if label.shape != (x.shape[0],) or not jnp.issubdtype(label.dtype, jnp.integer):
      raise ValueError(f"label must be an integer array of shape [B]=({x.shape[0]},) with "
                       f"values in 0..{self.num_classes} ({self.num_classes}: null), got "
                       f"{label.dtype}{label.shape}")
    d = self.unet.context_dim
    tokens = nn.Embed(self.num_classes + 1, self.num_tokens * d, name="label_tokens")(label)
    context = tokens.reshape(x.shape[0], self.num_tokens, d)
    return self.unet(x, t, {"context": context}, train=train)


def measure_scale_factor(latents: jax.Array) -> jax.Array:
  """LDM's scale factor ``1 / std(z)``, std over every element (ddof 0), float32 scalar."""
  return (1.0 / jnp.std(latents.astype(jnp.float32))).astype(jnp.float32)


def _log_scale_factor(value) -> None:
  log.info("latent scale factor measured on the first batch: %.6g (1/std)", float(value))


@dataclasses.dataclass(frozen=True, eq=False)
class LatentDiffusion:
  """A `ConditionalDDPM` on the scaled latents of a frozen first stage (module docstring).

  Attributes:
    first_stage: the first-stage method (`encode` / `decode` / `quantize`).
    ddpm: the diffusion model on latents (``image_shape`` = the latent shape, a
      `ClassTokenUNet`, no clipping of the denoised latents).
    ae_params: the first stage's loaded parameters (host arrays): `init` measures the scale
      factor with them and declares the frozen structure; training and sampling use
      ``state.frozen["autoencoder"]`` (the same arrays, put there by `init_from`).
    image_shape: (H, W, C) of the images.
    scale_factor: a fixed scale factor (None: measured in `init`).
    quantize_samples: snap sampled latents to the nearest code before decoding (VQ).
    first_stage_workdir: the first stage's run (messages).
  """

  first_stage: FirstStage
  ddpm: ddpm_lib.ConditionalDDPM
  ae_params: PyTree
  image_shape: tuple[int, int, int]
  scale_factor: float | None = None
  quantize_samples: bool = True
  first_stage_workdir: str = ""

  def __post_init__(self):
    if self.scale_factor is not None and not self.scale_factor > 0:
      raise ValueError(f"ldm.scale_factor must be > 0 (or None to measure it), got "
                       f"{self.scale_factor}")
    if self.ddpm.clip_denoised:
      raise ValueError("sample.clip_denoised=True would clip latents to [-1, 1]; latent "
                       "diffusion samples unbounded latents: set sample.clip_denoised=False")

  @property
  def num_classes(self) -> int:
    return self.ddpm.num_classes

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return self.ddpm.image_shape

  # ------------------------------------------------------------------ latents

  def latents(self, frozen: PyTree, model_state: PyTree, images: jax.Array) -> jax.Array:
    """Scaled latents ``s * E(x)`` of images in [-1, 1] (no gradient into the first stage)."""
    z = self.first_stage.encode(frozen[FROZEN], images)
    return jax.lax.stop_gradient(z * model_state["scale_factor"])

  def decode_latents(self, frozen: PyTree, model_state: PyTree, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] of scaled latents: ``clip(D(q(z / s)))``, q the nearest code (VQ with
    `quantize_samples`) or the identity."""
    ae = frozen[FROZEN]
    z = z / model_state["scale_factor"]
    if self.first_stage.bottleneck == "vq" and self.quantize_samples:
      z = self.first_stage.quantize(ae, z)[0].z_q
    return jnp.clip(self.first_stage.decode(ae, z), -1.0, 1.0)

  @staticmethod
  def _labels(batch: dict[str, jax.Array]) -> jax.Array:
    if "label" not in batch:
      raise ValueError("diffusion.ldm is class-conditional: it trains on batches with a "
                       f"'label' field, got {sorted(batch)}; use a labelled data source")
    return batch["label"].astype(jnp.int32)

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """A random U-Net and label tokens; the scale factor of the first batch (or the fixed one)
    in ``model_state``; ``frozen["autoencoder"]`` the loaded first stage."""
    ae = jax.tree.map(jnp.asarray, self.ae_params)
    z = self.first_stage.encode(ae, batch["image"])
    if self.scale_factor is None:
      scale = measure_scale_factor(z)
      jax.debug.callback(_log_scale_factor, scale)
    else:
      scale = jnp.asarray(self.scale_factor, jnp.float32)
    state = self.ddpm.init(rng, {"image": z[:1] * scale})
    return state.replace(model_state={"scale_factor": scale}, frozen={FROZEN: ae})

  def loss_fn(self, params, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss (with CFG dropout) of the scaled latents of ``batch["image"]``."""
    z = self.latents(frozen, model_state, batch["image"])
    return self.ddpm.loss_fn(params, {"image": z, "label": self._labels(batch)}, rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    state, metrics = state.gradient_step(self.loss_fn, state.frozen, state.model_state, batch,
                                         rng)
    return state, {**metrics, "scale_factor": state.model_state["scale_factor"]}

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The DDPM loss of the EMA parameters on held-out latents (dropout off, true labels)."""
    z = self.latents(state.frozen, state.model_state, batch["image"])
    return self.ddpm.evaluate(state, {"image": z, "label": self._labels(batch)}, rng)

  def sample_latents(self, state: TrainState, rng: jax.Array,
                     conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """``[n, r, r, z]`` scaled latents for `conditions` (CFG at the DDPM's guidance scale)."""
    return self.ddpm.sample_conditional(state, rng, conditions, n)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for ``conditions = {"label": int32 [n]}``, decoded by the frozen decoder."""
    z = self.sample_latents(state, rng, conditions, n)
    return self.decode_latents(state.frozen, state.model_state, z)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images, every class in turn (0, 1, ..., K-1, 0, ...)."""
    labels = jnp.asarray(np.arange(n) % self.num_classes, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    return "ldm_" + self.ddpm.sample_tag


# ------------------------------------------------------------------ config boundary


def _first_stage_load(config: Any) -> init_from_lib.InitFrom:
  loads = init_from_lib.parse_init_from(config)
  for spec in loads:
    if spec.into == f"frozen/{FROZEN}":
      return spec
  found = [f"{s.name}: into={s.into!r}" for s in loads]
  raise ValueError(
      "diffusion.ldm trains on the latents of a trained first stage: set "
      "--config.init_from.workdir=<an autoencoder.first_stage run's workdir> with "
      f"init_from.into='frozen/{FROZEN}' and init_from.subtree='autoencoder' "
      "(experiments/ldm_digits.py sets the latter two)"
      + (f"; found {found}" if found else "; init_from.workdir is empty"))


def load_first_stage(workdir: str) -> tuple[FirstStage, Any]:
  """The first-stage method of a trained `autoencoder.first_stage` run, rebuilt from its run
  record, and its config.

  Raises:
    ValueError: `workdir` has no run record, or its method is not a first stage.
  """
  try:
    config = run_record.latest_config(workdir)
  except run_record.RunRecordError as e:
    raise ValueError(f"init_from.workdir={workdir!r}: {e}. Point it at the workdir of a "
                     "trained experiments/vqgan_digits.py or experiments/klae_digits.py "
                     "run") from e
  method = load_method(config)
  if not isinstance(method, FirstStage):
    raise ValueError(
        f"init_from.workdir={workdir!r} is a {config.get('method')!r} run, not a latent-"
        "diffusion first stage ('autoencoder.first_stage'): train one with "
        "experiments/vqgan_digits.py or experiments/klae_digits.py and point "
        "--config.init_from.workdir at it")
  return method, config


def make_method(config: Any) -> LatentDiffusion:
  """Translates a config (`init_from`, `ldm`, `model`, `diffusion`, `optim`, `train`, `sample`)
  into the method; everything about the first stage is checked here, before any compile.

  Raises:
    ValueError: no first-stage load, a run that is not a first stage, a load of another
      subtree or source, data settings that differ from the first stage's, or a U-Net that
      does not fit the latent shape.
  """
  spec = _first_stage_load(config)
  first_stage, fs_config = load_first_stage(spec.workdir)
  if spec.subtree != "autoencoder":
    raise ValueError(f"init_from.subtree={spec.subtree!r}: the first stage's encode/decode "
                     "take its 'autoencoder' parameters; set "
                     "--config.init_from.subtree=autoencoder")
  size, channels = config.data.image_size, config.data.channels
  if (size, channels) != (fs_config.data.image_size, fs_config.data.channels):
    raise ValueError(
        f"data.image_size/channels = {size}/{channels}, but the first stage {spec.workdir} "
        f"was trained on {fs_config.data.image_size}/{fs_config.data.channels}: set them to "
        "match")
  ae_params, step = init_from_lib.load(spec)
  image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  abstract = jax.eval_shape(
      lambda r, x: init_from_lib.subtree(first_stage.init(r, {"image": x}).params,
                                         "autoencoder", "the first stage's parameters"),
      jax.random.key(0), image)
  init_from_lib.raise_problems(
      init_from_lib.fit_problems(abstract, ae_params, where=f"frozen/{FROZEN}",
                                 what=f"{spec.source}/{spec.subtree}", require_all=True),
      what=f"the first stage of {spec.workdir} step {step}")
  latent = jax.eval_shape(first_stage.encode, abstract, image)
  latent_shape = tuple(int(d) for d in latent.shape[1:])

  m, lc = config.model, config.ldm
  num_classes = int(m.num_classes)
  if num_classes < 1:
    raise ValueError(f"model.num_classes={num_classes}: diffusion.ldm is class-conditional "
                     "(cross-attention to label tokens); set it to the number of classes")
  unet = dataclasses.replace(ddpm_lib.make_unet(m), num_classes=0,
                             context_dim=int(lc.context_dim),
                             cross_attn_heads=int(lc.get("cross_attn_heads", 1)))
  factor = 2 ** (len(unet.ch_mult) - 1)
  if latent_shape[0] % factor:
    raise ValueError(f"the latents are {latent_shape[0]}x{latent_shape[1]}, not divisible by "
                     f"2**(len(model.ch_mult)-1)={factor}: shorten model.ch_mult")
  model = ClassTokenUNet(unet=unet, num_classes=num_classes, num_tokens=int(lc.num_tokens))
  ddpm_config = config.copy_and_resolve_references()
  with ddpm_config.unlocked():
    ddpm_config.data.image_size = latent_shape[0]
    ddpm_config.data.channels = latent_shape[2]
  base = ddpm_lib.make_method(ddpm_config)  # every DDPM setting read in the one place
  if not isinstance(base, ddpm_lib.ConditionalDDPM):
    raise ValueError("diffusion.ldm needs a class-conditional DDPM (model.num_classes > 0)")
  if base.classifier is not None:
    raise ValueError("diffusion.ldm does not take a pixel-space guiding classifier: unset "
                     "sample.classifier.workdir")
  diffusion = dataclasses.replace(base, model=model, image_shape=latent_shape)
  scale = lc.get("scale_factor", None)
  log.info("latent diffusion on %s (%s bottleneck, step %d): latents %s, scale factor %s",
           spec.workdir, first_stage.bottleneck, step, latent_shape,
           "measured at init" if scale is None else f"fixed {scale}")
  return LatentDiffusion(first_stage=first_stage, ddpm=diffusion, ae_params=ae_params,
                         image_shape=(size, size, channels),
                         scale_factor=None if scale is None else float(scale),
                         quantize_samples=bool(lc.get("quantize_samples", True)),
                         first_stage_workdir=spec.workdir)
