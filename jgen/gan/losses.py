"""Adversarial losses, penalties and weight clipping: pure functions over logits and `apply_fn`.

Conventions: `real_logits` / `fake_logits` are the discriminator's (critic's) raw outputs on
real and generated images, any shape (usually `[B]`); every loss is a mean over that batch and
is *minimized* by the network it names. Loss kinds (Goodfellow et al. 2014; Mao et al. 2017;
Lim & Ye 2017; Arjovsky et al. 2017):

| kind          | discriminator loss                          | generator loss              |
|---------------|---------------------------------------------|-----------------------------|
| minimax       | -log D(x) - log(1 - D(G(z)))                | log(1 - D(G(z)))            |
| non_saturating| same as minimax                             | -log D(G(z))                |
| hinge         | relu(1 - D(x)) + relu(1 + D(G(z)))           | -D(G(z))                    |
| least_squares | (D(x) - 1)^2 / 2 + D(G(z))^2 / 2             | (D(G(z)) - 1)^2 / 2         |
| wasserstein   | D(G(z)) - D(x)                              | -D(G(z))                    |

with D(.) = sigmoid(logit) for minimax / non_saturating (computed stably with softplus) and the
raw score otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = [
    "LOSSES", "clip_weights", "discriminator_loss", "generator_loss", "gradient_penalty",
    "r1_penalty",
]


def _mean(x: jax.Array) -> jax.Array:
  return jnp.mean(x.astype(jnp.float32))


def bce_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """-log sigmoid(real) - log(1 - sigmoid(fake)), the minimax / non-saturating D loss."""
  return _mean(jax.nn.softplus(-real_logits)) + _mean(jax.nn.softplus(fake_logits))


def minimax_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """log(1 - sigmoid(fake)) = -softplus(fake): the original (saturating) generator loss."""
  return -_mean(jax.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """-log sigmoid(fake) = softplus(-fake): the non-saturating generator loss."""
  return _mean(jax.nn.softplus(-fake_logits))


def hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  return _mean(jax.nn.relu(1.0 - real_logits)) + _mean(jax.nn.relu(1.0 + fake_logits))


def hinge_generator_loss(fake_logits: jax.Array) -> jax.Array:
  return -_mean(fake_logits)


def least_squares_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array
                                     ) -> jax.Array:
  """LSGAN with targets a=0 (fake), b=1 (real): (D(x)-1)^2/2 + D(G(z))^2/2."""
  return 0.5 * _mean(jnp.square(real_logits - 1.0)) + 0.5 * _mean(jnp.square(fake_logits))


def least_squares_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """LSGAN generator target c=1: (D(G(z))-1)^2/2."""
  return 0.5 * _mean(jnp.square(fake_logits - 1.0))


def wasserstein_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array
                                   ) -> jax.Array:
  """The critic's loss E[D(G(z))] - E[D(x)]; its negation estimates the Wasserstein-1 distance."""
  return _mean(fake_logits) - _mean(real_logits)


def wasserstein_generator_loss(fake_logits: jax.Array) -> jax.Array:
  return -_mean(fake_logits)


# kind -> (discriminator loss(real, fake), generator loss(fake))
LOSSES: dict[str, tuple[Callable[[jax.Array, jax.Array], jax.Array],
                        Callable[[jax.Array], jax.Array]]] = {
    "minimax": (bce_discriminator_loss, minimax_generator_loss),
    "non_saturating": (bce_discriminator_loss, non_saturating_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "least_squares": (least_squares_discriminator_loss, least_squares_generator_loss),
    "wasserstein": (wasserstein_discriminator_loss, wasserstein_generator_loss),
}


def _pair(kind: str):
  if kind not in LOSSES:
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[kind]


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array
                       ) -> jax.Array:
  """The discriminator's (critic's) loss of `kind` (see the module table)."""
  return _pair(kind)[0](real_logits, fake_logits)


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  """The generator's loss of `kind` (see the module table)."""
  return _pair(kind)[1](fake_logits)


def _per_example_grad_sq_norm(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array
                              ) -> jax.Array:
  """||dD(x_i)/dx_i||^2 per example, via the gradient of sum_i D(x_i).

  Valid because D scores each example on its own (no batch normalization in the critic).
  """
  grads = jax.grad(lambda v: jnp.sum(d_fn(v).astype(jnp.float32)))(x)
  return jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array, *, weight: float = 10.0, target: float = 1.0
                     ) -> jax.Array:
  """WGAN-GP's penalty (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - target)^2].

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] drawn once per example.

  Args:
    d_fn: the critic on a batch, `x -> scores [B]` (parameters closed over); each example must
      be scored on its own (no batch normalization).
    real, fake: batches of the same shape `[B, ...]`.
    rng: key of the interpolation coefficients.
    weight: lambda (10 in the paper).
    target: the norm the gradient is pulled to (1).
  """
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * jax.lax.stop_gradient(fake)
  norm = jnp.sqrt(_per_example_grad_sq_norm(d_fn, x_hat) + 1e-12)
  return weight * jnp.mean(jnp.square(norm - target))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, *, gamma: float = 10.0
               ) -> jax.Array:
  """R1 (Mescheder et al. 2018): gamma / 2 * E[||grad D(x)||^2] on real data."""
  return 0.5 * gamma * jnp.mean(_per_example_grad_sq_norm(d_fn, real))


def clip_weights(params: PyTree, clip: float) -> PyTree:
  """Every leaf clipped to [-clip, clip] (the original WGAN's Lipschitz constraint)."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)
