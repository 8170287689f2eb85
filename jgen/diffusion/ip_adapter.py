"""IP-Adapter (Ye et al. 2023) of the text-conditioned latent diffusion model:
`config.method = "diffusion.ip_adapter"`.

An image prompt beside the text: the reference image's features f (here the frozen first
stage's scaled latents of it, flattened, ``r r z`` numbers: the latent model's own image
encoder) become N context tokens through a trainable projection (IP-Adapter's ImageProjModel:
a Dense layer to N D numbers and a LayerNorm), and every cross-attention block of the U-Net
attends to them through keys and values of its own (decoupled cross-attention,
`jgen.nn.layers.CrossAttnBlock`):

    out = proj_out( Attn(q, K_text, V_text) + lambda Attn(q, K_ip, V_ip) )

Only the projection and the K_ip / V_ip layers train (`IP_RULES`, checked); the base U-Net, its
text encoder and the first stage are the base run's, frozen. Training feeds each image as its
own image prompt with its caption, dropping the text, the image or both with probability
``ip.drop_text`` / ``ip.drop_image`` / ``ip.drop_both`` (0.05 each, the paper's), a dropped
image being zero features (the null image prompt is the projection of zeros, as in the
paper). Sampling guides with ``eps_u + w (eps_c - eps_u)``, eps_u on the empty prompt and the
null image.

The loop treats it as a `Translates` method: the held-out digits are the image prompts,
``--mode=sample`` writes ``reference | sample`` rows with the prompt ``ip.prompt`` ("" = the
image alone), and `python -m jgen.cli.personalization --image_prompt` scores the samples' digit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.nn.ip_adapter import ImageProjection
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState

__all__ = ["IP_RULES", "IPAdapter", "ReferencePrompted", "make_method", "two_condition_drops"]

IP_RULES = rules_lib.parse_rules(((r"unet/.*/(k_ip|v_ip)/.*", 1.0), (r"ip_proj/.*", 1.0),
                                  (".*", "frozen")))


def two_condition_drops(rng: jax.Array, n: int, first: float, second: float, both: float
                        ) -> tuple[jax.Array, jax.Array]:
  """(first dropped [n], second dropped [n]): one uniform per example, split into the three
  cases (first only, second only, both) of probabilities `first`, `second`, `both`."""
  u = jax.random.uniform(rng, (n,))
  a, b, c = first, second, both
  one = (u < a) | ((u >= a + b) & (u < a + b + c))
  two = (u >= a) & (u < a + b + c)
  return one, two


class ReferencePrompted:
  """What the loop needs from a method that samples for reference images and a prompt
  (IP-Adapter, Face0; `Translates`): held-out images are the references. The class provides
  ``ldm``, ``prompt_tokens`` (int32 [L] or None: the empty prompt) and
  ``sample_latents(state, rng, references, tokens)``."""

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    inputs = {"source": batch["image"]}
    if "label" in batch:
      inputs["label"] = batch["label"]
    return inputs

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """[B, H, W, C] references -> [B, 1, H, W, C] samples (with the prompt `prompt_tokens`)."""
    n = source.shape[0]
    row = self.ldm.captions[-1] if self.prompt_tokens is None else self.prompt_tokens
    tokens = jnp.broadcast_to(jnp.asarray(row, jnp.int32), (n, len(row)))
    z = self.sample_latents(state, rng, source, tokens)
    return self.ldm.decode_latents(state.frozen, state.model_state, z)[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class IPAdapter(ReferencePrompted):
  """Decoupled image-prompt cross-attention on a `TextLatentDiffusion` (module docstring).

  Attributes:
    ldm: the text latent diffusion method whose U-Net has ``image_context_dim`` set.
    projection: the image-feature projection.
    drop_text, drop_image, drop_both: training dropout probabilities.
    prompt_tokens: int32 [L], the sampling prompt beside the image ("" = the empty prompt).
  """

  ldm: ldm_lib.TextLatentDiffusion
  projection: ImageProjection
  drop_text: float = 0.05
  drop_image: float = 0.05
  drop_both: float = 0.05
  prompt_tokens: np.ndarray | None = None

  def __post_init__(self):
    if self.ldm.ddpm.model.image_context_dim != self.projection.dim:
      raise ValueError("the U-Net's image_context_dim must be the projection's token size")
    if min(self.drop_text, self.drop_image, self.drop_both) < 0 or (
        self.drop_text + self.drop_image + self.drop_both >= 1):
      raise ValueError("ip.drop_text, drop_image and drop_both must be >= 0 and sum below 1")

  @property
  def translation_names(self) -> tuple[str, ...]:
    return ("image_prompt",)

  def features(self, frozen: Any, model_state: Any, images: jax.Array) -> jax.Array:
    """f of reference images in [-1, 1]: their scaled latents, flattened [B, r r z]."""
    z = self.ldm.latents(frozen, model_state, images)
    return z.reshape(z.shape[0], -1)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    ldm = self.ldm
    ae, z, scale = ldm.first_stage_init(batch["image"])
    encoder_rng, unet_rng, proj_rng, state_rng = jax.random.split(rng, 4)
    tokens = jnp.asarray(ldm.captions[:1])
    encoder = ldm.text_encoder.init(encoder_rng, tokens, ldm.tokenizer.mask(tokens))
    feats = (z[:1] * scale).reshape(1, -1)
    proj = self.projection.init(proj_rng, feats)
    conditions = {"context": ldm.context(encoder, tokens),
                  "image_context": self.projection.apply(proj, feats)}
    unet = ldm.ddpm.model.init(unet_rng, z[:1] * scale, jnp.zeros((1,), jnp.int32),
                               conditions, train=False)
    params = {"unet": unet, "ip_proj": proj}
    frozen = {ldm_lib.FROZEN: ae}
    if ldm.encoder_frozen:
      frozen[ldm_lib.TEXT_FROZEN] = encoder
    else:
      params[ldm_lib.TEXT_FROZEN] = encoder
    return TrainState.create(params=params, tx=ldm.ddpm.tx, rng=state_rng,
                             ema_decay=ldm.ddpm.ema_decay, ema_warmup=ldm.ddpm.ema_warmup,
                             model_state={"scale_factor": scale}, frozen=frozen)

  def _drops(self, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(text dropped [n], image dropped [n]) (`two_condition_drops`)."""
    return two_condition_drops(rng, n, self.drop_text, self.drop_image, self.drop_both)

  def loss_fn(self, params, frozen: Any, model_state: Any, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the latents given (caption, the image itself as image prompt)."""
    ldm = self.ldm
    z = ldm.latents(frozen, model_state, batch["image"])
    caption_rng, drop_rng, dropout_rng, loss_rng = jax.random.split(rng, 4)
    n = z.shape[0]
    tokens = ldm.caption_tokens(ldm._labels(batch), caption_rng, 0.0)  # pylint: disable=protected-access
    no_text, no_image = self._drops(drop_rng, n)
    tokens = jnp.where(no_text[:, None], jnp.asarray(ldm.captions[-1])[None], tokens)
    feats = jnp.where(no_image[:, None], 0.0, self.features(frozen, model_state, batch["image"]))
    context = ldm.context(ldm.encoder_params(params, frozen), tokens, train=True,
                          rng=dropout_rng)
    image_context = self.projection.apply(params["ip_proj"], feats)
    return ldm.ddpm.loss_fn(params["unet"], {"image": z, "context": context,
                                             "image_context": image_context}, loss_rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return ldm_lib.latent_train_step(self.loss_fn, state, batch, rng)

  def sample_latents(self, state: TrainState, rng: jax.Array, reference: jax.Array,
                     tokens: jax.Array) -> jax.Array:
    """Scaled latents for image prompts `reference` [n, H, W, C] and prompt `tokens` [n, L]."""
    ldm = self.ldm
    ema = state.ema_params
    encoder = ldm.encoder_params(ema, state.frozen)
    feats = self.features(state.frozen, state.model_state, reference)
    null_tokens = jnp.broadcast_to(jnp.asarray(ldm.captions[-1]), tokens.shape)
    cond = {"context": ldm.context(encoder, tokens),
            "image_context": self.projection.apply(ema["ip_proj"], feats)}
    null = {"context": ldm.context(encoder, null_tokens),
            "image_context": self.projection.apply(ema["ip_proj"], jnp.zeros_like(feats))}

    def eps_cond_fn(x, t, c):
      return ldm.ddpm.eps_fn(ema["unet"], c, train=False)(x, t)
    eps_fn = cfg_eps_fn(eps_cond_fn, cond, null, ldm.guidance_scale)
    return ldm.ddpm.run_sampler(eps_fn, rng, reference.shape[0])

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    raise ValueError("IP-Adapter samples for image prompts: the loop translates held-out "
                     "images (Translates); call translate(state, rng, images)")

  @property
  def sample_tag(self) -> str:
    return f"ip{self.ldm.ddpm.model.image_scale:g}_" + self.ldm.sample_tag


def make_method(config: Any) -> IPAdapter:
  """The IP-Adapter of an ldm_text_digits-like config: ``init_from`` the first stage (as the
  base run had it), ``init_from.base`` the trained text latent diffusion run (its EMA weights
  into params; its recorded scale factor fixes this one's), and the ``ip`` block."""
  method = ldm_lib.text_method_on_base(config, "diffusion.ip_adapter", IP_RULES,
                                       trains="the image projection and the K_ip / V_ip "
                                       "layers only")
  ip = config.ip
  dim = int(config.ldm.context_dim)
  unet = dataclasses.replace(method.ddpm.model, image_context_dim=dim,
                             image_scale=float(ip.scale))
  ddpm = dataclasses.replace(method.ddpm, model=unet, cond_drop_prob=0.0)
  method = dataclasses.replace(method, ddpm=ddpm, cond_drop_prob=0.0)
  prompt = str(ip.prompt)
  tokens = None
  if prompt:
    method.tokenizer.check([prompt], what="ip.prompt")
    tokens = np.asarray(method.tokenizer.encode([prompt]), np.int32)[0]
  return IPAdapter(ldm=method, projection=ImageProjection(int(ip.num_tokens), dim),
                   drop_text=float(ip.drop_text), drop_image=float(ip.drop_image),
                   drop_both=float(ip.drop_both), prompt_tokens=tokens)
