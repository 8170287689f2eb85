"""Face0 (Valevski et al. 2023, "Face0: Instantaneously Conditioning a Text-to-Image Model on a
Face") of the text latent diffusion model: `config.method = "diffusion.face0"`.

An identity embedding beside the text. A frozen identity encoder (the paper's face recognizer)
embeds the reference image; here it is any jgen classifier run loaded with ``init_from.identity``
(into ``frozen/identity``): a `diffusion.noisy_classifier` run, read at t = 0, its features
being the input of its last layer (``head``: the pooled 64 numbers), L2-normalised as face
embeddings are. The embedding e becomes N tokens of the U-Net's context size through a trained
projection (`jgen.nn.ip_adapter.ImageProjection`: Dense to N D numbers, LayerNorm), appended to
the text context:

    context = [ E_text(prompt) ; P(e) ]        ([B, L + N, D]),

so the U-Net's own cross-attention reads both (no new attention layers). The model is
fine-tuned (the U-Net and the projection; the text encoder and the identity encoder frozen,
`FACE0_RULES`) on (image, caption of its digit, identity of the same image), dropping the text,
the identity or both with probabilities ``face0.drop_text`` / ``drop_id`` / ``drop_both``
(0.05 each; a dropped identity is the projection of zeros, a dropped text the empty prompt).

**Separable guidance** (`jgen.diffusion.guidance.chained_cfg_eps_fn`): with eps(id, txt) the
U-Net on both, eps(id, 0) on the identity and the empty prompt, eps(0, 0) on neither,

    eps = eps(0, 0) + s_id (eps(id, 0) - eps(0, 0)) + s_txt (eps(id, txt) - eps(id, 0)),

``s_id = face0.id_scale``, ``s_txt = face0.text_scale``.

For the loop it is a `Translates` method like the IP-Adapter: held-out images are the
references, ``--mode=sample`` writes ``reference | sample`` rows with the prompt
``face0.prompt``, and `python -m jgen.cli.personalization --identity` scores identity
preservation across prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen import errors
from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion import noisy_classifier as clf_lib
from jgen.diffusion.guidance import chained_cfg_eps_fn
from jgen.nn.classifier import NoisyClassifier
from jgen.diffusion.ip_adapter import ReferencePrompted, two_condition_drops
from jgen.nn.ip_adapter import ImageProjection
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.state import TrainState

__all__ = ["FACE0_RULES", "IDENTITY", "Face0", "classifier_features", "make_method"]

IDENTITY = "identity"
FACE0_RULES = rules_lib.parse_rules(((r"text_encoder/.*", "frozen"),))
_HEAD = ("head",)


def classifier_features(network: NoisyClassifier, params: Any, images: jax.Array) -> jax.Array:
  """The L2-normalised input of the classifier's ``head`` layer at t = 0, [B, F]."""
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.path == _HEAD:
      seen.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    network.apply(params, images, jnp.zeros((images.shape[0],), jnp.int32), train=False)
  f = seen[0].astype(jnp.float32)
  return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-6)


@dataclasses.dataclass(frozen=True, eq=False)
class Face0(ReferencePrompted):
  """Identity tokens appended to the text context of a `TextLatentDiffusion` (module
  docstring).

  Attributes:
    ldm: the base text method (its U-Net, text encoder, first stage and sampler).
    identity: the frozen identity encoder's network.
    projection: the identity embedding's projection to tokens.
    drop_text, drop_id, drop_both: training dropout probabilities.
    id_scale, text_scale: the separable guidance's scales.
    prompt_tokens: int32 [L], the sampling prompt beside the identity ("" = the empty prompt).
  """

  ldm: ldm_lib.TextLatentDiffusion
  identity: NoisyClassifier
  projection: ImageProjection
  drop_text: float = 0.05
  drop_id: float = 0.05
  drop_both: float = 0.05
  id_scale: float = 3.0
  text_scale: float = 3.0
  prompt_tokens: np.ndarray | None = None

  def __post_init__(self):
    if min(self.drop_text, self.drop_id, self.drop_both) < 0 or (
        self.drop_text + self.drop_id + self.drop_both >= 1):
      raise errors.ConfigError("face0.drop_text, drop_id and drop_both must be >= 0 and sum "
                               "below 1")

  @property
  def translation_names(self) -> tuple[str, ...]:
    return ("identity",)

  def embedding(self, frozen: Any, images: jax.Array) -> jax.Array:
    """e [B, F] of reference images in [-1, 1] (the frozen identity encoder)."""
    return classifier_features(self.identity, frozen[IDENTITY], images)

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    ldm = self.ldm
    id_rng, proj_rng, base_rng = jax.random.split(rng, 3)
    base = ldm.init(base_rng, batch)
    images = batch["image"][:1]
    id_params = self.identity.init(id_rng, images, jnp.zeros((1,), jnp.int32), train=False)
    proj = self.projection.init(proj_rng, classifier_features(self.identity, id_params, images))
    return TrainState.create(params={**base.params, "id_proj": proj}, tx=ldm.ddpm.tx,
                             rng=jax.random.fold_in(rng, 1), ema_decay=ldm.ddpm.ema_decay,
                             ema_warmup=ldm.ddpm.ema_warmup, model_state=base.model_state,
                             frozen={**base.frozen, IDENTITY: id_params})

  def _drops(self, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(text dropped [n], identity dropped [n]) (`two_condition_drops`)."""
    return two_condition_drops(rng, n, self.drop_text, self.drop_id, self.drop_both)

  def context(self, params: Any, frozen: Any, tokens: jax.Array, embedding: jax.Array
              ) -> jax.Array:
    """[text context ; identity tokens] [B, L + N, D]."""
    text = self.ldm.context(self.ldm.encoder_params(params, frozen), tokens)
    return jnp.concatenate([text, self.projection.apply(params["id_proj"], embedding)], axis=1)

  def loss_fn(self, params, frozen: Any, model_state: Any, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the latents given (caption, the image's own identity), with drops."""
    ldm = self.ldm
    z = ldm.latents(frozen, model_state, batch["image"])
    caption_rng, drop_rng, loss_rng = jax.random.split(rng, 3)
    tokens = ldm.caption_tokens(ldm._labels(batch), caption_rng, 0.0)  # pylint: disable=protected-access
    no_text, no_id = self._drops(drop_rng, z.shape[0])
    tokens = jnp.where(no_text[:, None], jnp.asarray(ldm.captions[-1])[None], tokens)
    e = jnp.where(no_id[:, None], 0.0, self.embedding(frozen, batch["image"]))
    context = self.context(params, frozen, tokens, e)
    return ldm.ddpm.loss_fn(params["unet"], {"image": z, "context": context}, loss_rng)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return ldm_lib.latent_train_step(self.loss_fn, state, batch, rng)

  def sample_latents(self, state: TrainState, rng: jax.Array, reference: jax.Array,
                     tokens: jax.Array, *, id_scale: float | None = None,
                     text_scale: float | None = None) -> jax.Array:
    """Scaled latents for references [n, H, W, C] and prompt tokens [n, L], separable
    guidance (module docstring; the scales default to the configured ones)."""
    ldm = self.ldm
    ema = state.ema_params
    e = self.embedding(state.frozen, reference)
    empty = jnp.broadcast_to(jnp.asarray(ldm.captions[-1]), tokens.shape)
    chain = [{"context": self.context(ema, state.frozen, empty, jnp.zeros_like(e))},
             {"context": self.context(ema, state.frozen, empty, e)},
             {"context": self.context(ema, state.frozen, tokens, e)}]

    def eps_cond_fn(x, t, c):
      return ldm.ddpm.eps_fn(ema["unet"], c, train=False)(x, t)
    eps_fn = chained_cfg_eps_fn(eps_cond_fn, chain, (
        self.id_scale if id_scale is None else id_scale,
        self.text_scale if text_scale is None else text_scale))
    return ldm.ddpm.run_sampler(eps_fn, rng, reference.shape[0])

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    raise errors.ConfigError("Face0 samples for reference images: the loop translates "
                             "held-out images (Translates); call translate(state, rng, images)")

  @property
  def sample_tag(self) -> str:
    return f"face0_id{self.id_scale:g}_txt{self.text_scale:g}_" + self.ldm.sample_tag


def make_method(config: Any) -> Face0:
  """Face0 of an ldm_text_digits-like config: ``init_from`` the first stage, ``init_from.base``
  the trained text run, ``init_from.identity`` a `diffusion.noisy_classifier` run (its
  architecture read from its record), and the ``face0`` block."""
  method = ldm_lib.text_method_on_base(config, "diffusion.face0", FACE0_RULES,
                                       trains="the U-Net and the identity projection, the "
                                       "text encoder frozen")
  spec = init_from_lib.frozen_load(
      config, IDENTITY,
      needs="Face0 embeds references with a frozen identity encoder: set "
            "--config.init_from.identity.workdir=<a diffusion.noisy_classifier run>",
      hint=" (experiments/personalize/face0_digits.py sets it)")
  id_config = run_record.latest_config(spec.workdir)
  if id_config.method != "diffusion.noisy_classifier":
    raise errors.ConfigError(f"init_from.identity.workdir={spec.workdir} is a "
                             f"{id_config.method} run; Face0 reads the features of a "
                             "diffusion.noisy_classifier run")
  size, channels = config.data.image_size, config.data.channels
  if (size, channels) != (id_config.data.image_size, id_config.data.channels):
    raise errors.ConfigError(f"the identity encoder takes {id_config.data.image_size}x"
                             f"{id_config.data.image_size}x{id_config.data.channels} images; "
                             f"the data are {size}x{size}x{channels}")
  f = config.face0
  method = dataclasses.replace(method, ddpm=dataclasses.replace(method.ddpm, cond_drop_prob=0.0),
                               cond_drop_prob=0.0)
  prompt = str(f.prompt)
  tokens = None
  if prompt:
    method.tokenizer.check([prompt], what="face0.prompt")
    tokens = np.asarray(method.tokenizer.encode([prompt]), np.int32)[0]
  return Face0(ldm=method, identity=clf_lib.make_classifier(id_config.model),
               projection=ImageProjection(int(f.num_tokens), int(config.ldm.context_dim)),
               drop_text=float(f.drop_text), drop_id=float(f.drop_id),
               drop_both=float(f.drop_both), id_scale=float(f.id_scale),
               text_scale=float(f.text_scale), prompt_tokens=tokens)
