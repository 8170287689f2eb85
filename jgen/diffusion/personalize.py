"""A subject bound to a new identifier label of a class-conditional DDPM: DreamBooth and
textual inversion.

The base is a trained `ConditionalDDPM` over K classes (label K is its null class), loaded
through ``init_from``. Personalization adds one label, the identifier [V], for "a [V] c": the
subject (a few images, e.g. five MNIST 7s in their own thin, sharp style) of class c. As in a
text model, where the prompt holds the class noun's token and the identifier's token, the
identifier's label embedding is the class's row plus an offset of its own,

    e_[V] = E[c] + o,        o = 0 at the start (so [V] starts as plain c),

and the model is a `ConditionalDDPM` over K + 1 labels: 0..K-1 as before, K = [V], K + 1 the
null class (the base's null row). The stored parameters are the base U-Net's plus
``identifier/offset`` [4 ch]; `IdentifierView` (the state's view) builds the K + 2 row table.

**DreamBooth** (Ruiz et al. 2023, eq. 2) fine-tunes the model (all of it, or LoRA adapters with
``config.lora``) on the subject images x with the identifier, plus the prior-preservation loss
on class images x' that the frozen base generated for c before training:

    L = E || eps - eps_theta(x_t, t, [V]) ||^2  +  lambda E || eps' - eps_theta(x'_t', t', c) ||^2

(lambda = ``personalize.prior_weight``, 1 in the paper; 0 turns prior preservation off). The
class images are made once by `prepare` and cached in ``workdir/prior``; they enter the step
as ``state.frozen["prior"]``.

**Textual inversion** (Gal et al. 2022) is the first term alone with only ``identifier/.*``
trainable: the offset o is the learned embedding v* (initialised at the coarse class word c).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.losses import ddpm_loss
from jgen.train import adapters
from jgen.train import cache
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState
from jgen.train.writers import to_uint8

log = logging.getLogger("jgen")

__all__ = ["IDENTIFIER", "IdentifierView", "Personalized", "TEXTUAL_INVERSION_RULES",
           "make_personalized"]

IDENTIFIER = "identifier"
TEXTUAL_INVERSION_RULES = rules_lib.parse_rules(((f"{IDENTIFIER}/.*", 1.0), (".*", "frozen")))


@dataclasses.dataclass(frozen=True)
class IdentifierView:
  """`TrainState.view`: the stored base tree + ``identifier/offset`` -> the K + 1 class model.

  Attributes:
    num_classes: K, the base model's classes.
    subject_class: c, the class the identifier's row starts from.
  """

  num_classes: int
  subject_class: int

  def __call__(self, stored: Any) -> Any:
    stored = dict(stored)
    offset = stored.pop(IDENTIFIER)["offset"]
    net = stored["params"]
    table = net["label_emb"]["embedding"]  # [K + 1, d]; row K is the base's null class
    k = self.num_classes
    row = table[self.subject_class] + offset.astype(table.dtype)
    table = jnp.concatenate([table[:k], row[None], table[k:]], axis=0)
    return {**stored, "params": {**net, "label_emb": {"embedding": table}}}


@dataclasses.dataclass(frozen=True, eq=False)
class Personalized:
  """DreamBooth (``prior_weight`` >= 0, the model trains) or textual inversion (rules train
  ``identifier/.*`` only, ``prior_weight`` = 0) of a class-conditional DDPM.

  Attributes:
    base: the base model's method (K classes): its init gives the stored tree, its sampler the
      class images.
    model: the same U-Net over K + 1 classes (the identifier is label K): train and sample.
    subject_class: c.
    prior_weight: lambda of the prior-preservation loss (0: none, no class images).
    num_class_images: how many class images the base generates for the prior loss.
    prior_batch: class images per step (0: as many as the subject batch).
    class_seed: the key of the class images.
    base_load: the ``init_from`` load of the base run (its fingerprint names the cache).
    class_images: float32 [N, H, W, C] in [-1, 1] once `prepare` has made or read them.
  """

  base: ddpm_lib.ConditionalDDPM
  model: ddpm_lib.ConditionalDDPM
  subject_class: int
  prior_weight: float = 1.0
  num_class_images: int = 100
  prior_batch: int = 0
  class_seed: int = 0
  base_load: init_from_lib.InitFrom | None = None
  class_images: np.ndarray | None = None

  def __post_init__(self):
    k = self.base.model.num_classes
    if k < 1:
      raise ValueError("personalization needs a class-conditional base (model.num_classes > 0)")
    if self.model.model.num_classes != k + 1:
      raise ValueError(f"the personalized U-Net must have {k + 1} classes (the base's {k} and "
                       f"the identifier), got {self.model.model.num_classes}")
    if not 0 <= self.subject_class < k:
      raise ValueError(f"personalize.subject_class={self.subject_class} must be a class of the "
                       f"base, 0..{k - 1}")
    if self.prior_weight < 0:
      raise ValueError(f"personalize.prior_weight must be >= 0, got {self.prior_weight}")
    if self.prior_weight > 0 and self.num_class_images < 1:
      raise ValueError("prior preservation needs personalize.num_class_images >= 1")

  @property
  def identifier(self) -> int:
    """The identifier's label, K."""
    return self.base.model.num_classes

  @property
  def num_classes(self) -> int:
    """K + 1: the base's classes and the identifier (the loop's `Conditional`)."""
    return self.identifier + 1

  @property
  def view(self) -> IdentifierView:
    return IdentifierView(self.base.model.num_classes, self.subject_class)

  # ------------------------------------------------------------------ class images

  def _prior_shape(self) -> tuple[int, ...]:
    return (self.num_class_images, *self.base.image_shape)

  def generate_class_images(self, base_params: Any) -> np.ndarray:
    """`num_class_images` samples of class c from the base (its sampler and guidance), float32
    in [-1, 1], quantized to uint8 levels like real data."""
    chunk = min(self.num_class_images, 100)

    @jax.jit
    def draw(params, rng):
      labels = jnp.full((chunk,), self.subject_class, jnp.int32)
      fn = self.base.guided_sampling_fn(params, {"label": labels})
      return self.base.run_sampler(fn, rng, chunk)

    key, out = jax.random.key(self.class_seed), []
    for i in range(-(-self.num_class_images // chunk)):
      out.append(np.asarray(draw(base_params, jax.random.fold_in(key, i))))
    images = to_uint8(np.concatenate(out)[:self.num_class_images])
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)

  def prepare(self, workdir: str) -> "Personalized":
    """The method with its class images: read from ``workdir/prior`` if there (made by the same
    base checkpoint), else generated by the base's EMA parameters and cached there."""
    if self.prior_weight == 0 or self.class_images is not None:
      return self
    if self.base_load is None:
      raise ValueError("prior preservation generates class images with the base model: set "
                       "--config.init_from.workdir to the trained base run")
    base, step = init_from_lib.load(self.base_load)
    tag = init_from_lib.fingerprint(base)[:12]
    path = epath.Path(workdir) / "prior" / (
        f"class{self.subject_class}_n{self.num_class_images}_seed{self.class_seed}_"
        f"{self.base.sample_tag}_{tag}.npz")
    if path.exists():
      with path.open("rb") as f:
        images = np.load(f)["images"].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
      log.info("class images: %d of class %d read from %s", len(images), self.subject_class,
               path)
    else:
      images = self.generate_class_images(jax.device_put(base))
      cache.write_npz(path, {"images": to_uint8(images)})
      log.info("class images: %d of class %d generated by the base (step %d), cached in %s",
               len(images), self.subject_class, step, path)
    return dataclasses.replace(self, class_images=images)

  # ------------------------------------------------------------------ training

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    base_state = self.base.init(rng, batch)
    params = dict(base_state.params)
    if IDENTIFIER in params:
      raise ValueError(f"the base parameters already have an {IDENTIFIER!r} key")
    width = params["params"]["label_emb"]["embedding"].shape[-1]
    params[IDENTIFIER] = {"offset": jnp.zeros((width,), jnp.float32)}
    frozen = {}
    if self.prior_weight > 0:
      images = (np.zeros(self._prior_shape(), np.float32) if self.class_images is None
                else self.class_images)
      frozen["prior"] = jnp.asarray(images)
    state = TrainState.create(params=params, tx=self.model.tx,
                              rng=jax.random.fold_in(rng, 1), ema_decay=self.model.ema_decay,
                              ema_warmup=self.model.ema_warmup, frozen=frozen)
    return state.replace(view=self.view)

  def loss_fn(self, params, batch: dict[str, jax.Array], prior: jax.Array | None,
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Instance loss + prior_weight * prior loss (see the module docstring), of the model
    params (`IdentifierView` applied)."""
    images = batch["image"]
    n = images.shape[0]
    inst_rng, prior_rng, pick_rng = jax.random.split(rng, 3)
    instance, _ = self._term(params, images, self.identifier, inst_rng)
    metrics = {"instance_loss": instance}
    loss = instance
    if self.prior_weight > 0:
      m = self.prior_batch or n
      pick = jax.random.randint(pick_rng, (m,), 0, prior.shape[0])
      prior_loss, _ = self._term(params, prior[pick], self.subject_class, prior_rng)
      metrics["prior_loss"] = prior_loss
      loss = instance + self.prior_weight * prior_loss
    return loss, {"loss": loss, **metrics}

  def _term(self, params, images: jax.Array, label: int, rng: jax.Array):
    """The simple diffusion loss of `images` all labelled `label` (CFG dropout as configured)."""
    noise_rng, dropout_rng, drop_rng = jax.random.split(rng, 3)
    labels = jnp.full((images.shape[0],), label, jnp.int32)
    conditions = self.model.train_conditions({"label": labels}, drop_rng)
    model_fn = self.model.model_fn(params, conditions, train=True, dropout_rng=dropout_rng)
    return ddpm_loss(model_fn, self.model.schedule, images, noise_rng,
                     prediction=self.model.prediction, loss_type=self.model.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    prior = state.frozen.get("prior")
    return state.gradient_step(lambda p, b, r: self.loss_fn(p, b, prior, r), batch, rng)

  # ------------------------------------------------------------------ sampling

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for labels in 0..K (K: the identifier), CFG as configured."""
    return self.model.sample_conditional(state, rng, conditions, n)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images of the identifier ([V] c)."""
    labels = jnp.full((n,), self.identifier, jnp.int32)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    return self.model.sample_tag


def make_personalized(config: Any, *, textual_inversion: bool) -> Personalized:
  """The `Personalized` method of an experiment config (``config.personalize`` block)."""
  p = config.personalize
  if config.sample.classifier.workdir:
    raise ValueError("personalization samples with classifier-free guidance only; unset "
                     "sample.classifier.workdir")
  base = ddpm_lib.make_method(config)
  if not isinstance(base, ddpm_lib.ConditionalDDPM) or base.model.num_classes < 1:
    raise ValueError("personalization needs the class-conditional base's model config "
                     "(model.num_classes > 0, e.g. experiments/ddpm/cond_digits.py)")
  model = dataclasses.replace(
      base, model=dataclasses.replace(base.model, num_classes=base.model.num_classes + 1))
  prior_weight = float(p.prior_weight)
  if textual_inversion:
    rules = rules_lib.parse_rules(config.optim.rules)
    if rules != TEXTUAL_INVERSION_RULES:
      raise ValueError("textual inversion trains the identifier's embedding only: set "
                       "--config.optim.rules=\"(('identifier/.*', 1.0), ('.*', 'frozen'))\" "
                       f"(got {rules})")
    if prior_weight:
      raise ValueError("textual inversion has no prior-preservation term (the model is frozen):"
                       " set personalize.prior_weight=0")
    if int(config.lora.rank):
      raise ValueError("textual inversion trains no model weights: unset config.lora.rank")
  else:
    rules = adapters.rules(rules_lib.parse_rules(config.optim.rules),
                           adapters.lora_from_config(config))
    first = next((m for pattern, m in rules if re.fullmatch(pattern, f"{IDENTIFIER}/offset")),
                 1.0)
    if first is None:
      raise ValueError("the identifier's embedding is frozen by the rules, so [V] would stay "
                       "the plain class: add ('identifier/.*', 1.0) before the frozen rule "
                       "(experiments/personalize/dreambooth_digits.py:lora does)")
  loads = init_from_lib.parse_init_from(config)
  base_load = next((s for s in loads if s.into == "params"), None)
  return Personalized(base=base, model=model, subject_class=int(p.subject_class),
                      prior_weight=prior_weight,
                      num_class_images=int(p.num_class_images),
                      prior_batch=int(p.prior_batch), class_seed=int(p.class_seed),
                      base_load=base_load)
