"""KID: the unbiased cubic-kernel MMD^2 against a direct float64 numpy computation."""

import numpy as np
import pytest

from jgen.metrics import mmd


def numpy_mmd2(x, y):
  """The unbiased estimator written out term by term, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  m, d = x.shape
  k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  off = ~np.eye(m, dtype=bool)
  return kxx[off].sum() / (m * (m - 1)) + kyy[off].sum() / (m * (m - 1)) - 2 * kxy.mean()


def test_polynomial_kernel():
  x = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)
  np.testing.assert_allclose(mmd.polynomial_kernel(x, x), (x @ x.T / 2 + 1) ** 3, rtol=1e-6)


def test_mmd2_matches_numpy():
  rng = np.random.default_rng(0)
  x = np.abs(rng.normal(size=(300, 64))).astype(np.float32)       # ReLU-like, as pool3
  y = (np.abs(rng.normal(size=(300, 64))) * 1.1).astype(np.float32)
  ref = numpy_mmd2(x, y)
  assert ref > 1e-3
  np.testing.assert_allclose(mmd.mmd2_unbiased(x, y), ref, rtol=1e-5)


def test_kid_with_full_subsets_is_the_mmd_of_the_sets():
  """With subset_size = N every subset is a permutation of all points: the unbiased MMD^2 does
  not depend on the order, so each subset gives the full-set value and the std is 0."""
  rng = np.random.default_rng(1)
  x = np.abs(rng.normal(size=(120, 32))).astype(np.float32)
  y = (np.abs(rng.normal(size=(150, 32))) + 0.05).astype(np.float32)
  mean, std = mmd.kid(x[:120], y[:120], num_subsets=4, subset_size=5000)  # capped at 120
  np.testing.assert_allclose(mean, numpy_mmd2(x, y[:120]), rtol=1e-5)
  assert std < 1e-5 * abs(mean)


def test_kid_is_unbiased_for_one_distribution():
  """Many small subsets of one distribution: KID averages to 0 (within its standard error),
  where the biased V-statistic (diagonal terms kept) is clearly positive."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4000, 16)).astype(np.float32)
  y = rng.normal(size=(4000, 16)).astype(np.float32)
  mean, std = mmd.kid(x, y, num_subsets=400, subset_size=20, seed=3)
  assert abs(mean) < 4 * std / np.sqrt(400)
  d = 16
  biased = np.mean([((a @ a.T / d + 1) ** 3).mean() + ((b @ b.T / d + 1) ** 3).mean()
                    - 2 * ((a @ b.T / d + 1) ** 3).mean()
                    for a, b in zip(x[:2000].reshape(100, 20, d), y[:2000].reshape(100, 20, d))])
  assert biased > 20 * std / np.sqrt(400)
  shifted, _ = mmd.kid(x, y + 0.5, num_subsets=20, subset_size=200)
  assert shifted > 10 * std / np.sqrt(400)


def test_kid_subsets_are_seeded_and_errors():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(50, 8)), rng.normal(size=(60, 8))
  assert mmd.kid(x, y, num_subsets=5, subset_size=10) == mmd.kid(x, y, num_subsets=5,
                                                                 subset_size=10)
  assert mmd.kid(x, y, num_subsets=5, subset_size=10, seed=1) != mmd.kid(
      x, y, num_subsets=5, subset_size=10)
  with pytest.raises(ValueError, match="one d"):
    mmd.kid(x, y[:, :4])
  with pytest.raises(ValueError, match="at least 2"):
    mmd.kid(x[:1], y)
