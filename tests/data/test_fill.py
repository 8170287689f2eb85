"""Tests of jgen.data.fill (the offline fill50k) and the `outline` transform: discs against their
closed form, outlines against SciPy's binary erosion, determinism, specs, errors."""

import numpy as np
import pytest
from scipy import ndimage

from jgen import data as jdata
from jgen.data import derived
from jgen.data.fill import BACKGROUND, FILL_COLORS, FillSource
from tests.data.helpers import check_specs


def test_discs_match_their_geometry():
  source = FillSource("test", size=32)
  radii = []
  for i in range(40):
    cy, cx, r, label = source.geometry(i)
    image = source[i]["image"]
    assert source[i]["label"] == label
    assert 0.15 * 32 <= r <= 0.35 * 32 and r + 1 <= cy <= 31 - r and r + 1 <= cx <= 31 - r
    inside = np.all(image == FILL_COLORS[label][1], axis=-1)
    assert np.all(image[~inside] == BACKGROUND)
    rows, cols = np.nonzero(inside)
    # Every disc pixel's centre lies within r of the centre; every pixel centre within r is in.
    d2 = (np.arange(32)[:, None] + 0.5 - cy) ** 2 + (np.arange(32)[None, :] + 0.5 - cx) ** 2
    np.testing.assert_array_equal(inside, d2 <= r * r)
    # The area is pi r^2 to within the pixels the boundary crosses (about 2 pi r of them).
    assert abs(inside.sum() - np.pi * r * r) <= 2 * np.pi * r
    assert abs(rows.mean() + 0.5 - cy) < 0.5 and abs(cols.mean() + 0.5 - cx) < 0.5
    radii.append(r)
  assert np.std(radii) > 1.0


def test_fixed_dataset_splits_and_labels():
  train, test = FillSource("train"), FillSource("test")
  assert (len(train), len(test)) == (50_000, 1_000)
  again = FillSource("train")
  np.testing.assert_array_equal(train[123]["image"], again[123]["image"])
  assert not np.array_equal(train[5]["image"], test[5]["image"])
  counts = np.bincount([int(test[i]["label"]) for i in range(len(test))], minlength=8)
  assert counts.min() > 80  # uniform over the 8 colours: 125 each expected
  assert train.class_names == tuple(name for name, _ in FILL_COLORS)
  big = FillSource("test", size=64)
  assert big[0]["image"].shape == (64, 64, 3)


def test_outline_is_the_inner_boundary():
  source = FillSource("test", size=32)
  for i in range(10):
    image = source[i]["image"]
    disc = np.any(image != BACKGROUND, axis=-1)
    want = disc & ~ndimage.binary_erosion(disc, border_value=1)  # 4-neighbour structure
    got = derived.outline_image(image)
    assert got.shape == image.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0] == 255, want)
    assert set(np.unique(got)) <= {0, 255}
  square = np.zeros((6, 6, 1), np.uint8)
  square[1:5, 1:5] = 200          # a 4x4 square: its 12 border pixels
  np.testing.assert_array_equal(derived.outline_image(square)[..., 0] > 0,
                                np.pad(np.pad(np.zeros((2, 2), bool), 1, constant_values=True),
                                       1))
  faint = np.zeros((6, 6, 3), np.uint8)
  faint[2:4, 2:4] = derived.OUTLINE_TOLERANCE  # not above the tolerance: no foreground
  assert not derived.outline_image(faint).any()


def test_specs_and_the_derived_pairs():
  pairs = jdata.load_source("derived:outline:fill", split="test")
  assert set(pairs.element_spec) == {"source", "target", "label"}
  assert pairs.num_classes == 8 and pairs.image_shape == (32, 32, 3)
  batch = check_specs(pairs)
  assert batch["source"].min() == -1.0 and batch["source"].max() == 1.0
  np.testing.assert_array_equal(pairs[7]["source"], derived.outline_image(pairs[7]["target"]))
  check_specs(jdata.load_source("fill", split="train", image_size=16, channels=3))


def test_bad_requests_are_clear_errors():
  with pytest.raises(ValueError, match="splits 'train'"):
    jdata.load_source("fill", split="validation")
  with pytest.raises(ValueError, match="3 channels"):
    jdata.load_source("fill", channels=1)
  with pytest.raises(IndexError):
    FillSource("test")[1000]
  with pytest.raises(ValueError, match="'fill'"):
    jdata.load_source("fil")
