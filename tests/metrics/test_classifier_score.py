"""Inception Score from logits: closed forms and a direct numpy computation."""

import numpy as np
import pytest

from jgen.metrics import classifier_score


def test_one_hot_uniform_logits_give_the_number_of_classes():
  k, splits = 7, 10
  labels = np.tile(np.arange(k), 3 * splits)           # every split holds each class 3 times
  logits = 1000.0 * np.eye(k)[labels]                  # confident: p(y|x) one-hot
  mean, std = classifier_score.inception_score(logits, splits=splits)
  assert mean == pytest.approx(k, rel=1e-12) and std < 1e-9
  mean, _ = classifier_score.inception_score(1000.0 * np.eye(1008)[np.arange(1008)], splits=1)
  assert mean == pytest.approx(1008, rel=1e-9)


def test_constant_logits_give_one():
  logits = np.tile(np.random.default_rng(0).normal(size=10), (50, 1))
  mean, std = classifier_score.inception_score(logits, splits=5)
  assert mean == pytest.approx(1.0, abs=1e-12) and std < 1e-12
  one_class = 1000.0 * np.eye(10)[np.zeros(40, int)]  # confident but all alike: p(y) one-hot
  assert classifier_score.inception_score(one_class, splits=4)[0] == pytest.approx(1.0)


def test_matches_numpy_reference():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(103, 12)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for part in np.array_split(p, 4):
    py = part.mean(0)
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), axis=1))))
  mean, std = classifier_score.inception_score(logits, splits=4)
  np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-10)
  assert 1.0 < mean < 12.0


def test_logits_choice_and_errors():
  out = {"features": np.zeros((2, 3)), "logits": np.ones((2, 4)),
         "logits_unbiased": np.zeros((2, 4))}
  assert classifier_score.logits_for_is(out) is out["logits_unbiased"]
  del out["logits_unbiased"]
  assert classifier_score.logits_for_is(out) is out["logits"]
  with pytest.raises(ValueError, match="logits"):
    classifier_score.logits_for_is({"features": np.zeros((2, 3))})
  with pytest.raises(ValueError, match="one sample per split"):
    classifier_score.inception_score(np.zeros((5, 3)), splits=10)
