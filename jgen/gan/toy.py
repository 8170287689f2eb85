"""2-D toy mixtures for the mode-collapse check, their metrics, and a one-`lax.scan` trainer.

Data: `ring` (8 Gaussians evenly spaced on a circle of radius 2) and `grid` (25 Gaussians on the
5x5 grid {-4, -2, 0, 2, 4}^2), each with isotropic standard deviation `std`, modes equally
likely. A sample is *high quality* if it lies within 3 std of its nearest mode, and a mode is
*covered* if at least `min_count` high-quality samples fall on it (VEEGAN/PacGAN-style).

`train_toy` trains an MLP generator and discriminator with the pure losses and penalties of
`jgen.gan.losses`: the whole run (n_critic critic steps and one generator step per iteration)
is one `lax.scan` inside one `jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.gan import losses
from jgen.nn.gan import MLPDiscriminator, MLPGenerator

PyTree = Any

__all__ = ["ToyConfig", "TOY_METHODS", "mixture_means", "mode_metrics", "sample_mixture",
           "train_toy"]


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


def train_toy(c: ToyConfig, means: np.ndarray, std: float, rng: jax.Array, *, steps: int,
              batch: int = 256, hidden: int = 256, z_dim: int = 2, num_samples: int = 2500
              ) -> np.ndarray:
  """Trains on the mixture for `steps` generator steps; returns `num_samples` generated points.

  Every critic step draws a fresh real batch and fresh noise; keys come from
  `fold_in(rng, step)`.
  """
  g = MLPGenerator(out_dim=2, hidden=(hidden,) * 3)
  d = MLPDiscriminator(hidden=(hidden,) * 3)
  tx = _optimizer(c)
  means = jnp.asarray(means)
  g_rng, d_rng, run_rng, out_rng = jax.random.split(rng, 4)
  g_params = g.init(g_rng, jnp.zeros((1, z_dim)))
  d_params = d.init(d_rng, jnp.zeros((1, 2)))
  if c.clip:
    d_params = losses.clip_weights(d_params, c.clip)

  def d_loss(dp, real, fake, key):
    d_fn = lambda x: d.apply(dp, x)
    loss = losses.discriminator_loss(c.loss, d_fn(real), d_fn(fake))
    if c.gp_weight:
      loss = loss + losses.gradient_penalty(d_fn, real, fake, key, weight=c.gp_weight)
    return loss

  def g_loss(gp, dp, z):
    return losses.generator_loss(c.loss, d.apply(dp, g.apply(gp, z)))

  def step(carry, i):
    gp, dp, g_opt, d_opt = carry
    key = jax.random.fold_in(run_rng, i)

    def critic(inner, k):
      dp, d_opt = inner
      r_key, z_key, p_key = jax.random.split(jax.random.fold_in(key, k), 3)
      real = sample_mixture(r_key, means, std, batch)
      fake = g.apply(gp, jax.random.normal(z_key, (batch, z_dim)))
      grads = jax.grad(d_loss)(dp, real, fake, p_key)
      updates, d_opt = tx.update(grads, d_opt, dp)
      dp = optax.apply_updates(dp, updates)
      if c.clip:
        dp = losses.clip_weights(dp, c.clip)
      return (dp, d_opt), None

    (dp, d_opt), _ = jax.lax.scan(critic, (dp, d_opt), jnp.arange(c.n_critic))
    z = jax.random.normal(jax.random.fold_in(key, c.n_critic), (batch, z_dim))
    grads = jax.grad(g_loss)(gp, dp, z)
    updates, g_opt = tx.update(grads, g_opt, gp)
    return (optax.apply_updates(gp, updates), dp, g_opt, d_opt), None

  @jax.jit
  def run(gp, dp):
    carry = (gp, dp, tx.init(gp), tx.init(dp))
    (gp, _, _, _), _ = jax.lax.scan(step, carry, jnp.arange(steps))
    return g.apply(gp, jax.random.normal(out_rng, (num_samples, z_dim)))

  return np.asarray(run(g_params, d_params))
