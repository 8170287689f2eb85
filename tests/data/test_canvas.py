"""jgen.data.canvas: examples side by side, named left to right in the label; and its wiring
into load_data after the example selection."""

import numpy as np
import pytest

from jgen import errors
from jgen.data import ArraySource
from jgen.data.canvas import Canvas, label_digits
from jgen.data.pipeline import make_dataset
from jgen.train import inputs
from tests.conftest import load_experiment


def _source(n=5, classes=10):
  images = (np.arange(n * 2 * 3) % 251).reshape(n, 2, 3, 1).astype(np.uint8)
  images[:, 0, 0, 0] = np.arange(n)          # each image identifiable by its first pixel
  return ArraySource(images, np.arange(n) % classes, num_classes=classes), images


def test_canvas_lays_examples_side_by_side_and_names_them_in_its_label():
  src, images = _source()
  canvas = Canvas(src, 2, seed=3)
  assert canvas.element_spec["image"][0] == (2, 6, 1) and canvas.num_classes == 100
  partners = []
  for epoch in range(3):
    row = []
    for i in range(5):
      ex = canvas[epoch * 5 + i]
      np.testing.assert_array_equal(ex["image"][:, :3], images[i])
      j = int(ex["image"][0, 3, 0])
      np.testing.assert_array_equal(ex["image"][:, 3:], images[j])
      assert int(ex["label"]) == 10 * i + j
      assert label_digits(int(ex["label"]), 10, 2) == (i, j)
      row.append(j)
    assert sorted(row) == list(range(5))      # each epoch's partners are a permutation
    partners.append(row)
  assert partners[0] != partners[1] or partners[1] != partners[2]   # redrawn per epoch
  again = Canvas(src, 2, seed=3)
  np.testing.assert_array_equal(again[7]["image"], canvas[7]["image"])   # pure in (seed, index)
  assert canvas.varies_by_pass


def test_three_slots_read_left_to_right_in_base_k():
  src, images = _source(n=4, classes=4)
  ex = Canvas(src, 3, seed=0)[2]
  slots = [int(ex["image"][0, 3 * s, 0]) for s in range(3)]
  assert slots[0] == 2 and int(ex["label"]) == slots[0] * 16 + slots[1] * 4 + slots[2]
  assert label_digits(int(ex["label"]), 4, 3) == tuple(slots)
  with pytest.raises(ValueError, match="outside"):
    label_digits(64, 4, 3)


def test_bad_canvases_are_refused():
  src, images = _source()
  with pytest.raises(errors.ConfigError, match="2 or more"):
    Canvas(src, 1)
  with pytest.raises(errors.ConfigError, match="labelled"):
    Canvas(ArraySource(images), 2)


def test_load_data_makes_canvases_of_the_selected_subject_and_refuses_flips():
  config = load_experiment("personalize/perfusion_digits", "smoke,canvas")
  source = inputs.load_data(config, split=config.data.split)
  assert len(source) == 4 and source.element_spec["image"][0] == (8, 16, 1)
  sevens = load_experiment("personalize/perfusion_digits", "smoke")
  single = inputs.load_data(sevens, split=sevens.data.split)
  for i in range(4):
    ex = source[i]
    assert int(ex["label"]) == 77
    np.testing.assert_array_equal(ex["image"][:, :8], single[i]["image"])
  ds = make_dataset(source, global_batch_size=4, seed=0)
  assert ds[0]["image"].shape == (4, 8, 16, 1)
  config.data.random_flip = True
  with pytest.raises(ValueError, match="random_flip"):
    inputs.load_data(config, split=config.data.split)
