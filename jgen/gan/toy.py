"""2-D toy mixtures for the mode-collapse check, their metrics, and a one-`lax.scan` trainer.

Data: `ring` (8 Gaussians evenly spaced on a circle of radius 2) and `grid` (25 Gaussians on the
5x5 grid {-4, -2, 0, 2, 4}^2), each with isotropic standard deviation `std`, modes equally
likely. A sample is *high quality* if it lies within 3 std of its nearest mode, and a mode is
*covered* if at least `min_count` high-quality samples fall on it (VEEGAN/PacGAN-style).

`train_toy` trains an MLP generator and discriminator with the loop's adversarial step
(`jgen.gan.adversarial.GAN.train_step`, a composition of `jgen.gan.updates`): the whole run
(n_critic critic steps and one generator step per iteration) is one `lax.scan` inside one
`jit`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.gan.adversarial import GAN
from jgen.nn.gan import MLPDiscriminator, MLPGenerator

__all__ = ["ToyConfig", "TOY_METHODS", "mixture_means", "mode_metrics", "sample_mixture",
           "toy_gan", "train_toy"]


def mixture_means(kind: str) -> np.ndarray:
  """Mode centres `[K, 2]`: 'ring' (K = 8, radius 2) or 'grid' (K = 25, spacing 2)."""
  if kind == "ring":
    angles = 2.0 * np.pi * np.arange(8) / 8
    return (2.0 * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.float32)
  if kind == "grid":
    axis = np.arange(-4.0, 5.0, 2.0)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
  raise ValueError(f"unknown toy dataset {kind!r}; choose 'ring' or 'grid'")


def sample_mixture(rng: jax.Array, means: jax.Array, std: float, n: int) -> jax.Array:
  """`n` points of the equal-weight Gaussian mixture with centres `means` and std `std`."""
  k_rng, e_rng = jax.random.split(rng)
  idx = jax.random.randint(k_rng, (n,), 0, means.shape[0])
  return jnp.asarray(means)[idx] + std * jax.random.normal(e_rng, (n, means.shape[1]))


def mode_metrics(samples: np.ndarray, means: np.ndarray, std: float, *, min_count: int = 20
                 ) -> dict[str, float]:
  """`modes` covered, `high_quality` share (within 3 std of the nearest mode), `num_modes`."""
  samples, means = np.asarray(samples, np.float64), np.asarray(means, np.float64)
  dist = np.linalg.norm(samples[:, None, :] - means[None], axis=-1)
  nearest, d = dist.argmin(-1), dist.min(-1)
  good = d <= 3.0 * std
  counts = np.bincount(nearest[good], minlength=len(means))
  return {"modes": int(np.sum(counts >= min_count)), "num_modes": len(means),
          "high_quality": float(good.mean())}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """One toy GAN run: losses, critic steps, penalty/clipping and optimizers."""

  loss: str
  n_critic: int = 1
  gp_weight: float = 0.0
  clip: float = 0.0
  optimizer: str = "adam"          # adam | rmsprop
  lr: float = 1e-4
  b1: float = 0.5
  b2: float = 0.9


# The papers' toy settings: GAN (non-saturating, Adam 1e-4 (0.5, 0.9)); WGAN (RMSProp 5e-5,
# clip 0.01, 5 critic steps); WGAN-GP (Adam 1e-4 (0.5, 0.9), 5 critic steps, lambda = 0.1, the
# WGAN-GP authors' toy-code value: "smaller lambda seems to help for toy tasks").
TOY_METHODS = {
    "gan": ToyConfig(loss="non_saturating"),
    "wgan": ToyConfig(loss="wasserstein", n_critic=5, clip=0.01, optimizer="rmsprop", lr=5e-5),
    "wgan_gp": ToyConfig(loss="wasserstein", n_critic=5, gp_weight=0.1),
}


def _optimizer(c: ToyConfig) -> optax.GradientTransformation:
  if c.optimizer == "adam":
    return optax.adam(c.lr, b1=c.b1, b2=c.b2)
  if c.optimizer == "rmsprop":
    return optax.rmsprop(c.lr, decay=0.99)
  raise ValueError(f"unknown toy optimizer {c.optimizer!r}; choose 'adam' or 'rmsprop'")


def toy_gan(c: ToyConfig, *, hidden: int = 256, z_dim: int = 2) -> GAN:
  """The `GAN` method of a toy run: MLP G and D (3 x `hidden` ReLU), no generator EMA."""
  tx = _optimizer(c)
  return GAN(generator=MLPGenerator(out_dim=2, hidden=(hidden,) * 3),
             discriminator=MLPDiscriminator(hidden=(hidden,) * 3), tx_g=tx, tx_d=tx,
             loss=c.loss, z_dim=z_dim, n_critic=c.n_critic, gp_weight=c.gp_weight,
             clip=c.clip, ema_decay=0.0, name=f"toy_{c.loss}")


def train_toy(c: ToyConfig, means: np.ndarray, std: float, rng: jax.Array, *, steps: int,
              batch: int = 256, hidden: int = 256, z_dim: int = 2, num_samples: int = 2500
              ) -> np.ndarray:
  """Trains on the mixture for `steps` generator steps; returns `num_samples` generated points.

  Each iteration is `toy_gan(c).train_step` (the loop's GAN step) on a fresh real batch of
  `n_critic * batch` points (every critic step gets its own `batch` of them, and fresh noise);
  keys come from `fold_in(rng, step)`.
  """
  gan = toy_gan(c, hidden=hidden, z_dim=z_dim)
  means = jnp.asarray(means)
  init_rng, run_rng, out_rng = jax.random.split(rng, 3)

  def step(state, i):
    data_rng, step_rng = jax.random.split(jax.random.fold_in(run_rng, i))
    real = sample_mixture(data_rng, means, std, c.n_critic * batch)
    state, _ = gan.train_step(state, {"image": real}, step_rng)
    return state, None

  @jax.jit
  def run():
    state = gan.init(init_rng, {"image": jnp.zeros((1, 2))})
    state, _ = jax.lax.scan(step, state, jnp.arange(steps))
    return gan.sample(state, out_rng, num_samples)

  return np.asarray(run())
