"""Vector quantization (van den Oord et al. 2017) as pure functions, for VQ-VAE and latent models.

A codebook is a `[K, D]` array. `quantize(z, codebook)` maps every D-vector on the last axis of
`z` to its nearest code and returns the straight-through output (forward: the codes; backward:
the identity to `z`), the code indices and the two VQ losses:

* codebook loss ||sg(z) - e||^2 (moves codes toward encoder outputs; omitted with EMA updates),
* commitment loss ||z - sg(e)||^2 (weighted by beta = 0.25 in the paper).

The EMA alternative (paper appendix; Razavi et al. 2019) keeps per-code running counts N_k and
sums m_k of the assigned encoder outputs, with Laplace-smoothed counts:
`N <- d N + (1-d) n`, `m <- d m + (1-d) sum_{i: k_i = k} z_i`,
`N~_k = (N_k + eps) / (sum N + K eps) * sum N`, `e_k = m_k / N~_k`.
`restart_dead_codes` re-seeds codes whose running count fell far below average with random
encoder outputs. `codebook_perplexity` is exp(entropy) of the code histogram (K when every code
is equally used, 1 when collapsed).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["QuantizerOutput", "codebook_perplexity", "ema_codebook_update", "init_codebook",
           "nearest_code", "quantize", "restart_dead_codes"]


class QuantizerOutput(NamedTuple):
  """What `quantize` returns.

  Attributes:
    z_q: quantized latents, shape of `z`; straight-through: d z_q / d z = identity.
    indices: int32 code index of every vector, `z.shape[:-1]`.
    codebook_loss: mean of (sg(z) - e)^2 (gradient to the codebook only).
    commitment_loss: mean of (z - sg(e))^2 (gradient to the encoder only).
  """

  z_q: jax.Array
  indices: jax.Array
  codebook_loss: jax.Array
  commitment_loss: jax.Array


def init_codebook(rng: jax.Array, num_codes: int, dim: int) -> jax.Array:
  """A `[K, D]` codebook, uniform in +-sqrt(3 / D) (unit variance per vector)."""
  bound = (3.0 / dim) ** 0.5
  return jax.random.uniform(rng, (num_codes, dim), jnp.float32, -bound, bound)


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest code (squared Euclidean) of every D-vector on `z`'s last axis."""
  flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  dist = (jnp.sum(flat**2, axis=-1, keepdims=True) - 2.0 * flat @ codebook.T
          + jnp.sum(codebook**2, axis=-1)[None, :])
  return jnp.argmin(dist, axis=-1).astype(jnp.int32).reshape(z.shape[:-1])


def quantize(z: jax.Array, codebook: jax.Array) -> QuantizerOutput:
  """Nearest-code quantization with the straight-through estimator and the two VQ losses."""
  indices = nearest_code(jax.lax.stop_gradient(z), codebook)
  e = jnp.take(codebook, indices, axis=0).astype(z.dtype)
  codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - e))
  commitment_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(e)))
  z_q = z + jax.lax.stop_gradient(e - z)
  return QuantizerOutput(z_q, indices, codebook_loss, commitment_loss)


def codebook_perplexity(indices: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
  """`(perplexity, fraction of codes used)` of the code histogram of `indices`."""
  counts = jnp.bincount(indices.reshape(-1), length=num_codes).astype(jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.exp(entropy), jnp.mean(counts > 0)


def ema_codebook_update(counts: jax.Array, sums: jax.Array, z: jax.Array, indices: jax.Array,
                        *, decay: float = 0.99, epsilon: float = 1e-5
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One EMA step of the code statistics; returns `(counts, sums, codebook)`.

  Args:
    counts: `[K]` running assignment counts N.
    sums: `[K, D]` running sums m of the assigned vectors.
    z: encoder outputs `[..., D]` (not differentiated through).
    indices: their code indices, `z.shape[:-1]`.
    decay: EMA decay d (0.99 in the paper).
    epsilon: Laplace smoothing of the counts.
  """
  num_codes = counts.shape[0]
  flat = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1]).astype(jnp.float32)
  onehot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)
  counts = decay * counts + (1.0 - decay) * onehot.sum(axis=0)
  sums = decay * sums + (1.0 - decay) * (onehot.T @ flat)
  total = counts.sum()
  smoothed = (counts + epsilon) / (total + num_codes * epsilon) * total
  return counts, sums, sums / smoothed[:, None]


def restart_dead_codes(rng: jax.Array, codebook: jax.Array, counts: jax.Array, sums: jax.Array,
                       z: jax.Array, *, threshold: float, active: jax.Array | bool = True
                       ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Re-seeds dead codes with random encoder outputs; returns `(codebook, counts, sums, n)`.

  A code is dead when its running count is below `threshold` times the mean count. A re-seeded
  code gets a random vector of `z` and the mean count (so the EMA treats it as an average code);
  `n` is how many were re-seeded. Nothing changes where `active` is False.
  """
  flat = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1]).astype(codebook.dtype)
  mean = counts.mean()
  dead = jnp.logical_and(active, counts < threshold * mean)
  pick = jax.random.randint(rng, (codebook.shape[0],), 0, flat.shape[0])
  fresh = flat[pick]
  codebook = jnp.where(dead[:, None], fresh, codebook)
  counts = jnp.where(dead, mean, counts)
  sums = jnp.where(dead[:, None], fresh * mean, sums)
  return codebook, counts, sums, dead.sum()
