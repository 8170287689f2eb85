"""ControlNet (Zhang et al. 2023) of a trained DDPM: `config.method = "diffusion.controlnet"`.

The network is `jgen.nn.controlnet.ControlledUNet` (the base U-Net under ``params/unet``, the
control branch under ``params/control``); the data are pairs (``source`` = the condition image,
``target`` = the image, e.g. ``derived:edges:digits``). Two ``init_from`` loads bring the base
in: all of it into ``params/params/unet`` and its embedding, down path and middle into
``params/params/control`` (the trainable copy, `CONTROL_COPY`). The rules train the control
branch only (checked); the loss is the base's DDPM loss with ``hint`` = the source among the
conditions, which classifier-free guidance keeps in both branches. At initialisation the
controlled model's output equals the base model's, bit for bit (the zero convolutions).

The loop treats it as a `Translates` method: ``--mode=sample`` writes held-out
``condition | sample | image`` rows, ``--mode=eval`` the translation metrics; the edge
agreement of the samples with their conditions is `jgen.metrics.control`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jgen.diffusion import ddpm as ddpm_lib
from jgen.nn.controlnet import ControlledUNet
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState

__all__ = ["CONTROL_COPY", "CONTROL_RULES", "ControlNetDDPM", "configure", "make_method"]

CONTROL_RULES = rules_lib.parse_rules((("params/control/.*", 1.0), (".*", "frozen")))
# The base's leaves that the control branch copies (the `init_from.match` of the second load).
CONTROL_COPY = r"(temb_dense0|temb_dense1|label_emb|embedding_proj|conv_in|down_.*|mid_.*)/.*"


@dataclasses.dataclass(frozen=True, eq=False)
class ControlNetDDPM:
  """A DDPM whose U-Net is steered by a condition image through a ControlNet.

  Attributes:
    ddpm: the DDPM (or `ConditionalDDPM`) whose model is a `ControlledUNet`; its loss,
      sampler and guidance are used as they are, with ``hint`` among the conditions.
  """

  ddpm: ddpm_lib.DDPM

  def __post_init__(self):
    if not isinstance(self.ddpm.model, ControlledUNet):
      raise TypeError("ControlNetDDPM needs a DDPM whose model is a ControlledUNet")

  @property
  def translation_names(self) -> tuple[str, ...]:
    return ("controlled",)

  def _batch(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The DDPM's batch of a pair batch: ``image`` = target, ``hint`` = source."""
    if "source" not in batch or "target" not in batch:
      raise KeyError("diffusion.controlnet trains on pairs (source = condition, target = image):"
                     f" use a paired or derived source (derived:edges:digits); got {sorted(batch)}")
    out = {"image": batch["target"], "hint": batch["source"]}
    if "label" in batch:
      out["label"] = batch["label"]
    return out

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    x = batch["target"][:1]
    conditions = {"hint": batch["source"][:1]}
    if self.ddpm.model.num_classes > 0:
      conditions["label"] = jnp.zeros((1,), jnp.int32)
    params = self.ddpm.model.init(params_rng, x, jnp.zeros((1,), jnp.int32), conditions,
                                  train=False)
    return TrainState.create(params=params, tx=self.ddpm.tx, rng=state_rng,
                             ema_decay=self.ddpm.ema_decay, ema_warmup=self.ddpm.ema_warmup)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.ddpm.loss_fn, self._batch(batch), rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    return self.ddpm.evaluate(state, self._batch(batch), rng)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images for ``conditions`` (``hint`` [n, H, W, C], and ``label`` for a conditional
    base: classifier-free guidance at the configured scale, the hint in both branches)."""
    if self.ddpm.model.num_classes > 0:
      return self.ddpm.sample_conditional(state, rng, conditions, n)
    return self.ddpm.run_sampler(self.ddpm.eps_fn(state.ema_params, conditions), rng, n)

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    inputs = {"source": batch["source"], "target": batch["target"][:, None]}
    if "label" in batch:
      inputs["label"] = batch["label"]
    return inputs

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """[B, H, W, C] conditions -> [B, 1, H, W, C] samples (an unconditional base; a
    class-conditional one needs the labels: `translate_labeled`)."""
    if self.ddpm.model.num_classes > 0:
      raise ValueError("a class-conditional ControlNet samples for labels too: translate "
                       "held-out data that has them (the loop then calls translate_labeled), "
                       "or call sample_conditional(state, rng, {'hint': ..., 'label': ...}, n)")
    return self.sample_conditional(state, rng, {"hint": source}, source.shape[0])[:, None]

  def translate_labeled(self, state: TrainState, rng: jax.Array, source: jax.Array,
                        label: jax.Array) -> jax.Array:
    """[B, H, W, C] conditions and int32 [B] labels -> [B, 1, H, W, C] samples (CFG at the
    configured scale for a class-conditional base; the labels are ignored by an
    unconditional one)."""
    if self.ddpm.model.num_classes < 1:
      return self.translate(state, rng, source)
    conditions = {"hint": source, "label": jnp.asarray(label, jnp.int32)}
    return self.sample_conditional(state, rng, conditions, source.shape[0])[:, None]

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    raise ValueError("a ControlNet samples for conditions: the loop translates held-out "
                     "conditions (Translates); call translate(state, rng, conditions)")

  @property
  def sample_tag(self) -> str:
    return self.ddpm.sample_tag


def configure(c: ml_collections.ConfigDict, source: str, *, smoke: bool,
              hint_channels: tuple[int, ...] = (16, 32)) -> ml_collections.ConfigDict:
  """Turns a base DDPM experiment's config `c` into its ControlNet's, in place: the method, the
  pairs `source` (no flips), the rules, Adam at a constant 1e-3, the condition encoder, the
  two loads of the base (all of it into params/unet, `CONTROL_COPY` into params/control), whose
  workdirs one ``--config.init_from.workdir`` sets, and (unless `smoke`, which keeps the base's
  seconds-long schedule) 1,500 steps with 16 held-out translations at the end."""
  c.method = "diffusion.controlnet"
  c.data.source = source
  c.data.random_flip = False
  c.optim.rules = CONTROL_RULES
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.control = ml_collections.ConfigDict()
  c.control.hint_channels = tuple(hint_channels)
  c.init_from.subtree = "params"
  c.init_from.into = "params/params/unet"
  c.init_from.copy = ml_collections.ConfigDict()
  c.init_from.copy.workdir = c.init_from.get_ref("workdir")
  c.init_from.copy.subtree = "params"
  c.init_from.copy.into = "params/params/control"
  c.init_from.copy.match = CONTROL_COPY
  if not smoke:
    c.train.num_steps = 1500
    c.train.checkpoint_every = 500
    c.train.sample_every = 1500
    c.train.eval_every = 0
  c.sample.num = 4 if smoke else 16
  c.sample.batch_size = c.sample.num
  return c


def make_method(config: Any) -> ControlNetDDPM:
  """The ControlNet of the config's base DDPM (`config.model`, `config.diffusion`, ...) with
  the condition encoder of ``config.control.hint_channels``."""
  rules = rules_lib.parse_rules(config.optim.rules)
  if rules != CONTROL_RULES:
    raise ValueError("diffusion.controlnet trains the control branch only: set "
                     "--config.optim.rules=\"(('params/control/.*', 1.0), ('.*', 'frozen'))\" "
                     f"(got {rules})")
  if config.sample.classifier.workdir:
    raise ValueError("diffusion.controlnet guides with classifier-free guidance only")
  base = ddpm_lib.make_method(config)
  hint_channels = tuple(config.control.hint_channels)
  model = ControlledUNet(base.model, hint_channels=hint_channels)
  return ControlNetDDPM(dataclasses.replace(base, model=model))
