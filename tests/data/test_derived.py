"""Tests of jgen.data.derived: transforms against SciPy/PIL references, fields, masks, flips."""

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage
import tensorflow_datasets as tfds

from jgen import data as jdata
from jgen.data import derived
from tests.data.helpers import check_specs


def _images(seed: int = 0, shape=(12, 16, 3)) -> np.ndarray:
  """Smooth-ish random images (a blurred noise field), so edges are not all saturated."""
  noise = np.random.default_rng(seed).uniform(0, 255, (4, *shape))
  return np.clip(ndimage.uniform_filter(noise, size=(1, 3, 3, 1)) * 1.5 - 60, 0, 255).astype(
      np.uint8)


def _luma(image: np.ndarray) -> np.ndarray:
  return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_edges_equal_scipy_sobel():
  for image in _images(0):
    luma = _luma(image)
    magnitude = np.hypot(ndimage.sobel(luma, axis=0, mode="reflect"),
                         ndimage.sobel(luma, axis=1, mode="reflect"))
    expect = np.clip(np.rint(magnitude / 4), 0, 255).astype(np.uint8)
    got = derived.sobel_edges(image)
    assert got.shape == image.shape and got.dtype == np.uint8
    for c in range(3):
      np.testing.assert_array_equal(got[..., c], expect)
  step = np.zeros((6, 6, 1), np.uint8)
  step[:, 3:] = 200  # a vertical step of height 200 gives 200 on both sides of it
  np.testing.assert_array_equal(derived.sobel_edges(step)[0, :, 0], [0, 0, 200, 200, 0, 0])


def test_grayscale_equals_pil():
  for image in _images(1):
    got = derived.grayscale_image(image)
    expect = np.asarray(Image.fromarray(image).convert("L")).astype(int)
    assert got.shape == image.shape
    assert np.abs(got[..., 0].astype(int) - expect).max() <= 1
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_equals_pil_box_then_nearest(factor):
  for image in _images(2):
    low = Image.fromarray(image).reduce(factor)  # box (area) average
    expect = np.asarray(low.resize(image.shape[1::-1], Image.Resampling.NEAREST)).astype(int)
    got = derived.downsample_image(image, factor)
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expect).max() <= 1
    blocks = got.reshape(image.shape[0] // factor, factor, -1, factor, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # constant K x K blocks
  with pytest.raises(ValueError, match="divisible by 5"):
    derived.downsample_image(_images(2)[0], 5)


def test_derived_sources_keep_labels_and_specs():
  for transform in ("edges", "grayscale", "inverted", "downsample:2", "mask:center", "mask:box"):
    src = jdata.load_source(f"derived:{transform}:digits", split="test", image_size=16,
                            channels=3, resize=True)
    digits = jdata.load_source("digits", split="test", image_size=16, channels=3, resize=True)
    assert isinstance(src, jdata.DerivedPairSource) and len(src) == len(digits)
    assert src.image_shape == (16, 16, 3) and src.num_classes == 10
    ex = src[7]
    np.testing.assert_array_equal(ex["target"], digits[7]["image"])
    assert ex["label"] == digits[7]["label"]
    assert ex["source"].shape == ex["target"].shape  # 1-channel results repeated to 3
    batch = check_specs(src, random_flip=True)
    assert batch["label"].dtype == np.int32
  np.testing.assert_array_equal(
      jdata.load_source("derived:edges:digits")[3]["source"],
      derived.sobel_edges(jdata.load_source("digits")[3]["image"]))
  np.testing.assert_array_equal(  # the negative, as jgen.gan.domains.inverted on [-1, 1]
      jdata.load_source("derived:inverted:digits")[3]["source"].astype(int),
      255 - jdata.load_source("digits")[3]["image"].astype(int))
  with pytest.raises(ValueError, match="divisible by 3"):
    jdata.load_source("derived:downsample:3:digits")


def test_masks():
  src = jdata.load_source("derived:mask:box:digits", image_size=16, resize=True, seed=3)
  n = len(src)
  assert src.varies_by_pass
  ex = src[5]
  assert ex["mask"].dtype == np.float32 and ex["mask"].shape == (16, 16, 1)
  hole = ex["mask"][..., 0] > 0
  assert (ex["source"][hole] == 0).all()
  np.testing.assert_array_equal(ex["source"][~hole], ex["target"][~hole])
  rows, cols = np.nonzero(hole)
  assert 4 <= rows.max() - rows.min() + 1 <= 8 and 4 <= cols.max() - cols.min() + 1 <= 8
  assert hole.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
  again = jdata.load_source("derived:mask:box:digits", image_size=16, resize=True, seed=3)
  np.testing.assert_array_equal(again[5]["mask"], ex["mask"])
  next_pass = src[n + 5]  # the same image, a new mask the next epoch
  np.testing.assert_array_equal(next_pass["target"], ex["target"])
  masks = [src[p * n + 5]["mask"] for p in range(5)]
  assert any(not np.array_equal(masks[0], m) for m in masks[1:])
  center = jdata.load_source("derived:mask:center:digits")[0]["mask"][..., 0]
  np.testing.assert_array_equal(np.nonzero(center.any(1))[0], [2, 3, 4, 5])
  np.testing.assert_array_equal(np.nonzero(center.any(0))[0], [2, 3, 4, 5])


def test_mask_flips_with_source_and_target():
  src = jdata.load_source("derived:mask:box:digits", image_size=16, resize=True)
  ds = jdata.make_dataset(src, global_batch_size=32, seed=1, random_flip=True)
  for step in range(3):
    b = ds[step]
    # Masked pixels of the source are -1 (uint8 0); elsewhere the source is the target.
    np.testing.assert_allclose(b["source"], np.where(b["mask"] > 0, -1.0, b["target"]),
                               atol=1e-6)
    assert set(np.unique(b["mask"])) == {0.0, 1.0}


def test_derived_from_mocked_tfds(monkeypatch):
  # tfds's mock data source breaks batched reads (its __getitems__ is bound without `self`).
  monkeypatch.delattr(jdata.TfdsSource, "_getitems")
  with tfds.testing.mock_data(num_examples=4):
    src = jdata.load_source("derived:downsample:4:tfds:mnist", split="train")
    assert src.element_spec["source"] == ((28, 28, 1), np.uint8) and src.num_classes == 10
    check_specs(src)


def test_derived_needs_images():
  with pytest.raises(ValueError, match="'image' field"):
    jdata.DerivedPairSource(jdata.PairedSource(np.zeros((2, 4, 4, 1), np.uint8),
                                               np.zeros((2, 4, 4, 1), np.uint8)), "edges")
  with pytest.raises(ValueError, match="unknown derived transform"):
    derived.parse_transform("downsample:1")
