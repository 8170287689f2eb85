"""Tests of jgen.data.unpaired_derived: disjoint train halves, true eval pairs, specs, labels."""

import numpy as np
import pytest

from jgen import data as jdata
from jgen.data import derived, sources, unpaired_derived
from tests.data.helpers import check_specs


def _key(image: np.ndarray) -> bytes:
  return np.ascontiguousarray(image).tobytes()


def test_train_split_domains_come_from_disjoint_halves():
  digits = jdata.load_source("digits", split="train", image_size=16, resize=True)
  src = jdata.load_source("unpaired_derived:edges:digits", split="train", image_size=16,
                          resize=True, seed=3)
  n = len(digits)
  assert isinstance(src, jdata.UnpairedSource) and src.varies_by_pass
  assert [len(d) for d in src.domains] == [n - n // 2, n // 2] and len(src) == n - n // 2
  # Every A image is an image of the first half, every B image the edges of one of the second.
  first = {_key(digits[i]["image"]): i for i in range(n - n // 2)}
  second = {_key(derived.sobel_edges(digits[i]["image"])): i for i in range(n - n // 2, n)}
  seen_a, seen_b = set(), set()
  for index in range(0, 3 * len(src), 7):
    example = src[index]
    i, j = first[_key(example["image_a"])], second[_key(example["image_b"])]
    assert example["label_a"] == digits[i]["label"] and example["label_b"] == digits[j]["label"]
    seen_a.add(i)
    seen_b.add(j)
  assert seen_a.isdisjoint(seen_b) and len(seen_a) > 100 and len(seen_b) > 100
  a, b = src.indices(5)  # the domains' own numbering: A's k is digit k, B's k is digit cut + k
  np.testing.assert_array_equal(src[5]["image_a"], digits[a]["image"])
  np.testing.assert_array_equal(src[5]["image_b"],
                                derived.sobel_edges(digits[n - n // 2 + b]["image"]))
  assert src.element_spec == {"image_a": ((16, 16, 1), np.uint8),
                              "image_b": ((16, 16, 1), np.uint8),
                              "label_a": ((), np.int32), "label_b": ((), np.int32)}
  batch = check_specs(src, batch_size=8)
  assert set(batch) == {"image_a", "image_b", "label_a", "label_b"}
  assert batch["image_a"].dtype == np.float32 and batch["label_a"].dtype == np.int32


def test_eval_split_gives_true_pairs_with_labels():
  digits = jdata.load_source("digits", split="test")
  src = jdata.load_source("unpaired_derived:edges:digits", split="test")
  assert isinstance(src, unpaired_derived.TruePairSource)
  assert len(src) == len(digits) == sources.DIGITS_NUM_TEST and src.num_classes == 10
  for i in (0, 17, len(src) - 1):
    example = src[i]
    np.testing.assert_array_equal(example["image_a"], digits[i]["image"])
    np.testing.assert_array_equal(example["image_b"], derived.sobel_edges(digits[i]["image"]))
    assert example["label"] == digits[i]["label"] and example["paired"]
  assert src.element_spec == {"image_a": ((8, 8, 1), np.uint8), "image_b": ((8, 8, 1), np.uint8),
                              "label": ((), np.int32), "paired": ((), np.bool_)}
  batch = check_specs(src, batch_size=8)
  assert batch["paired"].dtype == np.float32 and (batch["paired"] == 1.0).all()
  # Batches keep the pairs: image_b is the edges of image_a, row by row.
  for a, b in zip(batch["image_a"], batch["image_b"]):
    a8 = np.rint((a + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(np.rint((b + 1) * 127.5).astype(np.uint8),
                                  derived.sobel_edges(a8))


def test_splits_and_other_transforms():
  assert unpaired_derived.is_unpaired_split("train")
  assert unpaired_derived.is_unpaired_split("train[:50%]")
  assert not unpaired_derived.is_unpaired_split("test")
  src = jdata.load_source("unpaired_derived:downsample:2:digits", split="train")
  example = src[0]
  np.testing.assert_array_equal(example["image_b"], derived.downsample_image(
      jdata.load_source("digits")[750 + src.indices(0)[1]]["image"], 2))
  masked = jdata.load_source("unpaired_derived:mask:center:digits", split="test")
  assert set(masked.element_spec) == {"image_a", "image_b", "label", "paired", "mask"}
  check_specs(masked)


def test_unlabelled_inner_and_errors(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
  np.savez(tmp_path / "x.npz", images=images)
  src = jdata.load_source(f"unpaired_derived:edges:npz:{tmp_path / 'x.npz'}", split="train")
  assert set(src.element_spec) == {"image_a", "image_b"} and len(src) == 3
  assert [len(d) for d in src.domains] == [3, 2]
  pairs = jdata.load_source(f"unpaired_derived:edges:npz:{tmp_path / 'x.npz'}", split="test")
  assert set(pairs.element_spec) == {"image_a", "image_b", "paired"}
  with pytest.raises(ValueError, match="valid"):
    jdata.load_source("unpaired_derived:edges")
  with pytest.raises(ValueError, match="unknown derived transform"):
    jdata.load_source("unpaired_derived:blur:digits")
  with pytest.raises(ValueError, match="at least 2 images"):
    unpaired_derived.unpaired_derived(jdata.ArraySource(images[:1]), "edges", paired=False)
  with pytest.raises(ValueError, match="label"):
    jdata.UnpairedSource(jdata.ArraySource(images), jdata.ArraySource(images), labels=True)


def test_flips_keep_true_pairs_together():
  from jgen.data.pipeline import _flip
  a = np.arange(12, dtype=np.uint8).reshape(2, 6, 1)
  pair = {"image_a": a, "image_b": a + 100, "paired": np.bool_(True)}
  for coins in ([0.9, 0.1, 0.9], [0.1, 0.9, 0.1]):
    out = _flip(pair, np.asarray(coins))
    np.testing.assert_array_equal(out["image_b"], out["image_a"] + 100)
  unpaired = _flip({"image_a": a, "image_b": a}, np.asarray([0.9, 0.1, 0.9]))
  assert not np.array_equal(unpaired["image_a"], unpaired["image_b"])
