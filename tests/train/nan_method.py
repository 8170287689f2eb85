"""A test method whose batches turn NaN from step `config.nan_after` on (see test_loop.py)."""

import jax.numpy as jnp

from jgen.diffusion import ddpm


class NaNAfter:
  """DDPM, except that its inputs are NaN once `state.step >= nan_after`."""

  def __init__(self, inner, nan_after):
    self.inner, self.nan_after = inner, nan_after

  def init(self, rng, batch):
    return self.inner.init(rng, batch)

  def train_step(self, state, batch, rng):
    bad = state.step >= self.nan_after
    batch = {**batch, "image": jnp.where(bad, jnp.nan, batch["image"])}
    return self.inner.train_step(state, batch, rng)

  def sample(self, state, rng, n):
    return self.inner.sample(state, rng, n)


def make_method(config):
  return NaNAfter(ddpm.make_method(config), config.nan_after)
