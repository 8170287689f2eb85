"""Fixtures of the metric tests: an isolated cache and a fast, untrained domain feature net."""

import jax
import jax.numpy as jnp
import pytest

from jgen.metrics import domain


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
  """Every metric test writes its caches (statistics, converted weights) under tmp_path."""
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "jgen-cache"))
  return tmp_path / "jgen-cache"


def random_domain_net(seed: int = 0, batch_size: int = 500) -> domain.DomainFeatureNet:
  """A `DomainFeatureNet` with randomly initialized (untrained) weights: a real network of
  the real architecture, without the training run of `domain.load_feature_net`."""
  params = domain.DomainClassifier().init(jax.random.key(seed), jnp.zeros((1, 16, 16, 1)))
  return domain.DomainFeatureNet("digits", params, image_size=16, batch_size=batch_size,
                                 meta={"test_accuracy": float("nan"), "untrained": True})
