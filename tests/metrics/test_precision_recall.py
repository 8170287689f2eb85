"""Improved precision & recall, density & coverage against numpy and the authors' prdc."""

import numpy as np
import pytest

from jgen.metrics import precision_recall


def numpy_prdc(real, fake, k):
  """The four statistics from full float64 distance matrices (the definitions, unchunked)."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
  r_real = np.sort(dist(real, real), axis=1)[:, k]
  r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
  d = dist(real, fake)  # [real, fake]
  inside = d < r_real[:, None]
  return {"precision": inside.any(0).mean(), "recall": (d < r_fake[None]).any(1).mean(),
          "density": inside.sum(0).mean() / k, "coverage": (d.min(1) < r_real).mean()}, r_real


def test_radii_and_distances():
  x = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
  np.testing.assert_allclose(precision_recall.knn_radii(x, k=1), [1, 1, 2, 4], atol=1e-6)
  np.testing.assert_allclose(precision_recall.knn_radii(x, k=2), [3, 2, 3, 6], atol=1e-6)
  a = np.random.default_rng(0).normal(size=(5, 3))
  np.testing.assert_allclose(precision_recall.pairwise_distances(a, a[:2]),
                             np.linalg.norm(a[:, None] - a[None, :2], axis=-1), atol=1e-5)
  with pytest.raises(ValueError, match="N > 3"):
    precision_recall.knn_radii(x[:3], k=3)


def test_identical_sets_score_one_and_far_sets_zero():
  x = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float32)
  same = precision_recall.prdc(x, x.copy())
  assert same["precision"] == same["recall"] == same["coverage"] == 1.0
  assert same["density"] >= 1.0 / 3  # each point at least in its own ball
  far = precision_recall.prdc(x, x + 100.0)
  assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


@pytest.mark.parametrize("k,chunk", [(3, 512), (3, 7), (5, 64)])
def test_matches_numpy_definitions(k, chunk):
  rng = np.random.default_rng(k + chunk)
  real = rng.normal(size=(301, 24)).astype(np.float32)
  fake = (rng.normal(size=(257, 24)) * 1.2 + 0.3).astype(np.float32)
  ours = precision_recall.prdc(real, fake, k=k, chunk_size=chunk)
  ref, r_real = numpy_prdc(real, fake, k)
  np.testing.assert_allclose(precision_recall.knn_radii(real, k=k, chunk_size=chunk), r_real,
                             rtol=1e-5)
  for name, value in ref.items():
    assert ours[name] == pytest.approx(value, abs=1e-12), name
  assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1


def test_equals_the_prdc_package():
  prdc = pytest.importorskip("prdc", reason="the authors' prdc package is not installed "
                             "(pip install prdc)")
  rng = np.random.default_rng(2)
  for n_real, n_fake, d in [(500, 400, 64), (300, 600, 2048)]:
    real = np.abs(rng.normal(size=(n_real, d))).astype(np.float32)
    fake = (np.abs(rng.normal(size=(n_fake, d))) * 1.02 + 0.01).astype(np.float32)
    ref = prdc.compute_prdc(real, fake, nearest_k=3)
    ours = precision_recall.prdc(real, fake, k=3, chunk_size=128)
    for name, value in ref.items():
      assert ours[name] == pytest.approx(float(value), abs=1e-12), (name, n_real, d)
