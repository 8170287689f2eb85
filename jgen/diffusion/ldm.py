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
``ldm.context_dim`` (`jgen.nn.class_token_unet.ClassTokenUNet`; the last row is the learned null
condition of classifier-free guidance), and the U-Net (`jgen.nn.unet.UNet` with
``context_dim``) attends to those tokens at every attention resolution and in the middle.

**Text conditioning** (``ldm.conditioning = "text"``, `TextLatentDiffusion`,
experiments/ldm/text_digits.py): the U-Net cross-attends to ``c = E_text(tokens)`` instead,
the output ``[B, L, context_dim]`` of a `jgen.nn.text.TextEncoder` (``ldm.text``: a small
bidirectional transformer) over the word tokens (`jgen.nn.text.WordTokenizer`) of a caption.
The captions of an image are drawn from its digit label: T templates (``ldm.text.templates``,
default `jgen.nn.text.TEMPLATES`: "a handwritten seven", "the digit 7", "7", "seven", "a
picture of a seven"), all tokenized once when the method is made into a table of
``K T + 1`` rows (the last one the empty prompt); each step draws a template per example with
the step's rng inside the jitted step. The empty prompt is the null condition: CFG dropout
trains on it with probability ``diffusion.cond_drop_prob`` and guidance contrasts with it at
``sample.guidance_scale``. ``--config.sample.prompts="a handwritten three,the digit 7"`` (or one
prompt, cycled over the samples) sets the sampling prompts; without it they are "a handwritten
zero" .. "a handwritten nine", which the loop's labels 0..9 select. Every prompt and caption is
tokenized when the method is made: a word outside the vocabulary is an error listing it,
before anything compiles.

The text encoder trains jointly with the U-Net (``params["text_encoder"]``) by default. A
frozen one comes from another run through a second `init_from` load:

    --config.init_from.text_encoder.workdir=<a diffusion.ldm text run>
    (experiments/ldm/text_digits.py presets subtree="text_encoder", source="ema",
     into="frozen/text_encoder")

which puts that run's EMA encoder into ``state.frozen["text_encoder"]``: never optimized or
averaged, stored in every checkpoint, shapes checked before compiling (the encoder settings
``ldm.text`` must be the other run's); the U-Net then trains alone against it. A pretrained
encoder from weight files plugs in the same way (`jgen.nn.text` says how).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.autoencoder.first_stage import FirstStage
from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.nn import text as text_lib
from jgen.nn.class_token_unet import ClassTokenUNet
from jgen.nn.conditioning import drop_conditions
from jgen.nn.unet import UNet
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.method import load_method
from jgen.train.state import TrainState

__all__ = ["CONDITIONINGS", "FROZEN", "TEXT_FROZEN", "LatentDiffusion", "TextLatentDiffusion",
           "image_width", "load_first_stage", "latent_train_step", "load_frozen_first_stage",
           "make_method", "measure_scale_factor", "text_method_on_base"]

log = logging.getLogger(__name__)

FROZEN = "autoencoder"  # state.frozen key of the first stage (init_from.into="frozen/autoencoder")
TEXT_FROZEN = "text_encoder"  # params (trained) or state.frozen (frozen) key of the text encoder
CONDITIONINGS = ("label", "text")  # ldm.conditioning
PyTree = Any


def measure_scale_factor(latents: jax.Array) -> jax.Array:
  """LDM's scale factor ``1 / std(z)``, std over every element (ddof 0), float32 scalar."""
  return (1.0 / jnp.std(latents.astype(jnp.float32))).astype(jnp.float32)


def latent_train_step(loss_fn, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                      ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One gradient step of ``loss_fn(params, frozen, model_state, batch, rng)`` (the frozen
  first stage and the recorded scale factor passed through); the metrics log the factor."""
  state, metrics = state.gradient_step(loss_fn, state.frozen, state.model_state, batch, rng)
  return state, {**metrics, "scale_factor": state.model_state["scale_factor"]}


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
    ae, z, scale = self.first_stage_init(batch["image"])
    state = self.ddpm.init(rng, {"image": z[:1] * scale})
    return state.replace(model_state={"scale_factor": scale}, frozen={FROZEN: ae})

  def first_stage_init(self, images: jax.Array) -> tuple[PyTree, jax.Array, jax.Array]:
    """(the loaded first stage, E(x) of the first batch's images, the scale factor: measured
    on them, or the fixed one)."""
    ae = jax.tree.map(jnp.asarray, self.ae_params)
    z = self.first_stage.encode(ae, images)
    if self.scale_factor is None:
      scale = measure_scale_factor(z)
      jax.debug.callback(_log_scale_factor, scale)
    else:
      scale = jnp.asarray(self.scale_factor, jnp.float32)
    return ae, z, scale

  def loss_fn(self, params, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss (with CFG dropout) of the scaled latents of ``batch["image"]``."""
    z = self.latents(frozen, model_state, batch["image"])
    return self.ddpm.loss_fn(params, {"image": z, "label": self._labels(batch)}, rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return latent_train_step(self.loss_fn, state, batch, rng)

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


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class TextLatentDiffusion(LatentDiffusion):
  """Latent diffusion conditioned on text: the U-Net cross-attends to a text encoder's context
  (``ldm.conditioning = "text"``; module docstring).

  Training draws, for an example of digit y, template j ~ U{0..T-1} with the step's rng and
  feeds the caption tokens ``captions[y T + j]``; with probability ``cond_drop_prob`` (per
  example, `jgen.nn.conditioning.drop_conditions` over the caption index) the empty prompt
  instead, the null condition of classifier-free guidance. The context is
  ``c = E_text(tokens, tokens != <pad>)`` and the DDPM loss is that of ``unet(z_t, t, c)``;
  gradients reach the text encoder unless it is frozen. Sampling encodes each prompt once and
  runs the sampler on ``eps_u + w (eps_c - eps_u)`` with ``eps_u`` the U-Net on the empty
  prompt's context (`jgen.diffusion.guidance.cfg_eps_fn`).

  Parameters: ``params = {"unet": ..., "text_encoder": ...}`` (each a Flax variables dict), or
  without ``text_encoder`` when it is frozen in ``state.frozen["text_encoder"]``.

  For the loop, a `Conditional` method of ``num_classes = len(prompts)`` "classes": label i
  asks for ``prompts[i]``. Without ``sample.prompts`` the prompts are ``"a handwritten zero"``
  .. ``"a handwritten nine"``, so label i asks for digit i (what benchmarks/gan_digits.py
  scores).

  Attributes:
    text_encoder: tokens -> context (`jgen.nn.text.TextEncoder`).
    tokenizer: the prompts' tokenizer (`jgen.nn.text.WordTokenizer`).
    captions: int32 ``[K T + 1, L]``: the caption of class k in template j at row ``k T + j``,
      the empty prompt at row ``K T``.
    num_templates: T.
    num_caption_classes: K, the data's classes.
    prompts: the sampling prompts.
    prompt_tokens: int32 ``[len(prompts), L]``.
    custom_prompts: the prompts came from ``sample.prompts`` (named in `sample_tag`).
    guidance_scale: CFG scale w (1: conditional, 0: the empty prompt).
    cond_drop_prob: probability of training on the empty prompt.
    encoder_frozen: the encoder's parameters are ``state.frozen["text_encoder"]``.
  """

  text_encoder: text_lib.TextEncoder
  tokenizer: text_lib.WordTokenizer
  captions: np.ndarray
  num_templates: int
  num_caption_classes: int
  prompts: tuple[str, ...]
  prompt_tokens: np.ndarray
  custom_prompts: bool = False
  guidance_scale: float = 1.0
  cond_drop_prob: float = 0.1
  encoder_frozen: bool = False

  def __post_init__(self):
    super().__post_init__()
    k, t = self.num_caption_classes, self.num_templates
    if self.captions.shape != (k * t + 1, self.tokenizer.max_len):
      raise ValueError(f"captions must be [K T + 1, L] = [{k * t + 1}, "
                       f"{self.tokenizer.max_len}], got {self.captions.shape}")
    if self.text_encoder.context_dim != self.ddpm.model.context_dim:
      raise ValueError(f"the text encoder's context_dim {self.text_encoder.context_dim} differs "
                       f"from the U-Net's cross-attention context_dim "
                       f"{self.ddpm.model.context_dim}: set ldm.context_dim to the encoder's")
    if self.tokenizer.max_len > self.text_encoder.max_len:
      raise ValueError(f"the tokenizer's max_len {self.tokenizer.max_len} exceeds the text "
                       f"encoder's {self.text_encoder.max_len}")
    if not 0.0 <= self.cond_drop_prob < 1.0:
      raise ValueError(f"cond_drop_prob must lie in [0, 1), got {self.cond_drop_prob}")

  @property
  def num_classes(self) -> int:
    """The sampling prompts (label i of the loop asks for prompts[i])."""
    return len(self.prompts)

  # ------------------------------------------------------------------ text

  def encoder_params(self, params: PyTree, frozen: PyTree) -> PyTree:
    """The text encoder's parameters: ``frozen["text_encoder"]`` or ``params["text_encoder"]``."""
    return frozen[TEXT_FROZEN] if self.encoder_frozen else params[TEXT_FROZEN]

  def context(self, encoder_params: PyTree, tokens: jax.Array, *, train: bool = False,
              rng: jax.Array | None = None) -> jax.Array:
    """``E_text(tokens, tokens != <pad>)``: float32 ``[B, L, context_dim]``."""
    tokens = jnp.asarray(tokens, jnp.int32)
    return self.text_encoder.encode(encoder_params, tokens, self.tokenizer.mask(tokens),
                                    train=train, rng=rng)

  def caption_tokens(self, labels: jax.Array, rng: jax.Array, drop_prob: float
                     ) -> jax.Array:
    """Caption tokens ``[B, L]`` of digit labels: template ``j ~ U{0..T-1}`` per example, the
    empty prompt with probability `drop_prob` (CFG dropout)."""
    template_rng, drop_rng = jax.random.split(rng)
    t = self.num_templates
    index = labels * t + jax.random.randint(template_rng, labels.shape, 0, t)
    index = drop_conditions({"label": index}, drop_rng, drop_prob,
                            num_classes=self.num_caption_classes * t)["label"]
    return jnp.asarray(self.captions)[index]

  def _caption_loss(self, unet_params, encoder_params, frozen: PyTree, model_state: PyTree,
                    batch: dict[str, jax.Array], rng: jax.Array, *, train: bool
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the batch's latents given its captions (train: dropout and CFG dropout
    on, `DDPM.loss_fn`; else off, the loss `DDPM.evaluate` computes)."""
    z = self.latents(frozen, model_state, batch["image"])
    caption_rng, dropout_rng, loss_rng = jax.random.split(rng, 3)
    tokens = self.caption_tokens(self._labels(batch), caption_rng,
                                 self.cond_drop_prob if train else 0.0)
    context = self.context(encoder_params, tokens, train=train, rng=dropout_rng)
    if train:
      return self.ddpm.loss_fn(unet_params, {"image": z, "context": context}, loss_rng)
    model_fn = self.ddpm.model_fn(unet_params, {"context": context}, train=False)
    return self.ddpm.denoising_loss(model_fn, z, loss_rng)

  # ------------------------------------------------------------------ the method

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """A random U-Net and text encoder (declared in ``frozen["text_encoder"]`` when frozen:
    `init_from` then replaces it); the scale factor as in `LatentDiffusion.init`."""
    ae, z, scale = self.first_stage_init(batch["image"])
    encoder_rng, unet_rng, state_rng = jax.random.split(rng, 3)
    tokens = jnp.asarray(self.captions[:1])
    encoder = self.text_encoder.init(encoder_rng, tokens, self.tokenizer.mask(tokens))
    context = self.context(encoder, tokens)
    unet = self.ddpm.model.init(unet_rng, z[:1] * scale, jnp.zeros((1,), jnp.int32),
                                {"context": context}, train=False)
    params, frozen = {"unet": unet}, {FROZEN: ae}
    if self.encoder_frozen:
      frozen[TEXT_FROZEN] = encoder
    else:
      params[TEXT_FROZEN] = encoder
    return TrainState.create(params=params, tx=self.ddpm.tx, rng=state_rng,
                             ema_decay=self.ddpm.ema_decay, ema_warmup=self.ddpm.ema_warmup,
                             model_state={"scale_factor": scale}, frozen=frozen)

  def loss_fn(self, params, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the scaled latents given caption contexts (CFG dropout on)."""
    return self._caption_loss(params["unet"], self.encoder_params(params, frozen), frozen,
                              model_state, batch, rng, train=True)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The DDPM loss of the EMA parameters on held-out latents (captions of the true labels in
    random templates, no dropout)."""
    ema = state.ema_params
    _, metrics = self._caption_loss(ema["unet"], self.encoder_params(ema, state.frozen),
                                    state.frozen, state.model_state, batch, rng, train=False)
    return metrics

  def sample_latents(self, state: TrainState, rng: jax.Array,
                     conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """``[n, r, r, z]`` scaled latents for ``conditions``: ``{"label": int32 [n]}`` (indices
    into `prompts`) or ``{"tokens": int32 [n, L]}`` (ids of `tokenizer`); CFG at
    `guidance_scale` against the empty prompt."""
    if "tokens" in conditions:
      tokens = jnp.asarray(conditions["tokens"], jnp.int32)
    elif "label" in conditions:
      tokens = jnp.asarray(self.prompt_tokens)[jnp.asarray(conditions["label"], jnp.int32)]
    else:
      raise ValueError(f"text latent diffusion samples for {{'label': prompt indices [n]}} or "
                       f"{{'tokens': [n, L]}}, got {sorted(conditions)}")
    if tokens.shape != (n, self.tokenizer.max_len):
      raise ValueError(f"prompt tokens must be [n, L] = [{n}, {self.tokenizer.max_len}], got "
                       f"{tokens.shape}")
    ema = state.ema_params
    encoder = self.encoder_params(ema, state.frozen)
    null = jnp.broadcast_to(jnp.asarray(self.captions[-1]), tokens.shape)

    def eps_cond_fn(x, t, c):
      return self.ddpm.sampling_fn(ema["unet"], c)(x, t)
    eps_fn = cfg_eps_fn(eps_cond_fn, {"context": self.context(encoder, tokens)},
                        {"context": self.context(encoder, null)}, self.guidance_scale)
    return self.ddpm.run_sampler(eps_fn, rng, n)

  @property
  def sample_tag(self) -> str:
    tag = f"ldm_text_{self.ddpm.sample_tag}_w{self.guidance_scale:g}"
    if self.custom_prompts:
      digest = hashlib.sha1("|".join(self.prompts).encode()).hexdigest()[:8]
      tag += f"_prompts{len(self.prompts)}-{digest}"
    return tag


# ------------------------------------------------------------------ config boundary


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
                     "trained experiments/first_stage/vqgan_digits.py or "
                     "experiments/first_stage/klae_digits.py run") from e
  method = load_method(config)
  if not isinstance(method, FirstStage):
    raise ValueError(
        f"init_from.workdir={workdir!r} is a {config.get('method')!r} run, not a latent-"
        "diffusion first stage ('autoencoder.first_stage'): train one with "
        "experiments/first_stage/vqgan_digits.py or experiments/first_stage/klae_digits.py and "
        "point --config.init_from.workdir at it")
  return method, config


def image_width(config: Any) -> int:
  """The images' width: ``data.image_size``, times ``data.canvas`` for a canvas of digits side
  by side (`jgen.data.canvas`)."""
  return int(config.data.image_size) * max(1, int(config.data.get("canvas", 0) or 0))


def load_frozen_first_stage(config: Any, method: str, example: str
                            ) -> tuple[FirstStage, PyTree, tuple[int, int, int], str]:
  """`(first_stage, ae_params, latent_shape, workdir)` of the config's first-stage load
  (``init_from`` into ``frozen/autoencoder``, subtree ``autoencoder``), checked against the
  data settings and the first stage's parameter structure before anything compiles.

  Args:
    config: the experiment config.
    method: the method's name (messages).
    example: the experiment file that sets the load (messages).

  Raises:
    ValueError: no such load, a run that is not a first stage, another subtree, data settings
      that differ from the first stage's, parameters that do not fit its architecture.
  """
  spec = init_from_lib.frozen_load(
      config, FROZEN,
      needs=f"{method} trains on the latents of a trained first stage: set "
            "--config.init_from.workdir=<an autoencoder.first_stage run's workdir>",
      hint=f" and init_from.subtree='autoencoder' ({example} sets the latter two)")
  first_stage, fs_config = load_first_stage(spec.workdir)
  if spec.subtree != "autoencoder":
    raise ValueError(f"init_from.subtree={spec.subtree!r}: the first stage's encode/decode "
                     "take its 'autoencoder' parameters; set "
                     "--config.init_from.subtree=autoencoder")
  size, channels = config.data.image_size, config.data.channels
  width = image_width(config)
  if (size, channels) != (fs_config.data.image_size, fs_config.data.channels):
    raise ValueError(
        f"data.image_size/channels = {size}/{channels}, but the first stage {spec.workdir} "
        f"was trained on {fs_config.data.image_size}/{fs_config.data.channels}: set them to "
        "match")
  ae_params, step = init_from_lib.load(spec)
  image = jax.ShapeDtypeStruct((1, size, width, channels), jnp.float32)  # a canvas: wider
  abstract = jax.eval_shape(
      lambda r, x: init_from_lib.subtree(first_stage.init(r, {"image": x}).params,
                                         "autoencoder", "the first stage's parameters"),
      jax.random.key(0), image)
  init_from_lib.raise_problems(
      init_from_lib.fit_problems(abstract, ae_params, where=f"frozen/{FROZEN}",
                                 what=f"{spec.source}/{spec.subtree}", require_all=True),
      what=f"the first stage of {spec.workdir} step {step}")
  latent_shape = tuple(int(d) for d in jax.eval_shape(first_stage.encode, abstract,
                                                      image).shape[1:])
  log.info("%s on the first stage %s (%s bottleneck, step %d): latents %s", method,
           spec.workdir, first_stage.bottleneck, step, latent_shape)
  return first_stage, ae_params, latent_shape, spec.workdir


def make_method(config: Any, make_diffusion: Callable[..., ddpm_lib.DDPM] = ddpm_lib.make_ddpm
                ) -> LatentDiffusion:
  """Translates a config (`init_from`, `ldm`, `model`, `diffusion`, `optim`, `train`, `sample`)
  into the method; everything about the first stage is checked here, before any compile.
  `make_diffusion(config, image_shape=...)` builds the latent model (`ddpm.make_ddpm`;
  `flow_matching.make_flow_matching` for latent flow matching).

  Raises:
    ValueError: no first-stage load, a run that is not a first stage, a load of another
      subtree or source, data settings that differ from the first stage's, or a U-Net that
      does not fit the latent shape.
  """
  first_stage, ae_params, latent_shape, workdir = load_frozen_first_stage(
      config, "diffusion.ldm", "experiments/ldm/digits.py")
  size, channels = config.data.image_size, config.data.channels
  m, lc = config.model, config.ldm
  conditioning = str(lc.conditioning)
  if conditioning not in CONDITIONINGS:
    raise ValueError(f"ldm.conditioning={conditioning!r}: choose one of {CONDITIONINGS} "
                     "(label tokens, or captions through a text encoder)")
  num_classes = int(m.num_classes)
  if num_classes < 1:
    raise ValueError(f"model.num_classes={num_classes}: diffusion.ldm is class-conditional "
                     "(cross-attention to label tokens, or to captions of the labels); set it "
                     "to the number of classes")
  unet = dataclasses.replace(ddpm_lib.make_unet(m), num_classes=0,
                             context_dim=int(lc.context_dim),
                             cross_attn_heads=int(lc.cross_attn_heads))
  factor = 2 ** (len(unet.ch_mult) - 1)
  if latent_shape[0] % factor or latent_shape[1] % factor:
    raise ValueError(f"the latents are {latent_shape[0]}x{latent_shape[1]}, not divisible by "
                     f"2**(len(model.ch_mult)-1)={factor}: shorten model.ch_mult")
  base = make_diffusion(config, image_shape=latent_shape)  # every DDPM setting, once
  if not isinstance(base, ddpm_lib.ConditionalDDPM):
    raise ValueError("diffusion.ldm needs a class-conditional DDPM (model.num_classes > 0)")
  if base.classifier is not None:
    raise ValueError("diffusion.ldm does not take a pixel-space guiding classifier: unset "
                     "sample.classifier.workdir")
  scale = lc.scale_factor
  log.info("latent diffusion: scale factor %s, %s conditioning",
           "measured at init" if scale is None else f"fixed {scale}", conditioning)
  common = dict(first_stage=first_stage, ae_params=ae_params,
                image_shape=(size, image_width(config), channels),
                scale_factor=None if scale is None else float(scale),
                quantize_samples=bool(lc.quantize_samples),
                first_stage_workdir=workdir)
  if conditioning == "text":
    return _make_text_method(config, base, unet, latent_shape, common)
  model = ClassTokenUNet(unet=unet, num_classes=num_classes, num_tokens=int(lc.num_tokens))
  diffusion = dataclasses.replace(base, model=model, image_shape=latent_shape)
  return LatentDiffusion(ddpm=diffusion, **common)


def _make_text_method(config: Any, base: ddpm_lib.ConditionalDDPM, unet: UNet,
                      latent_shape: tuple[int, int, int], common: dict[str, Any]
                      ) -> "TextLatentDiffusion":
  """The text-conditioned method of a config (``ldm.text``, ``sample.prompts``); every
  caption and prompt is tokenized (and checked) here, before any compile."""
  tc = config.ldm.text
  num_classes = int(config.model.num_classes)
  templates = tuple(tc.templates)
  if not templates:
    raise ValueError("ldm.text.templates is empty: give at least one caption template")
  slots = text_lib.template_slots(templates)
  canvas = image_width(config) // int(config.data.image_size)
  if slots != canvas:
    raise ValueError(f"ldm.text.templates name {slots} digit(s) per caption but data.canvas="
                     f"{canvas}: use text.PAIR_TEMPLATES-like templates ({{word0}}, {{word1}}) "
                     "for a canvas of two digits, text.TEMPLATES for one")
  if num_classes > 10 ** slots:
    raise ValueError(f"model.num_classes={num_classes}: the text captions name digits 0..9 "
                     f"({10 ** slots} labels for {slots} digit(s); ldm.conditioning='text' is "
                     "for 10-class digit data)")
  tokenizer = text_lib.WordTokenizer(max_len=int(tc.max_len))
  texts = [text_lib.caption(t, k, slots) for k in range(num_classes) for t in templates]
  tokenizer.check(texts, what="caption (ldm.text.templates)")
  captions = tokenizer.encode(texts + [""])  # [K T + 1, L]: row K T is the empty prompt
  given = text_lib.parse_prompts(config.sample.prompts)
  prompts = given or tuple(text_lib.caption(templates[0], k, slots) if slots > 1
                           else text_lib.default_prompt(k) for k in range(num_classes))
  tokenizer.check(prompts, what="--config.sample.prompts entry")
  encoder = text_lib.TransformerTextEncoder(text_lib.TextTransformer(
      vocab_size=tokenizer.vocab_size, max_len=tokenizer.max_len,
      context_dim=unet.context_dim, width=int(tc.width), depth=int(tc.depth),
      num_heads=int(tc.num_heads), mlp_ratio=int(tc.mlp_ratio),
      dropout=float(tc.dropout)))
  frozen = any(s.into == f"frozen/{TEXT_FROZEN}" for s in init_from_lib.parse_init_from(config))
  fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ddpm_lib.DDPM)}
  # The DDPM sees the context as a plain condition: guidance and CFG dropout act on the
  # prompt (the empty prompt is the null condition), so they are this method's, not the DDPM's.
  diffusion = ddpm_lib.DDPM(**{**fields, "model": unet, "image_shape": latent_shape,
                               "guidance_scale": 1.0, "cond_drop_prob": 0.0})
  log.info("text conditioning: %d caption templates x %d classes, %d sampling prompt(s), "
           "text encoder %s", len(templates), num_classes, len(prompts),
           "frozen (init_from)" if frozen else "trained jointly")
  return TextLatentDiffusion(
      ddpm=diffusion, **common, text_encoder=encoder, tokenizer=tokenizer, captions=captions,
      num_templates=len(templates), num_caption_classes=num_classes, prompts=prompts,
      prompt_tokens=tokenizer.encode(prompts), custom_prompts=bool(given),
      guidance_scale=float(base.guidance_scale), cond_drop_prob=float(base.cond_drop_prob),
      encoder_frozen=frozen)


def text_method_on_base(config: Any, method: str, rules: tuple, *, trains: str
                        ) -> "TextLatentDiffusion":
  """The text latent diffusion method of a config that adapts a trained text run (IP-Adapter,
  Imagic): the rules must be `rules`, ``init_from.base.workdir`` names the trained run (its
  EMA weights come in through that load), and the scale factor is fixed to the one that run
  recorded, so the latents are the ones its U-Net learned.

  Raises:
    ValueError: other rules, no base run, or a config that is not text-conditioned.
  """
  got = rules_lib.parse_rules(config.optim.rules)
  if got != rules:
    raise ValueError(f"{method} trains {trains}: set --config.optim.rules to {rules} "
                     f"(got {got})")
  base = config.init_from.get("base", {})
  if not base.get("workdir"):
    raise ValueError(f"{method} adapts a trained text latent diffusion model: set "
                     "--config.init_from.base.workdir=<an experiments/ldm/text_digits.py run>")
  text = make_method(config)
  if not isinstance(text, TextLatentDiffusion) or text.encoder_frozen:
    raise ValueError(f"{method} needs ldm.conditioning='text' with the text encoder in params")
  recorded, _ = init_from_lib.load(init_from_lib.InitFrom(base.workdir, step=base.get("step"),
                                                          source="model_state"))
  return dataclasses.replace(text, scale_factor=float(np.asarray(recorded["scale_factor"])))
