"""Kernel Inception Distance (Binkowski et al. 2018): an unbiased MMD^2 with a cubic kernel.

With the polynomial kernel ``k(x, y) = (x . y / d + 1)^3`` over d-dimensional features, the
unbiased estimate of the squared maximum mean discrepancy between samples X and Y of m each is

  MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
            - 2 sum_{i, j} k(x_i, y_j) / m^2.

KID is its mean over `num_subsets` random subsets of `subset_size` features drawn from each set
(without replacement within a subset, as torch-fidelity and the reference TF code), reported
with the standard deviation over the subsets. Unlike FID it is unbiased: its expectation over
samples of one distribution is 0 for any m, and it can be slightly negative.

The kernels and their row sums run jitted in float32 (one compiled program over all subsets,
`lax.map`); the rows are added up and the terms combined in float64 on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["kid", "mmd2_unbiased", "polynomial_kernel"]


def polynomial_kernel(x: jax.Array, y: jax.Array, *, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> jax.Array:
  """``(gamma x . y + coef0)^degree`` for rows of x [m, d] and y [n, d] -> [m, n].

  gamma defaults to 1 / d (KID's kernel).
  """
  gamma = 1.0 / x.shape[-1] if gamma is None else gamma
  gram = jnp.dot(x, y.T, precision=jax.lax.Precision.HIGHEST)
  return (gram * gamma + coef0) ** degree


def _kernel_sums(x: jax.Array, y: jax.Array) -> jax.Array:
  """Row sums [3, m] of the off-diagonal k(x, x), the off-diagonal k(y, y) and k(x, y).

  Only rows are summed in float32 (m terms each); the host adds the rows up in float64, so
  the three totals (of order m^2) keep the precision that MMD^2, a small difference of them,
  needs.
  """
  kxx = polynomial_kernel(x, x)
  kyy = polynomial_kernel(y, y)
  kxy = polynomial_kernel(x, y)
  return jnp.stack([kxx.sum(1) - jnp.diagonal(kxx), kyy.sum(1) - jnp.diagonal(kyy), kxy.sum(1)])


@jax.jit
def _subset_sums(features_a: jax.Array, features_b: jax.Array, index_a: jax.Array,
                 index_b: jax.Array) -> jax.Array:
  """Kernel row sums of every subset: index_* [S, m] -> [S, 3, m]."""
  return jax.lax.map(lambda ij: _kernel_sums(features_a[ij[0]], features_b[ij[1]]),
                     (index_a, index_b))


def _mmd2_from_sums(row_sums: np.ndarray, m: int) -> np.ndarray:
  sums = np.asarray(row_sums, np.float64).sum(-1)
  return (sums[..., 0] + sums[..., 1]) / (m * (m - 1)) - 2.0 * sums[..., 2] / (m * m)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """The unbiased MMD^2 with KID's cubic kernel between two equal-size feature sets [m, d]."""
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  if x.shape != y.shape or x.ndim != 2 or len(x) < 2:
    raise ValueError(f"expected two feature sets [m >= 2, d] of equal shape, got {x.shape} "
                     f"and {y.shape}")
  return float(_mmd2_from_sums(jax.device_get(jax.jit(_kernel_sums)(x, y)), len(x)))


def kid(features_a: np.ndarray, features_b: np.ndarray, *, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """KID between two feature sets: (mean, std) of the unbiased MMD^2 over random subsets.

  Args:
    features_a: features [N_a, d] (e.g. of real images).
    features_b: features [N_b, d] (e.g. of samples).
    num_subsets: number of subsets (100 as in the reference implementations).
    subset_size: features per subset and set (1000), capped at min(N_a, N_b).
    seed: seed of the subset draws (numpy), so the figure is reproducible.

  Returns:
    (mean, std) over the subsets, as Python floats (std with ddof = 0, as torch-fidelity).

  Raises:
    ValueError: for mismatched feature dimensions or fewer than 2 features in a set.
  """
  a = np.asarray(features_a, np.float32)
  b = np.asarray(features_b, np.float32)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"expected features [N, d] with one d, got {a.shape} and {b.shape}")
  m = min(subset_size, len(a), len(b))
  if m < 2:
    raise ValueError(f"KID needs at least 2 features per set, got {len(a)} and {len(b)}")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be positive, got {num_subsets}")
  rng = np.random.default_rng(seed)
  index_a = np.stack([rng.choice(len(a), m, replace=False) for _ in range(num_subsets)])
  index_b = np.stack([rng.choice(len(b), m, replace=False) for _ in range(num_subsets)])
  sums = jax.device_get(_subset_sums(a, b, index_a.astype(np.int32), index_b.astype(np.int32)))
  values = _mmd2_from_sums(sums, m)
  return float(values.mean()), float(values.std())
