"""The 2-D mode-collapse benchmark: mixtures, mode metrics and the one-scan trainer."""

import jax
import numpy as np
import pytest

from jgen.gan import toy


@pytest.mark.parametrize("kind,k", [("ring", 8), ("grid", 25)])
def test_mixture_samples_cover_every_mode(kind, k):
  means = toy.mixture_means(kind)
  assert means.shape == (k, 2)
  samples = np.asarray(toy.sample_mixture(jax.random.key(0), means, 0.05, 5000))
  m = toy.mode_metrics(samples, means, 0.05)
  assert m["modes"] == k and m["num_modes"] == k
  assert m["high_quality"] > 0.98  # 3 std of a 2-D Gaussian hold 98.9% of its mass


def test_mode_metrics_count_collapse_and_junk():
  means = toy.mixture_means("ring")
  collapsed = np.repeat(means[:1], 100, axis=0)        # every sample on mode 0
  far = np.full((100, 2), 10.0)                        # nowhere near a mode
  m = toy.mode_metrics(np.concatenate([collapsed, far]), means, 0.05)
  assert m["modes"] == 1
  assert m["high_quality"] == pytest.approx(0.5)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="ring"):
    toy.mixture_means("spiral")


@pytest.mark.parametrize("name", [
    "wgan_gp", pytest.param("wgan", marks=pytest.mark.slow),
    pytest.param("gan", marks=pytest.mark.slow)])
def test_train_toy_runs(name):
  means = toy.mixture_means("ring")
  samples = toy.train_toy(toy.TOY_METHODS[name], means, 0.05, jax.random.key(0), steps=3,
                          batch=16, hidden=8, num_samples=32)
  assert samples.shape == (32, 2) and np.all(np.isfinite(samples))
