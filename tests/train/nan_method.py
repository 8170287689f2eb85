"""Test methods that turn NaN from step `config.nan_after` on (see test_loop.py).

`config.nan_mode = "inputs"` (default): the batch turns NaN, so loss and gradients do;
`"params"`: the parameters turn NaN after the update while the step's metrics stay finite
(only the save-time guard can catch it).
"""

import jax
import jax.numpy as jnp

from jgen.diffusion import ddpm


class NaNAfter:
  """DDPM, except that from `state.step >= nan_after` its inputs (or parameters) are NaN."""

  def __init__(self, inner, nan_after, mode):
    self.inner, self.nan_after, self.mode = inner, nan_after, mode

  def init(self, rng, batch):
    return self.inner.init(rng, batch)

  def train_step(self, state, batch, rng):
    bad = state.step >= self.nan_after
    if self.mode == "params":
      new, metrics = self.inner.train_step(state, batch, rng)
      params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)
      return new.replace(params=params), metrics
    batch = {**batch, "image": jnp.where(bad, jnp.nan, batch["image"])}
    return self.inner.train_step(state, batch, rng)

  def sample(self, state, rng, n):
    return self.inner.sample(state, rng, n)


def make_method(config):
  return NaNAfter(ddpm.make_method(config), config.nan_after, config.get("nan_mode", "inputs"))
