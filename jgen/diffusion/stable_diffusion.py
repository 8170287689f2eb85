"""Stable Diffusion (Rombach et al. 2022) as a method of the one loop:
`config.method = "diffusion.stable_diffusion"`, experiments/sd/txt2img.py.

Three networks, laid out as a converted checkpoint brings them (`python -m jgen.convert`):

* the U-Net ``params["unet"]`` (`jgen.nn.unet.UNet` with ``attention="transformer"``), the
  only trained part;
* the CLIP text encoder ``frozen["text_encoder"]`` (`jgen.nn.clip.CLIPTextModel`): the
  context ``c = CLIP(tokens)`` at layer ``text.output_layer`` (-1: the last, SD 1.x; -2: the
  penultimate, SD 2.x), ``[B, 77, D]``;
* the KL autoencoder ``frozen["autoencoder"]`` (`jgen.nn.ldm_autoencoder`): latents
  ``z = s E(x)`` with ``s = autoencoder.scaling_factor`` (0.18215 in SD 1.x / 2.x), images
  ``x = D(z / s)``.

**Sampling** (``--mode=sample``) is text-to-image with classifier-free guidance against a
negative prompt (empty by default, as in diffusers):
``eps = eps(z_t, c_neg) + w (eps(z_t, c) - eps(z_t, c_neg))``, ``w = sample.guidance_scale``
(7.5), with any of jgen's samplers (`jgen.diffusion.sampler_table.SAMPLERS`: DDIM, DPM-Solver++(2M),
Euler, Heun, ancestral) on the ``diffusion`` schedule (SD: ``scaled_linear``, beta 0.00085 ..
0.012, T = 1000) and the ``diffusion.prediction`` (eps; v for SD 2.x 768). Latents are never
clipped. The prompts (``sample.prompts``, comma-free text separated by ``|``) are tokenized
once when the method is made; the loop's labels select them: the method is `Conditional` with
one "class" per prompt, so ``sample.labels`` picks prompts by index and the samples ``.npz``
records which prompt each image shows.

**Community files at sampling.** ``lora.file`` (a peft/diffusers or kohya LoRA,
`jgen.convert.lora`) is folded into the U-Net and text encoder as W + lora.scale (alpha / r) A B
(diffusers' ``lora_scale``); ``textual_inversion.file`` (diffusers ``learned_embeds`` or an
A1111 ``.pt``, `jgen.convert.textual_inversion`) adds its tokens to the tokenizer and its rows to
the token embedding table, and prompts may use them. Both reach the jitted sampler as arrays
(`sample_frozen`), never as compile-time constants, and leave the checkpoint untouched.

**Textual inversion training** (``textual_inversion.train_token``, experiments/sd/finetune.py
``:kind=textual_inversion``): the token (``num_vectors`` of them: ``T``, ``T_1``, ...) joins the
tokenizer, and its embedding rows are ``e_init + delta``: the frozen row of
``textual_inversion.init_token`` plus a learned offset ``params["token_offsets"]`` ``[n, D]``
(zero at the start, so "T" begins as the init word, as diffusers initialises it; the offset
keeps the frozen table out of the trained parameters). Only the offsets train (rules).

**Training** (fine-tuning through the loop; rules, ``init_from`` and LoRA as for any method):
the DDPM loss of the configured prediction on ``z = s E(x)`` (the posterior mean) with the
caption's context, the caption replaced by the empty prompt with probability
``diffusion.cond_drop_prob``. A batch's caption is ``tokens`` (int32 ``[B, 77]``) when the data
source gives them (``captioned:`` folders), else row ``label`` of the table of
``text.captions`` (one caption per class, ``|``-separated), else one of those captions drawn per
example (templates, as textual inversion's "a photo of a T").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.nn.ldm_autoencoder import LDMAutoencoder
from jgen.convert import lora as lora_files
from jgen.convert import textual_inversion
from jgen.nn.ldm_networks import LDMDecoder, LDMEncoder
from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.diffusion.parameterization import to_eps_fn
from jgen.diffusion.samplers import ddim_sample
from jgen.nn.clip import CLIPTextModel
from jgen.nn.clip_tokenizer import CLIPTokenizer
from jgen.nn.dtypes import compute_dtype
from jgen.nn.lora import Lora
from jgen.nn.unet import UNet
from jgen.ops.schedules import schedule_from_config
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["StableDiffusion", "make_method", "make_tokenizer", "split_prompts"]

PyTree = Any


def split_prompts(spec: str) -> tuple[str, ...]:
  """``"a cat|a dog"`` -> ``("a cat", "a dog")`` (``|`` separates: prompts contain commas)."""
  return tuple(p.strip() for p in str(spec).split("|")) if str(spec).strip() else ()


@dataclasses.dataclass(frozen=True, eq=False)
class StableDiffusion:
  """Text-to-image latent diffusion with a CLIP text encoder (see the module docstring).

  Attributes:
    unet: the denoiser, cross-attending to the text context.
    text_encoder: the CLIP text tower.
    autoencoder: the KL first stage.
    base: the latent DDPM (schedule, prediction, sampler settings; image_shape = latent shape).
    prompts: int32 ``[K, L]`` tokens of the sampling prompts.
    negative: int32 ``[L]`` tokens of the negative prompt.
    captions: int32 ``[C, L]`` tokens of the training captions (row per label).
    empty: int32 ``[L]`` tokens of the empty prompt (the null condition of training).
    text_layer: the text encoder's output layer (-1: the last; -2: the penultimate).
    guidance_scale: w.
    image_shape: (H, W, C) of the images.
    ema_decay: EMA decay of the U-Net (None: no EMA; sampling uses the weights).
    lora_unet, lora_text: the `Lora` of a community LoRA file's U-Net / text-encoder part.
    extras: the sampler's arrays (`sample_frozen`): ``lora_unet`` / ``lora_text`` adapters and
      ``token_rows`` ``[n, D]``, the textual-inversion vectors of token ids ``vocab_size ..``.
    train_init_ids: textual-inversion training: the init token's id for each trained vector
      (their ids follow the vocabulary and the file's rows).
  """

  unet: UNet
  text_encoder: CLIPTextModel
  autoencoder: LDMAutoencoder
  base: ddpm_lib.DDPM
  prompts: np.ndarray
  negative: np.ndarray
  captions: np.ndarray
  empty: np.ndarray
  text_layer: int
  guidance_scale: float
  image_shape: tuple[int, int, int]
  ema_decay: float | None = None
  lora_unet: Lora | None = None
  lora_text: Lora | None = None
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)
  train_init_ids: tuple[int, ...] = ()

  @property
  def num_classes(self) -> int:
    """The sampling prompts, one "class" each (the loop's labels select them)."""
    return int(self.prompts.shape[0])

  @property
  def scale(self) -> float:
    return float(self.autoencoder.scaling_factor)

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return self.base.image_shape

  # ------------------------------------------------------------------ pieces

  @property
  def sample_frozen(self) -> dict[str, Any]:
    """Arrays the sampler needs beyond the checkpoint (LoRA adapters, new token rows)."""
    return dict(self.extras)

  def context(self, frozen: PyTree, tokens: jax.Array, params: PyTree | None = None
              ) -> jax.Array:
    """The U-Net's context ``[B, L, D]`` of token ids ``[B, L]``: with the sampler's
    textual-inversion rows and text-encoder LoRA when `frozen` carries them, and the trained
    token rows (``table[init] + params["token_offsets"]``) when `params` has them."""
    text, module = frozen["text_encoder"], self.text_encoder
    if "lora_text" in frozen:
      text = self.lora_text.merge(text, frozen["lora_text"])
    table = text["token_embedding"]["embedding"]
    rows = [frozen["token_rows"].astype(table.dtype)] if "token_rows" in frozen else []
    if params is not None and "token_offsets" in params:
      init = table[jnp.asarray(self.train_init_ids)]
      rows.append(init + params["token_offsets"].astype(table.dtype))
    if rows:
      rows = jnp.concatenate(rows)
      text = {**text, "token_embedding": {"embedding": jnp.concatenate([table, rows])}}
      module = module.clone(vocab_size=module.vocab_size + rows.shape[0])
    return module.apply({"params": text}, tokens,
                        output_layer=self.text_layer).astype(jnp.float32)

  def unet_params(self, state: TrainState) -> PyTree:
    """The U-Net's sampling parameters (with the sampler's LoRA when `state.frozen` has it)."""
    params = state.ema_params["unet"]
    if "lora_unet" in state.frozen:
      params = self.lora_unet.merge(params, state.frozen["lora_unet"])
    return params

  def latents(self, frozen: PyTree, images: jax.Array) -> jax.Array:
    """``s E(x)``: the scaled posterior mean of images in [-1, 1]."""
    ae = self.autoencoder
    z = ae.apply({"params": frozen["autoencoder"]}, images, method=ae.encode)
    return (z - ae.shift_factor) * self.scale

  def decode(self, frozen: PyTree, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] (clipped) of scaled latents."""
    ae = self.autoencoder
    x = ae.apply({"params": frozen["autoencoder"]}, z / self.scale + ae.shift_factor,
                 method=ae.decode)
    return jnp.clip(x, -1.0, 1.0)

  def cond_eps_fn(self, unet_params: PyTree):
    """``(z_t, t, conditions) -> eps`` of the U-Net (its prediction converted to eps)."""
    def fn(x, t, conditions):
      model_fn = lambda x_, t_: self.unet.apply({"params": unet_params}, x_, t_, conditions,
                                                train=False)
      return to_eps_fn(model_fn, self.base.schedule, self.base.prediction)(x, t)
    return fn

  # ------------------------------------------------------------------ the method contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Random networks of the configured shapes (a converted or ``init_from`` run fills them)."""
    del batch
    keys = jax.random.split(rng, 4)
    h, w, c = self.image_shape
    z = jnp.zeros((1, *self.latent_shape), jnp.float32)
    tokens = jnp.asarray(self.empty[None])
    ctx = jnp.zeros((1, tokens.shape[1], self.unet.context_dim), jnp.float32)
    unet = self.unet.init(keys[0], z, jnp.zeros((1,), jnp.int32), {"context": ctx},
                          train=False)["params"]
    text = self.text_encoder.init(keys[1], tokens)["params"]
    ae = self.autoencoder.init(keys[2], jnp.zeros((1, h, w, c), jnp.float32))["params"]
    params = {"unet": unet}
    if self.train_init_ids:
      params["token_offsets"] = jnp.zeros((len(self.train_init_ids), text["token_embedding"][
          "embedding"].shape[1]), jnp.float32)
    return TrainState.create(params=params, tx=self.base.tx, rng=keys[3],
                             ema_decay=self.ema_decay,
                             frozen={"text_encoder": text, "autoencoder": ae})

  def batch_tokens(self, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
    """The caption tokens of a batch: its ``tokens``; else the caption row of its label; else
    a caption drawn per example from the ``text.captions`` templates."""
    if "tokens" in batch:
      return batch["tokens"]
    table = jnp.asarray(self.captions)
    if "label" in batch and table.shape[0] > 1:
      return table[batch["label"]]
    pick = jax.random.randint(rng, (batch["image"].shape[0],), 0, table.shape[0])
    return table[pick]

  def loss_fn(self, params: PyTree, frozen: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    noise_rng, drop_rng, caption_rng = jax.random.split(rng, 3)
    tokens = self.batch_tokens(batch, caption_rng)
    drop = jax.random.bernoulli(drop_rng, self.base.cond_drop_prob, (tokens.shape[0],))
    tokens = jnp.where(drop[:, None], jnp.asarray(self.empty)[None], tokens)
    context = self.context(frozen, tokens, params)
    z = self.latents(frozen, batch["image"])
    model_fn = lambda x, t: self.unet.apply({"params": params["unet"]}, x, t,
                                            {"context": context}, train=True)
    return ddpm_loss(model_fn, self.base.schedule, z, noise_rng,
                     prediction=self.base.prediction, loss_type=self.base.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(lambda p, b, r: self.loss_fn(p, state.frozen, b, r), batch, rng)

  def sample_latents(self, state: TrainState, rng: jax.Array, tokens: jax.Array,
                     negative: jax.Array, *, guidance_scale: float | None = None,
                     x_T: jax.Array | None = None) -> jax.Array:
    """Scaled latents ``[B, h, w, c]`` for prompt tokens ``[B, L]`` (negative ``[B, L]``).

    Args:
      state: the run's state (sampling parameters: the EMA when there is one).
      rng: the sampler's key.
      tokens, negative: prompt and negative-prompt token ids.
      guidance_scale: w (default: the configured one).
      x_T: initial latents ``[B, h, w, c]`` (default: drawn from `rng`).
    """
    w = self.guidance_scale if guidance_scale is None else guidance_scale
    both = self.context(state.frozen, jnp.concatenate([tokens, negative], axis=0),
                        state.ema_params)
    context, null = jnp.split(both, 2, axis=0)
    eps_fn = cfg_eps_fn(self.cond_eps_fn(self.unet_params(state)), {"context": context},
                        {"context": null}, w)
    if x_T is None:
      return self.base.run_sampler(eps_fn, rng, tokens.shape[0])
    return _run_from(self.base, eps_fn, rng, x_T)

  def sample_tokens(self, state: TrainState, rng: jax.Array, tokens: jax.Array,
                    negative: jax.Array, *, guidance_scale: float | None = None,
                    x_T: jax.Array | None = None) -> jax.Array:
    """Images ``[B, H, W, C]`` in [-1, 1]: `sample_latents` decoded by the autoencoder."""
    z = self.sample_latents(state, rng, tokens, negative, guidance_scale=guidance_scale, x_T=x_T)
    return self.decode(state.frozen, z)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images of the prompts ``conditions["label"]`` (indices into the prompts)."""
    tokens = jnp.asarray(self.prompts)[conditions["label"][:n]]
    negative = jnp.broadcast_to(jnp.asarray(self.negative), tokens.shape)
    return self.sample_tokens(state, rng, tokens, negative)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images, the prompts in turn."""
    labels = jnp.arange(n, dtype=jnp.int32) % self.num_classes
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    return f"{self.base.sample_tag}_w{self.guidance_scale:g}"

  def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch shapes of this method (sampling a converted model needs no data source)."""
    return {"image": jax.ShapeDtypeStruct((batch_size, *self.image_shape), jnp.float32)}


def _run_from(base: ddpm_lib.DDPM, eps_fn, rng: jax.Array, x_T: jax.Array) -> jax.Array:
  """`base`'s DDIM chain from given initial latents (parity checks against other code)."""
  if base.sampler != "ddim":
    raise ValueError("initial latents are supported with sample.sampler='ddim'")
  return ddim_sample(eps_fn, base.schedule, rng, x_T.shape, steps=base.sample_steps,
                     eta=base.eta, spacing=base.spacing, clip_denoised=False, x_T=x_T)


def make_tokenizer(text_config: Any) -> CLIPTokenizer:
  """The tokenizer of ``config.text``: a pipeline's ``tokenizer/`` folder (``text.tokenizer``
  a path) or CLIP's vocabulary from the open_clip wheel (``"open_clip"``), padding with
  ``text.pad_token``."""
  return CLIPTokenizer.from_spec(str(text_config.tokenizer), pad_token=text_config.pad_token)


def _community_files(config: Any, unet: UNet, text: CLIPTextModel, tokenizer: CLIPTokenizer,
                     new_tokens: Mapping[str, np.ndarray] | None = None
                     ) -> tuple[dict[str, Any], dict[str, Lora], Any, tuple[int, ...]]:
  """The sampler's arrays of ``lora.file``, ``textual_inversion.file`` and `new_tokens`, their
  `Lora`s, the prompt expansion of multi-vector tokens, and the init ids of a trained token
  (the tokenizer gains the new tokens: the file's, then `new_tokens`, then the trained one's).

  Raises:
    ValueError: a file that does not fit these networks (`jgen.convert.lora.LoraFormatError`,
      an embedding of another width or a token the tokenizer has).
  """
  extras: dict[str, Any] = {}
  loras: dict[str, Lora] = {}
  lora_cfg = config.lora
  if lora_cfg.file:
    lora_file = lora_files.read_lora(lora_cfg.file)
    scale = float(lora_cfg.scale)
    shapes = {
        "unet": lambda: unet.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)),
                                  {"context": jnp.zeros((1, 1, unet.context_dim))},
                                  train=False)["params"],
        "text_encoder": lambda: text.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))[
            "params"]}
    for part, init in shapes.items():
      if not lora_file.component(part):
        continue
      adapters, lora = lora_files.lora_to_jgen_adapters(lora_file, jax.eval_shape(init),
                                                        component=part)
      extras[f"lora_{'unet' if part == 'unet' else 'text'}"] = jax.tree.map(
          lambda x: np.asarray(x, np.float32), adapters)
      loras[part] = dataclasses.replace(lora, alpha=lora.scale * lora.rank * scale)
  embeddings: dict[str, np.ndarray] = {}
  ti_cfg = config.textual_inversion
  sources = []   # (what, {token: rows})
  if ti_cfg.file:
    sources.append(("textual_inversion.file",
                    textual_inversion.read_embedding(ti_cfg.file, token=ti_cfg.token or None)))
  if new_tokens:
    sources.append(("new token", dict(new_tokens)))
  rows = []
  for what, tokens in sources:
    for token, vectors in tokens.items():
      vectors = np.atleast_2d(np.asarray(vectors, np.float32))
      if vectors.shape[1] != text.hidden_size:
        raise ValueError(f"{what}: {token!r} has width {vectors.shape[1]}, the "
                         f"text encoder {text.hidden_size} (SD 1.x is 768 wide, SD 2.x 1024)")
      names = textual_inversion.vector_tokens(token, vectors.shape[0])
      ids = tokenizer.add_tokens(names)
      if ids != list(range(text.vocab_size + sum(len(r) for r in rows),
                           text.vocab_size + sum(len(r) for r in rows) + len(names))):
        raise ValueError(f"{what}: tokens {names} did not take new ids after "
                         f"the {text.vocab_size}-token vocabulary (are they already in it?)")
      rows.append(vectors)
      embeddings[token] = vectors
  if rows:
    extras["token_rows"] = np.concatenate(rows)
  train = ti_cfg.train_token
  init_ids: tuple[int, ...] = ()
  if train:
    n = int(ti_cfg.num_vectors)
    init = tokenizer.encode(ti_cfg.init_token, add_special_tokens=False)
    if len(init) != 1:
      raise ValueError(f"textual_inversion.init_token={ti_cfg.init_token!r} must be "
                       f"one token of the vocabulary (it is {len(init)}); pick a single word")
    names = textual_inversion.vector_tokens(train, n)
    first = text.vocab_size + len(extras.get("token_rows", ()))
    if tokenizer.add_tokens(names) != list(range(first, first + n)):
      raise ValueError(f"textual_inversion.train_token={train!r} is already a token: pick a "
                       "new placeholder such as '<my-cat>'")
    embeddings[train] = np.zeros((n, text.hidden_size), np.float32)  # expands "T" to n tokens
    init_ids = tuple(init) * n
  return (extras, loras,
          lambda prompt: textual_inversion.expand_prompt(prompt, embeddings), init_ids)


def make_method(config: Any, *, new_tokens: Mapping[str, np.ndarray] | None = None
                ) -> StableDiffusion:
  """Translates ``config`` (experiments/sd/txt2img.py) into a `StableDiffusion`.

  Args:
    config: the experiment config.
    new_tokens: more tokens for prompts, ``{token: rows [n, D]}`` (e.g. Perfusion concepts'
      words), added as ``textual_inversion.file``'s are (after the file's tokens): they reach
      the sampler as `sample_frozen` ``token_rows``.
  """
  m, t, a, s = config.model, config.text, config.autoencoder, config.sample
  dtype = compute_dtype(m.dtype)
  unet = UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=(), attn_levels=tuple(m.attn_levels), dropout=m.dropout,
              num_groups=m.num_groups, norm_eps=m.norm_eps,
              downsample_padding=m.downsample_padding, flip_sin_to_cos=m.flip_sin_to_cos,
              freq_shift=m.freq_shift, context_dim=m.context_dim, attention="transformer",
              transformer_heads=(tuple(m.transformer_heads)
                                 if not isinstance(m.transformer_heads, int)
                                 else m.transformer_heads),
              transformer_depth=m.transformer_depth, out_ch=m.out_ch, dtype=dtype)
  text = CLIPTextModel(vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                       intermediate_size=t.intermediate_size,
                       num_hidden_layers=t.num_hidden_layers,
                       num_attention_heads=t.num_attention_heads, hidden_act=t.hidden_act,
                       max_position_embeddings=t.max_length, dtype=dtype)
  shared = dict(ch=a.ch, ch_mult=tuple(a.ch_mult), num_res_blocks=a.num_res_blocks,
                attn_resolutions=(), num_groups=a.num_groups, dropout=0.0, dtype=dtype)
  ae = LDMAutoencoder(encoder=LDMEncoder(out_channels=2 * a.latent_channels, **shared),
                      decoder=LDMDecoder(out_channels=config.data.channels, **shared),
                      bottleneck="kl", scaling_factor=a.scaling_factor)
  tokenizer = make_tokenizer(t)
  if tokenizer.max_length != t.max_length:
    raise ValueError(f"text.max_length={t.max_length} but the tokenizer pads to "
                     f"{tokenizer.max_length}")
  extras, loras, expand, init_ids = _community_files(config, unet, text, tokenizer,
                                                      new_tokens)
  prompts = tuple(expand(p) for p in split_prompts(s.prompts))
  if not prompts:
    raise ValueError("sample.prompts is empty: give one or more prompts separated by '|', e.g. "
                     "--config.sample.prompts='a photo of an astronaut riding a horse'")
  captions = split_prompts(t.captions) or ("",)
  train_token = config.textual_inversion.train_token
  if train_token:  # templates name the trained token "{}"
    captions = tuple(c.replace("{}", train_token) for c in captions)
  size = config.data.image_size
  f = 2 ** (len(a.ch_mult) - 1)
  if size % (f * 2 ** (len(m.ch_mult) - 1)):
    raise ValueError(f"data.image_size={size} must be divisible by {f * 2**(len(m.ch_mult) - 1)}"
                     " (the autoencoder's and the U-Net's downsampling)")
  latent_shape = (size // f, size // f, a.latent_channels)
  tx = make_optimizer(config.optim, total_steps=config.train.num_steps)
  d = config.diffusion
  base = ddpm_lib.DDPM(model=unet, schedule=schedule_from_config(d), tx=tx,
                       image_shape=latent_shape, prediction=d.prediction,
                       loss_type=d.loss_type, sampler=s.sampler,
                       sample_steps=s.steps, eta=s.eta, spacing=s.spacing,
                       dpm_spacing=s.dpm_spacing, rho=s.rho,
                       clip_denoised=False, cond_drop_prob=d.cond_drop_prob)
  ema = float(config.train.ema_decay or 0.0)
  return StableDiffusion(unet=unet, text_encoder=text, autoencoder=ae, base=base,
                         prompts=tokenizer(list(prompts)),
                         negative=tokenizer([expand(s.negative_prompt)])[0],
                         captions=tokenizer([expand(c) for c in captions]),
                         empty=tokenizer([""])[0],
                         text_layer=int(t.output_layer),
                         guidance_scale=float(s.guidance_scale),
                         image_shape=(size, size, config.data.channels),
                         ema_decay=ema if ema > 0 else None, lora_unet=loras.get("unet"),
                         lora_text=loras.get("text_encoder"), extras=extras,
                         train_init_ids=init_ids)
