"""A test method that only samples (no evaluate(), like the GANs): DDPM's state and sampler."""

from jgen.diffusion import ddpm


class SamplerOnly:
  """DDPM without `evaluate`: `--mode=eval` can give it sample metrics only."""

  def __init__(self, inner):
    self.inner = inner

  def init(self, rng, batch):
    return self.inner.init(rng, batch)

  def train_step(self, state, batch, rng):
    return self.inner.train_step(state, batch, rng)

  def sample(self, state, rng, n):
    return self.inner.sample(state, rng, n)


def make_method(config):
  return SamplerOnly(ddpm.make_method(config))
