"""Learning-rate schedules against their closed forms."""

import numpy as np
import pytest

from jgen.train.optim import learning_rate_schedule


def test_linear_holds_then_decays_to_zero():
  f = learning_rate_schedule(lr=2e-4, schedule="linear", total_steps=200, decay_from=0.5)
  steps = np.arange(201)
  want = np.where(steps < 100, 2e-4, 2e-4 * (200 - steps) / 100)
  np.testing.assert_allclose([float(f(i)) for i in steps], want, rtol=1e-5, atol=1e-12)


def test_linear_after_warmup_and_cosine():
  f = learning_rate_schedule(lr=1.0, warmup_steps=10, schedule="linear", total_steps=110,
                             decay_from=0.25)
  assert [float(f(i)) for i in (0, 5, 10, 35, 110)] == pytest.approx([0, 0.5, 1, 1, 0])
  assert float(f(72.5)) == pytest.approx(0.5)
  g = learning_rate_schedule(lr=1.0, schedule="cosine", total_steps=100)
  assert float(g(50)) == pytest.approx(0.5, abs=1e-6)


def test_bad_schedules_are_errors():
  with pytest.raises(ValueError, match="unknown learning-rate schedule"):
    learning_rate_schedule(lr=1.0, schedule="step")
  with pytest.raises(ValueError, match="total_steps > warmup_steps"):
    learning_rate_schedule(lr=1.0, schedule="linear", total_steps=None)
  with pytest.raises(ValueError, match="decay_from"):
    learning_rate_schedule(lr=1.0, schedule="linear", total_steps=10, decay_from=1.0)


def test_exponential_after_warmup_is_the_closed_form():
  f = learning_rate_schedule(lr=1e-3, warmup_steps=4, schedule="exponential", decay_rate=0.9)
  np.testing.assert_allclose([float(f(t)) for t in (0, 2, 4, 5, 14)],
                             [0.0, 5e-4, 1e-3, 1e-3 * 0.9, 1e-3 * 0.9 ** 10], rtol=1e-6)
  with pytest.raises(ValueError, match="decay_rate"):
    learning_rate_schedule(lr=1.0, schedule="exponential", decay_rate=1.5)
