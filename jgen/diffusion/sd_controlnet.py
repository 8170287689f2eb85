"""Stable Diffusion steered by a ControlNet (Zhang et al. 2023) as a method of the one loop:
`config.method = "diffusion.sd_controlnet"`, experiments/sd/controlnet.py.

The networks are Stable Diffusion's (`jgen.diffusion.stable_diffusion`: the CLIP text encoder
``frozen["text_encoder"]`` and the KL autoencoder ``frozen["autoencoder"]``), with the U-Net
replaced by `jgen.nn.controlnet.ControlledUNet` in diffusers' layout (``hint_layout="pixel"``:
the condition image at the image's resolution, ``2^(k-1)`` times the latent's for k
``controlnet.hint_channels``): ``params = {"unet": ..., "control": ...}``, ``control`` the
trainable copy of the U-Net's encoder with its hint encoder and zero convolutions.
``python -m jgen.convert CONTROLNET_FOLDER WORKDIR --base=SD_WORKDIR`` writes such a run from a
diffusers ``ControlNetModel`` and a converted Stable Diffusion
(`jgen.convert.controlnet_pipeline`).

**Sampling.** For a condition image ``h`` (``hint``, in [-1, 1]; the module maps it onto the
[0, 1] that diffusers' ControlNets read), prompt context ``c`` and negative-prompt context
``c_neg``, classifier-free guidance with the hint in both branches, as diffusers'
``StableDiffusionControlNetPipeline`` (without guess mode) does:

    eps = eps(z_t, c_neg, h) + w (eps(z_t, c, h) - eps(z_t, c_neg, h)),
    eps(z_t, c, h) = U-Net(z_t, t, c; skips s_i + k Z_i(s'_i), middle m + k Z_mid(m'))

with ``k = controlnet.conditioning_scale`` (diffusers' ``controlnet_conditioning_scale``). The
scale reaches the network as the call argument of `ControlledUNet`, never as a module
attribute: `sample_latents` takes it as an array (a traced scalar sweeps it inside one compiled
function), and by default reads ``state.frozen["conditioning_scale"]``, a `sample_frozen` array:
where the loop passes those as arguments (as `jgen.train.sampling.jit_sampler` does) a new value
recompiles nothing; where it does not, `translate` puts them in as constants. Samplers,
schedule, prediction, prompts, negative prompt, LoRA and textual-inversion files are Stable
Diffusion's.

**As a `Translates` method** (``--mode=sample``, ``--mode=eval``): the condition images are the
``source`` field of the held-out split of ``data.source`` (a derived pair source such as
``derived:edges:folder:DIR``, or ``paired:DIR``), or the images of the folder
``sample.source`` (``data.source`` may then be empty). Each condition image is drawn with each
of the K prompts of ``sample.prompts``: ``translate`` returns ``[B, K, H, W, C]``, the prompts
the translations' names; the known target (the pair's image) is shown when K = 1.

**Fine-tuning** (diffusers' ``train_controlnet``): the rules train ``control/.*`` only (the
U-Net, text encoder and autoencoder stay frozen; checked). A batch gives

* the image: ``target`` (pair sources: ``derived:T:SPEC``, ``paired:DIR``), else ``image``;
* the condition: ``source`` (pair sources), else ``hint``; in [-1, 1] as every image field;
* the caption: ``tokens`` (int32 ``[B, 77]``) when the source gives them, else row ``label``
  of ``text.captions``, else one of its captions drawn per example
  (`StableDiffusion.batch_tokens`);

and the loss is the DDPM loss of the configured prediction on ``z = s E(image)`` with the
caption's context and the condition as ``hint``, the caption replaced by the empty prompt with
probability ``diffusion.cond_drop_prob`` (diffusers' ``proportion_empty_prompts``; the hint is
never dropped).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion import stable_diffusion as sd_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import to_eps_fn
from jgen.diffusion.samplers import ddim_sample
from jgen.nn.controlnet import ControlledUNet
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState

__all__ = ["CONTROL_RULES", "FROZEN_RULES", "SDControlNet", "make_method"]

PyTree = Any

CONTROL_RULES = rules_lib.parse_rules((("control/.*", 1.0), (".*", "frozen")))
FROZEN_RULES = rules_lib.parse_rules(((".*", "frozen"),))


@dataclasses.dataclass(frozen=True, eq=False)
class SDControlNet:
  """Stable Diffusion whose U-Net is a `ControlledUNet` (see the module docstring).

  Attributes:
    sd: the Stable Diffusion method of the same config (text encoder, autoencoder, latent DDPM,
      prompts, sampler settings, community files); its ``unet`` is the controlled U-Net's base.
    model: the U-Net with its ControlNet (``hint_layout="pixel"``).
    conditioning_scale: k, the configured strength of the control residuals.
    prompt_names: the sampling prompts as written (the translations' names).
  """

  sd: sd_lib.StableDiffusion
  model: ControlledUNet
  conditioning_scale: float = 1.0
  prompt_names: tuple[str, ...] = ()

  def __post_init__(self):
    if self.model.hint_layout != "pixel":
      raise ValueError("diffusion.sd_controlnet uses diffusers' hint layout (hint_layout="
                       f"'pixel'), got {self.model.hint_layout!r}")

  # ------------------------------------------------------------------ shapes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.sd.image_shape

  @property
  def hint_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of a condition image: the latent's size times the hint encoder's factor
    (the image's size, checked by `make_method`), the images' channels."""
    h, w, _ = self.sd.latent_shape
    k = 2 ** (len(tuple(self.model.hint_channels)) - 1)
    return (h * k, w * k, self.image_shape[-1])

  def check_hint(self, hint: jax.Array) -> None:
    """Raises ValueError unless `hint` is ``[B, *hint_shape]`` (shapes are static under jit)."""
    if jnp.ndim(hint) != 4 or tuple(jnp.shape(hint)[1:]) != self.hint_shape:
      want = ", ".join(str(v) for v in self.hint_shape)
      raise ValueError(f"the condition images must be [B, H, W, C] = [B, {want}] (the model's "
                       f"image size and channels), got {tuple(jnp.shape(hint))}; resize them to "
                       f"data.image_size={self.image_shape[0]} (a sample.source folder is "
                       "resized as data.resize says) and give them the images' channels")

  # ------------------------------------------------------------------ pieces

  @property
  def sample_frozen(self) -> dict[str, Any]:
    """Stable Diffusion's sampler arrays (LoRA, token rows) and ``conditioning_scale``."""
    return {**self.sd.sample_frozen,
            "conditioning_scale": np.asarray(self.conditioning_scale, np.float32)}

  def _with_sample_frozen(self, state: TrainState) -> TrainState:
    """`state` with the `sample_frozen` arrays it lacks (a caller that does not pass them as
    ``state.frozen`` entries gets them as constants of its compiled function)."""
    missing = {k: v for k, v in self.sample_frozen.items() if k not in state.frozen}
    return state.replace(frozen={**state.frozen, **missing}) if missing else state

  def sampling_params(self, state: TrainState) -> PyTree:
    """``{"unet", "control"}`` to sample with: the EMA (or weights), the sampler's U-Net LoRA
    folded into the base."""
    return {"unet": self.sd.unet_params(state), "control": state.ema_params["control"]}

  def cond_eps_fn(self, params: PyTree, conditioning_scale: Any = None):
    """``(z_t, t, conditions) -> eps`` of the controlled U-Net (conditions ``context`` and
    ``hint``; its prediction converted to eps), at strength `conditioning_scale` (a float or
    a traced scalar; None: the configured one)."""
    scale = self.conditioning_scale if conditioning_scale is None else conditioning_scale
    base = self.sd.base

    def fn(x, t, conditions):
      model_fn = lambda x_, t_: self.model.apply({"params": params}, x_, t_, conditions,
                                                 train=False, conditioning_scale=scale)
      return to_eps_fn(model_fn, base.schedule, base.prediction)(x, t)
    return fn

  # ------------------------------------------------------------------ sampling

  def sample_latents(self, state: TrainState, rng: jax.Array, tokens: jax.Array,
                     negative: jax.Array, hint: jax.Array, *,
                     guidance_scale: float | jax.Array | None = None,
                     conditioning_scale: float | jax.Array | None = None,
                     x_T: jax.Array | None = None) -> jax.Array:
    """Scaled latents ``[B, h, w, c]`` for prompt tokens ``[B, L]``, negative-prompt tokens
    ``[B, L]`` and condition images ``hint`` ``[B, H, W, C]`` in [-1, 1].

    Args:
      state: the run's state (EMA parameters when it keeps one).
      rng: the sampler's key.
      tokens, negative, hint: the prompts, negative prompts and condition images.
      guidance_scale: w (default: ``sample.guidance_scale``).
      conditioning_scale: k (default: ``state.frozen["conditioning_scale"]`` when the loop put
        it there, else ``controlnet.conditioning_scale``); an array argument, so a new value
        does not recompile.
      x_T: initial latents (default: drawn from `rng`); needs the DDIM sampler.

    Raises:
      ValueError: condition images of the wrong shape (`check_hint`).
    """
    self.check_hint(hint)
    state = self._with_sample_frozen(state)
    w = self.sd.guidance_scale if guidance_scale is None else guidance_scale
    k = state.frozen["conditioning_scale"] if conditioning_scale is None else conditioning_scale
    both = self.sd.context(state.frozen, jnp.concatenate([tokens, negative], axis=0))
    context, null = jnp.split(both, 2, axis=0)
    hint = jnp.asarray(hint, jnp.float32)
    eps_fn = cfg_eps_fn(self.cond_eps_fn(self.sampling_params(state), jnp.asarray(k)),
                        {"context": context, "hint": hint}, {"context": null, "hint": hint}, w)
    base = self.sd.base
    if x_T is None:
      return base.run_sampler(eps_fn, rng, tokens.shape[0])
    if base.sampler != "ddim":
      raise ValueError("initial latents are supported with sample.sampler='ddim'")
    return ddim_sample(eps_fn, base.schedule, rng, x_T.shape, steps=base.sample_steps,
                       eta=base.eta, spacing=base.spacing, clip_denoised=False, x_T=x_T)

  def sample_images(self, state: TrainState, rng: jax.Array, tokens: jax.Array,
                    negative: jax.Array, hint: jax.Array, **kwargs: Any) -> jax.Array:
    """Images ``[B, H, W, C]`` in [-1, 1]: `sample_latents` (same arguments) decoded."""
    z = self.sample_latents(state, rng, tokens, negative, hint, **kwargs)
    return self.sd.decode(state.frozen, z)

  # ------------------------------------------------------------------ Translates

  @property
  def translation_names(self) -> tuple[str, ...]:
    return self.prompt_names or tuple(f"prompt_{i}" for i in range(self.sd.num_classes))

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``source`` = the condition images; ``target`` ``[B, 1, ...]`` = the images when there
    is one prompt (with K prompts no image is the true translation of each)."""
    image, hint = self._fields(batch)
    inputs = {"source": hint}
    if self.sd.num_classes == 1:
      inputs["target"] = image[:, None]
    return inputs

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """Condition images ``[B, H, W, C]`` -> ``[B, K, H, W, C]``: each drawn with each of the
    K prompts (one batched chain of B K samples; guidance and strength as configured)."""
    self.check_hint(source)
    prompts = jnp.asarray(self.sd.prompts)
    b, k = source.shape[0], prompts.shape[0]
    hint = jnp.repeat(source, k, axis=0)                      # (b, k) order
    tokens = jnp.tile(prompts, (b, 1))
    negative = jnp.broadcast_to(jnp.asarray(self.sd.negative), tokens.shape)
    images = self.sample_images(state, rng, tokens, negative, hint)
    return images.reshape(b, k, *images.shape[1:])

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    raise ValueError("a ControlNet samples for condition images: the loop translates held-out "
                     "ones (data.source's 'source' field) or the folder "
                     "--config.sample.source=DIR; in code call translate(state, rng, hints) or "
                     "sample_images(state, rng, tokens, negative, hints)")

  @property
  def sample_tag(self) -> str:
    return f"{self.sd.sample_tag}_k{self.conditioning_scale:g}"

  def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch shapes `init` is built from (a converted run samples without data)."""
    return {"image": jax.ShapeDtypeStruct((batch_size, *self.image_shape), jnp.float32)}

  # ------------------------------------------------------------------ training

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Random networks of the configured shapes (a converted run or ``init_from`` fills them;
    the batch is not read)."""
    del batch
    sd = self.sd
    keys = jax.random.split(rng, 4)
    z = jnp.zeros((1, *sd.latent_shape), jnp.float32)
    tokens = jnp.asarray(sd.empty[None])
    conditions = {"context": jnp.zeros((1, tokens.shape[1], sd.unet.context_dim), jnp.float32),
                  "hint": jnp.zeros((1, *self.hint_shape), jnp.float32)}
    params = self.model.init(keys[0], z, jnp.zeros((1,), jnp.int32), conditions,
                             train=False)["params"]
    text = sd.text_encoder.init(keys[1], tokens)["params"]
    ae = sd.autoencoder.init(keys[2], jnp.zeros((1, *self.image_shape), jnp.float32))["params"]
    return TrainState.create(params=dict(params), tx=sd.base.tx, rng=keys[3],
                             ema_decay=sd.ema_decay,
                             frozen={"text_encoder": text, "autoencoder": ae})

  def _fields(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(image, condition) of a batch (the mapping of the module docstring)."""
    image = batch.get("target", batch.get("image"))
    hint = batch.get("source", batch.get("hint"))
    if image is None or hint is None:
      raise KeyError("diffusion.sd_controlnet trains on condition/image pairs: a source giving "
                     "'source' (the condition) and 'target' (the image), e.g. "
                     "--config.data.source=derived:edges:folder:DIR or paired:DIR, or 'hint' "
                     f"and 'image'; this batch has {sorted(batch)}")
    self.check_hint(hint)
    return image, hint

  def loss_fn(self, params: PyTree, frozen: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the controlled U-Net (module docstring)."""
    image, hint = self._fields(batch)
    noise_rng, drop_rng, caption_rng = jax.random.split(rng, 3)
    captions = {k: batch[k] for k in ("tokens", "label") if k in batch}
    tokens = self.sd.batch_tokens({"image": image, **captions}, caption_rng)
    drop = jax.random.bernoulli(drop_rng, self.sd.base.cond_drop_prob, (tokens.shape[0],))
    tokens = jnp.where(drop[:, None], jnp.asarray(self.sd.empty)[None], tokens)
    conditions = {"context": self.sd.context(frozen, tokens), "hint": hint}
    z = self.sd.latents(frozen, image)
    model_fn = lambda x, t: self.model.apply({"params": params}, x, t, conditions, train=True,
                                             conditioning_scale=1.0)
    base = self.sd.base
    return ddpm_loss(model_fn, base.schedule, z, noise_rng, prediction=base.prediction,
                     loss_type=base.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(lambda p, b, r: self.loss_fn(p, state.frozen, b, r), batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """The loss of held-out pairs (the EMA parameters when the run keeps one)."""
    return self.loss_fn(state.ema_params, state.frozen, batch, rng)[1]


def _check_rules(config: Any) -> None:
  rules = rules_lib.parse_rules(config.optim.rules)
  if rules not in (CONTROL_RULES, FROZEN_RULES):
    raise ValueError("diffusion.sd_controlnet trains the ControlNet only (the U-Net stays "
                     "frozen, as diffusers' train_controlnet): set --config.optim.rules=\"(('"
                     "control/.*', 1.0), ('.*', 'frozen'))\", or \"(('.*', 'frozen'),)\" to "
                     f"sample (got {rules})")


def make_method(config: Any) -> SDControlNet:
  """Translates ``config`` (experiments/sd/controlnet.py) into an `SDControlNet`: Stable
  Diffusion's networks and sampler (`stable_diffusion.make_method`) and the ControlNet of
  ``config.controlnet`` (``hint_channels``, ``hint_range``, ``conditioning_scale``,
  ``guess_mode``).

  Raises:
    ValueError: rules that would train the U-Net, or a hint encoder whose resolution is not
      the images' (the condition images are read at ``data.image_size``).
  """
  _check_rules(config)
  if config.textual_inversion.train_token:
    raise ValueError("textual_inversion.train_token trains token rows of Stable Diffusion "
                     "(experiments/sd/finetune.py:kind=textual_inversion); a ControlNet run "
                     "trains the ControlNet only: sample with the learned file "
                     "(textual_inversion.file)")
  sd = sd_lib.make_method(config)
  c = config.controlnet
  hint_channels = tuple(int(v) for v in c.hint_channels)
  model = ControlledUNet(sd.unet, hint_channels, hint_layout="pixel",
                         hint_range=tuple(float(v) for v in c.hint_range),
                         conditioning_scale=float(c.conditioning_scale),
                         guess_mode=bool(c.guess_mode))
  method = SDControlNet(sd, model, conditioning_scale=float(c.conditioning_scale),
                        prompt_names=sd_lib.split_prompts(config.sample.prompts))
  size, hint = sd.image_shape[0], method.hint_shape[0]
  if hint != size:
    f = size // sd.latent_shape[0]
    raise ValueError(f"controlnet.hint_channels={hint_channels} read condition images of "
                     f"{hint} x {hint} (2^{len(hint_channels) - 1} times the {sd.latent_shape[0]}"
                     f" x {sd.latent_shape[0]} latent), but they are data.image_size={size}: give"
                     f" hint_channels {int(np.log2(f)) + 1} entries (SD: (16, 32, 96, 256))")
  return method
