"""Frechet distance (closed forms, a scipy.linalg.sqrtm reference), streaming statistics, the
statistics files and the FID command line."""

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util
from PIL import Image

from jgen import data as jdata
from jgen.errors import ConfigError
from jgen.metrics import domain, fid, mmd
from tests.conftest import REPO, subprocess_env
from tests.metrics import test_inception


def sqrtm_reference(mu1, sigma1, mu2, sigma2):
  """pytorch-fid's formula: tr of the real part of scipy's sqrtm of the product."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "singular matrix" for rank-deficient covariances
    covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_stats(rng, n, d, scale=1.0, shift=0.0):
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * scale + shift
  return x.mean(0), np.cov(x, rowvar=False)


def test_identical_gaussians_have_distance_zero():
  rng = np.random.default_rng(0)
  for n in (500, 20):  # full rank, and rank 19 in 32 dimensions
    mu, sigma = random_stats(rng, n, 32)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_shifted_means_give_the_squared_distance():
  rng = np.random.default_rng(1)
  mu, sigma = random_stats(rng, 100, 16)
  shift = rng.normal(size=16)
  np.testing.assert_allclose(fid.frechet_distance(mu, sigma, mu + shift, sigma), shift @ shift,
                             rtol=1e-9)


def test_diagonal_covariances_closed_form():
  a, b = np.array([1.0, 4.0, 9.0, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
  expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 3.0**2
  got = fid.frechet_distance(np.zeros(4), np.diag(a), np.array([3.0, 0, 0, 0]), np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  assert fid.frechet_distance(1.0, 4.0, 0.0, 1.0) == pytest.approx(2.0)  # 1-D: 1 + (2-1)^2


@pytest.mark.parametrize("n", [1000, 64, 33, 20, 8])  # 20, 8: rank-deficient (n <= d = 32)
def test_matches_scipy_sqrtm_reference(n):
  rng = np.random.default_rng(n)
  mu1, s1 = random_stats(rng, n, 32)
  mu2, s2 = random_stats(rng, n, 32, scale=1.3, shift=0.2)
  ours = fid.frechet_distance(mu1, s1, mu2, s2)
  np.testing.assert_allclose(ours, sqrtm_reference(mu1, s1, mu2, s2), rtol=1e-6)


def test_near_singular_covariances():
  """Eigenvalues spanning 12 orders of magnitude; the reference is exact here: with commuting
  covariances (one eigenbasis) tr((S1 S2)^1/2) = sum_i sqrt(a_i b_i)."""
  rng = np.random.default_rng(3)
  q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
  a = np.logspace(-10, 2, 24)
  b = rng.permutation(a) * 1.7
  s1, s2 = (q * a) @ q.T, (q * b) @ q.T
  expected = np.sum(a) + np.sum(b) - 2 * np.sum(np.sqrt(a * b))
  np.testing.assert_allclose(fid.frechet_distance(np.zeros(24), s1, np.zeros(24), s2), expected,
                             rtol=1e-9)
  np.testing.assert_allclose(sqrtm_reference(np.zeros(24), s1, np.zeros(24), s2), expected,
                             rtol=1e-6)


def test_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="mismatched"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_streaming_statistics_equal_batch_statistics():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(257, 7)).astype(np.float32) * 3 + 100  # large mean: a stability check
  stats = fid.GaussianStats(7)
  for lo, hi in [(0, 1), (1, 50), (50, 50), (50, 200), (200, 257)]:
    stats.update(x[lo:hi])
  assert stats.count == 257
  np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10,
                             atol=1e-12)
  a, b = fid.GaussianStats(7).update(x[:100]), fid.GaussianStats(7).update(x[100:])
  merged = a.merge(b)
  np.testing.assert_allclose(merged.cov, stats.cov, rtol=1e-10)
  with pytest.raises(ValueError, match="at least 2"):
    _ = fid.GaussianStats(7).update(x[:1]).cov
  with pytest.raises(ValueError, match="expected features"):
    stats.update(x[:, :3])


def test_stats_file_roundtrip(tmp_path):
  stats = fid.GaussianStats(5).update(np.random.default_rng(5).normal(size=(30, 5)))
  path = fid.save_stats(str(tmp_path / "s" / "stats.npz"), stats, net="test")
  loaded = fid.load_stats(path)
  np.testing.assert_array_equal(loaded["mu"], stats.mean)
  np.testing.assert_array_equal(loaded["sigma"], stats.cov)
  assert loaded["count"] == 30 and loaded["meta"] == {"net": "test"}
  assert fid.fid_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-9)
  np.savez(tmp_path / "bad.npz", x=np.zeros(3))
  with pytest.raises(ValueError, match="no statistics"):
    fid.load_stats(str(tmp_path / "bad.npz"))


def _write_folder(path, images):
  os.makedirs(path)
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0]).save(os.path.join(path, f"{i:03d}.png"))


def _cli(*args):
  result = subprocess.run([sys.executable, "-m", "jgen.metrics.fid", *map(str, args)],
                          env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "RuntimeWarning" not in result.stderr  # python -m runs the module once
  return dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())


@pytest.fixture
def folders(tmp_path):
  images = jdata.load_source("digits", split="train").images
  _write_folder(tmp_path / "a", images[:40])
  _write_folder(tmp_path / "b", images[40:70] // 2 + 60)
  return tmp_path / "a", tmp_path / "b"


def test_command_line_with_domain_features(tmp_path, folders, monkeypatch):
  """`python -m jgen.metrics.fid A B --features domain:digits --kid` on two folders of PNGs.

  The domain classifier comes from the cache (``$JGEN_CACHE/domain/digits.npz``), written here
  by `domain.load_feature_net` itself with its training replaced by a random initialization.
  """
  monkeypatch.setattr(domain, "train_classifier", lambda x, y, **kw: domain.DomainClassifier(
      num_classes=kw.get("num_classes", 10)).init(jax.random.key(0), jnp.zeros((1, 16, 16, 1))))
  net = domain.load_feature_net("digits")
  a, b = folders
  out = _cli(a, b, "--features", "domain:digits", "--kid",
             "--save_stats", tmp_path / "a_stats.npz")
  assert out["FID"].endswith("[domain FID (domain-digits): not comparable to Inception FID]")
  value = float(out["FID"].split()[0])
  kid_mean = float(out["KID"].split(" +- ")[0])
  images = [fid.load_images(str(p)) for p in folders]
  stats = [fid.GaussianStats(net.feature_dim).update(net(x)["features"]) for x in images]
  assert value == pytest.approx(fid.fid_from_stats(*stats), rel=1e-5, abs=1e-6)
  assert kid_mean == pytest.approx(mmd.kid(net(images[0])["features"], net(images[1])["features"],
                                           subset_size=30)[0], rel=1e-4, abs=1e-6)
  # In process, from the saved statistics of A: the same FID.
  again = fid.main([str(tmp_path / "a_stats.npz"), str(b), "--features", "domain:digits"])
  assert again["fid"] == pytest.approx(value, rel=1e-5, abs=1e-6)
  with pytest.raises(ConfigError, match="needs images"):
    fid.main([str(tmp_path / "a_stats.npz"), str(b), "--kid", "--features", "domain:digits"])


@pytest.mark.slow
def test_command_line_with_random_weight_inception(tmp_path, folders):
  """The Inception path of the command line, with a random-weight FID Inception saved as a
  converted .npz (2048-d statistics: the Frechet distance alone takes seconds)."""
  flat = traverse_util.flatten_dict(jax.device_get(test_inception.random_variables(0)), sep="/")
  np.savez(tmp_path / "inception.npz", **{k: np.asarray(v) for k, v in flat.items()})
  a, b = folders
  out = _cli(a, b, "--weights", tmp_path / "inception.npz", "--batch_size", "16")
  assert float(out["FID"]) > 0 and "domain" not in out["FID"]
