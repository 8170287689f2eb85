"""A test method trained on the latents of a frozen VQ-VAE loaded with `init_from`.

`state.frozen["autoencoder"]` holds the VQ-VAE's parameters (the structure comes from the
VQ-VAE's own init; `init_from` puts the trained arrays in); a one-layer dense denoiser learns
to map noisy latents back to clean ones.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.autoencoder import vqvae
from jgen.nn.autoencoder import latent_shape
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState


@dataclasses.dataclass(frozen=True, eq=False)
class LatentDenoiser:
  autoencoder: vqvae.VQVAE
  tx: object
  image_size: int = 16
  noise: float = 0.5

  def init(self, rng, batch):
    ae_rng, net_rng, state_rng = jax.random.split(rng, 3)
    frozen = self.autoencoder.init(ae_rng, batch).params  # placeholder structure only
    z = self.autoencoder.encode(frozen, batch["image"][:1])
    params = nn.Dense(z.shape[-1]).init(net_rng, z)["params"]
    return TrainState.create(params={"denoiser": params}, tx=self.tx, rng=state_rng,
                             ema_decay=0.9, frozen={"autoencoder": frozen})

  def loss_fn(self, params, frozen, batch, rng):
    z = self.autoencoder.encode(frozen["autoencoder"], batch["image"])
    noisy = z + self.noise * jax.random.normal(rng, z.shape)
    pred = nn.Dense(z.shape[-1]).apply({"params": params["denoiser"]}, noisy)
    loss = jnp.mean(jnp.square(pred - z))
    return loss, {"loss": loss}

  def train_step(self, state, batch, rng):
    return state.gradient_step(self.loss_fn, state.frozen, batch, rng)

  def sample(self, state, rng, n):
    """Decodes denoised random latents (a smoke test of the frozen decoder, not a model)."""
    shape = (n, *latent_shape(self.autoencoder.encoder, self.image_size))
    z = nn.Dense(shape[-1]).apply({"params": state.ema_params["denoiser"]},
                                  jax.random.normal(rng, shape))
    return jnp.tanh(self.autoencoder.decode(state.frozen["autoencoder"], z))


def make_method(config):
  return LatentDenoiser(autoencoder=vqvae.make_method(config),
                        tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
                        image_size=config.data.image_size)
