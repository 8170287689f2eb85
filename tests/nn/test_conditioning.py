"""The conditioning convention: null condition, CFG dropout, sample labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import conditioning


def _conditions(b=1000):
  return {"label": jnp.arange(b) % 10, "attributes": jnp.ones((b, 4)),
          "context": jnp.ones((b, 3, 2))}


def test_null_condition():
  null = conditioning.null_conditions(_conditions(5), num_classes=10)
  np.testing.assert_array_equal(null["label"], np.full(5, 10))
  assert not np.any(null["attributes"]) and not np.any(null["context"])
  assert null["null"].all() and null["null"].shape == (5,)


def test_drop_conditions_drops_whole_examples_at_rate_p():
  c = _conditions()
  out = conditioning.drop_conditions(c, jax.random.key(0), 0.2, num_classes=10)
  drop = np.asarray(out["null"])
  assert abs(drop.mean() - 0.2) < 0.04  # 1000 Bernoulli(0.2): std 0.013
  np.testing.assert_array_equal(np.asarray(out["label"])[drop], 10)
  np.testing.assert_array_equal(np.asarray(out["label"])[~drop], np.asarray(c["label"])[~drop])
  assert not np.asarray(out["context"])[drop].any()
  assert np.asarray(out["attributes"])[~drop].all()


def test_sample_labels():
  np.testing.assert_array_equal(conditioning.sample_labels("", 12, 10), np.arange(12) % 10)
  np.testing.assert_array_equal(conditioning.sample_labels("3", 4, 10), [3, 3, 3, 3])
  np.testing.assert_array_equal(conditioning.sample_labels("1,2", 5, 10), [1, 2, 1, 2, 1])
  with pytest.raises(ValueError, match="0..9"):
    conditioning.sample_labels("12", 4, 10)
  with pytest.raises(ValueError, match="commas"):
    conditioning.sample_labels("a", 4, 10)


def test_conditions_from_batch():
  batch = {"image": jnp.zeros((2, 4, 4, 1)), "label": jnp.zeros(2, jnp.int32)}
  assert set(conditioning.conditions_from_batch(batch, ["label"])) == {"label"}
  with pytest.raises(KeyError, match="attributes"):
    conditioning.conditions_from_batch(batch, ["attributes"])
