"""The identity scores shared by the IP-Adapter and Face0 scorers of `jgen.cli.personalization`,
against values worked out by hand."""

import numpy as np

from jgen.cli import personalization


def test_identity_scores_by_hand():
  labels = np.array([0, 1, 1, 2])
  logits = np.eye(3)[[0, 1, 2, 2]]  # judged 0, 1, 2, 2: three of four right
  features = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
  ref = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
  other = np.array([0, 2, 1, 3])
  got = personalization._identity_scores({"logits": logits, "features": features}, labels, ref,
                                         other)
  # Own cosines 1, 1, 1/sqrt(2), 0; against ref[other] = (2,0), (1,0), (0,1), (0,1): 1, 0,
  # 1/sqrt(2), 0.
  assert got["num"] == 4
  assert got["accuracy"] == 0.75
  np.testing.assert_allclose(got["own_reference"], (2 + 2 ** -0.5) / 4, rtol=1e-12)
  np.testing.assert_allclose(got["other_reference"], (1 + 2 ** -0.5) / 4, rtol=1e-12)


def test_other_reference_is_another_image_of_the_same_digit():
  labels = np.array([3, 5, 3, 5, 3, 7])
  other = personalization._other_reference(labels, seed=0)
  assert np.all(labels[other] == labels)
  singles = np.bincount(labels)[labels] == 1
  assert np.all((other != np.arange(len(labels))) | singles)
