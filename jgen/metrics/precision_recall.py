"""Improved precision & recall (Kynkaanniemi et al. 2019), density & coverage (Naeem et al. 2020).

Each feature set is taken as a manifold: the union of balls around its points, the radius of
point i being the distance to its k-th nearest neighbour in its own set (k = 3 by default;
the point itself does not count). With real features R (radii r_i) and fake features F
(radii s_j):

* precision = fraction of fake points inside the real manifold: any_i d(f_j, r_i) < r_i;
* recall    = fraction of real points inside the fake manifold: any_j d(r_i, f_j) < s_j;
* density   = (1 / k) mean_j #{i : d(f_j, r_i) < r_i}  (can exceed 1);
* coverage  = fraction of real points whose ball holds a fake point: min_j d(r_i, f_j) < r_i.

The strict inequalities and the k-th-neighbour convention are those of the authors' ``prdc``
package (NAVER, MIT), whose numbers these are on the same features (tests/metrics checks it
where ``prdc`` is installed).

Everything runs in JAX, jitted, in row chunks of `chunk_size`: the radii come from a
``lax.map`` over chunks of rows (a [chunk, N] block of distances and its ``top_k`` at a
time), and the four statistics from one ``lax.scan`` over chunks of fake rows that carries the
per-real-point minimum distance and recall flags. So with N = 50,000 the [N, N] distance
matrix never exists; peak memory is a few [chunk, N] blocks. Distances use
``|a|^2 + |b|^2 - 2 a.b`` in float32 at HIGHEST matmul precision, after both sets are
centered on the real mean (which leaves distances unchanged and reduces the cancellation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["knn_radii", "pairwise_distances", "prdc"]

_HIGHEST = jax.lax.Precision.HIGHEST


def pairwise_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Euclidean distances between rows of a [m, d] and b [n, d] -> [m, n] (float32)."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  sq = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
        - 2.0 * jnp.dot(a, b.T, precision=_HIGHEST))
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def _chunked(x: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """x [n, d] zero-padded to a multiple of chunk and reshaped [n_chunks, chunk, d]; valid mask."""
  n = x.shape[0]
  pad = -n % chunk
  rows = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk, x.shape[1])
  valid = (jnp.arange(n + pad) < n).reshape(-1, chunk)
  return rows, valid


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _radii(x: jax.Array, *, k: int, chunk_size: int) -> jax.Array:
  rows, _ = _chunked(x, chunk_size)

  def kth(block):
    neg_smallest, _ = jax.lax.top_k(-pairwise_distances(block, x), k + 1)  # self included
    return -neg_smallest[:, -1]

  return jax.lax.map(kth, rows).reshape(-1)[:x.shape[0]]


def knn_radii(features: np.ndarray, *, k: int = 3, chunk_size: int = 512) -> np.ndarray:
  """Distance of every point to its k-th nearest neighbour in the same set (itself excluded).

  Raises:
    ValueError: with k or fewer points.
  """
  x = np.asarray(features, np.float32)
  if x.ndim != 2 or len(x) <= k:
    raise ValueError(f"k-NN radii with k = {k} need features [N > {k}, d], got {x.shape}")
  x = x - x.mean(axis=0)
  return np.asarray(_radii(x, k=k, chunk_size=min(chunk_size, len(x))))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _manifold_stats(real: jax.Array, fake: jax.Array, real_radii: jax.Array,
                    fake_radii: jax.Array, *, chunk_size: int):
  """(per-fake precision flags, per-fake density counts, per-real recall flags, per-real
  minimum distance to a fake point)."""
  rows, valid = _chunked(fake, chunk_size)
  radii, _ = _chunked(fake_radii[:, None], chunk_size)

  def step(carry, inputs):
    min_dist, recalled = carry
    block, ok, block_radii = inputs
    d = pairwise_distances(block, real)                        # [chunk, n_real]
    inside_real = d < real_radii[None, :]
    in_fake_ball = (d < block_radii) & ok[:, None]
    min_dist = jnp.minimum(min_dist, jnp.where(ok[:, None], d, jnp.inf).min(axis=0))
    recalled = recalled | in_fake_ball.any(axis=0)
    return (min_dist, recalled), (inside_real.any(axis=1), inside_real.sum(axis=1))

  n_real = real.shape[0]
  init = (jnp.full((n_real,), jnp.inf, jnp.float32), jnp.zeros((n_real,), bool))
  (min_dist, recalled), (precise, counts) = jax.lax.scan(step, init, (rows, valid, radii))
  n_fake = fake.shape[0]
  return precise.reshape(-1)[:n_fake], counts.reshape(-1)[:n_fake], recalled, min_dist


def prdc(real_features: np.ndarray, fake_features: np.ndarray, *, k: int = 3,
         chunk_size: int = 512) -> dict[str, float]:
  """Precision, recall, density and coverage of fake features against real ones.

  Args:
    real_features: [N_real, d] (e.g. Inception pool3 of real images).
    fake_features: [N_fake, d] (the same network on samples).
    k: the nearest neighbour defining each point's radius (3 as both papers; 5 is also used
      for density & coverage).
    chunk_size: rows per distance block (memory ~ chunk_size * N * 4 bytes a block).

  Returns:
    {"precision", "recall", "density", "coverage"} as Python floats.

  Raises:
    ValueError: for mismatched dimensions or too few points.
  """
  real = np.asarray(real_features, np.float32)
  fake = np.asarray(fake_features, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"expected features [N, d] with one d, got {real.shape} and {fake.shape}")
  center = real.mean(axis=0)
  real, fake = real - center, fake - center
  real_radii = knn_radii(real, k=k, chunk_size=chunk_size)
  fake_radii = knn_radii(fake, k=k, chunk_size=chunk_size)
  precise, counts, recalled, min_dist = jax.device_get(_manifold_stats(
      real, fake, real_radii, fake_radii, chunk_size=min(chunk_size, len(fake))))
  return {
      "precision": float(np.mean(precise)),
      "recall": float(np.mean(recalled)),
      "density": float(np.sum(counts, dtype=np.int64) / (k * len(fake))),
      "coverage": float(np.mean(min_dist < real_radii)),
  }
