"""data.train_examples: training reads only the first N examples of data.split; other splits
are whole; too many is a clear error."""

import numpy as np
import pytest

from jgen.train.inputs import load_data
from tests.conftest import load_experiment


def test_train_examples_takes_the_first_n_of_the_training_split_only():
  config = load_experiment("gan/dcgan_digits", "smoke")
  full = load_data(config, split=config.data.split)
  test_full = load_data(config, split=config.data.eval_split)
  config.data.train_examples = 10
  small = load_data(config, split=config.data.split)
  assert len(small) == 10
  for i in (0, 9):
    np.testing.assert_array_equal(small[i]["image"], full[i]["image"])
  assert len(load_data(config, split=config.data.eval_split)) == len(test_full)
  config.data.train_examples = len(full) + 1
  with pytest.raises(ValueError, match="train_examples"):
    load_data(config, split=config.data.split)
