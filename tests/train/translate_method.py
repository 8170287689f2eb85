"""A test `Translates` method: a per-pixel affine map G(x) = a x + b fitted with L1 to pairs.

Trained on ``derived:edges:digits`` (source = edges, target = the digit); it cannot learn the
real mapping, but it is a real model trained by the loop, which is what the loop's translation
path needs.
"""

import dataclasses

import jax.numpy as jnp

from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState


@dataclasses.dataclass(frozen=True, eq=False)
class AffineTranslator:
  tx: object

  translation_names = ("digit",)

  def init(self, rng, batch):
    del batch
    return TrainState.create(params={"a": jnp.ones(()), "b": jnp.zeros(())}, tx=self.tx,
                             rng=rng, ema_decay=0.5)

  def _apply(self, params, x):
    return params["a"] * x + params["b"]

  def loss_fn(self, params, batch, rng):
    del rng
    loss = jnp.mean(jnp.abs(self._apply(params, batch["source"]) - batch["target"]))
    return loss, {"loss": loss}

  def train_step(self, state, batch, rng):
    return state.gradient_step(self.loss_fn, batch, rng)

  def evaluate(self, state, batch, rng):
    return {"l1": self.loss_fn(state.ema_params, batch, rng)[0]}

  def translation_inputs(self, batch):
    return {"source": batch["source"], "target": batch["target"][:, None],
            "label": batch["label"]}

  def translate(self, state, rng, source):
    del rng
    return self._apply(state.ema_params, source)[:, None]


def make_method(config):
  return AffineTranslator(tx=make_optimizer(config.optim, total_steps=config.train.num_steps))
