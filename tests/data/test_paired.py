"""Tests of jgen.data.paired: pix2pix folders/zips, CycleGAN domains, tfds domains (offline)."""

import pathlib
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from jgen import data as jdata
from tests.data.helpers import check_specs

H, W = 4, 6


def _save(path: pathlib.Path, array: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _pair(rng) -> tuple[np.ndarray, np.ndarray]:
  return (rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
          rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def _zip(root: pathlib.Path, path: pathlib.Path, wrapper: str = "") -> pathlib.Path:
  with zipfile.ZipFile(path, "w") as zf:
    for f in sorted(root.rglob("*"), reverse=True):
      if f.is_file():
        zf.write(f, wrapper + f.relative_to(root).as_posix())
  return path


# ----------------------------------------------------------------------------- paired


def test_side_by_side_folder_and_zip_both_directions(tmp_path):
  rng = np.random.default_rng(0)
  pairs = {}
  for split, n in (("train", 3), ("test", 2)):
    for i in range(n):
      a, b = _pair(rng)
      pairs[split, i] = (a, b)
      _save(tmp_path / "tree" / split / f"{i}.png", np.concatenate([a, b], axis=1))
  zipped = _zip(tmp_path / "tree", tmp_path / "facades.zip", wrapper="facades/")
  for path in (tmp_path / "tree", zipped):
    src = jdata.load_source(f"paired:{path}", split="train")
    assert isinstance(src, jdata.PairedSource) and len(src) == 3 and src.num_classes is None
    assert src.image_shape == (H, W, 3) and src.names == ("0.png", "1.png", "2.png")
    for i in range(3):
      np.testing.assert_array_equal(src[i]["source"], pairs["train", i][0])  # left = A
      np.testing.assert_array_equal(src[i]["target"], pairs["train", i][1])
    btoa = jdata.load_source(f"paired_btoa:{path}", split="test")
    np.testing.assert_array_equal(btoa[1]["source"], pairs["test", 1][1])
    np.testing.assert_array_equal(btoa[1]["target"], pairs["test", 1][0])
  batch = check_specs(src, random_flip=True)
  assert set(batch) == {"source", "target"} and batch["source"].dtype == np.float32


@pytest.mark.parametrize("layout", ["A/train", "train/A"])
def test_a_b_folders_match_by_name(tmp_path, layout):
  rng = np.random.default_rng(1)
  pairs = {}
  for name in ("b", "a", "c"):
    pairs[name] = _pair(rng)
    for domain, ext, array in (("A", "png", pairs[name][0]), ("B", "bmp", pairs[name][1])):
      folder = layout.replace("A", domain)
      _save(tmp_path / folder / f"{name}.{ext}", array)
  _save(tmp_path / layout.replace("train", "test") / "x.png", pairs["a"][0])
  _save(tmp_path / layout.replace("train", "test").replace("A", "B") / "x.png", pairs["a"][1])
  src = jdata.load_source(f"paired:{tmp_path}", split="train")
  assert len(src) == 3 and src.names == ("a", "b", "c")
  for i, name in enumerate("abc"):
    np.testing.assert_array_equal(src[i]["source"], pairs[name][0])
    np.testing.assert_array_equal(src[i]["target"], pairs[name][1])
  assert len(jdata.load_source(f"paired:{tmp_path}", split="test")) == 1
  big = jdata.load_source(f"paired:{tmp_path}", image_size=8, channels=1, resize=True)
  assert big.element_spec == {"source": ((8, 8, 1), np.uint8), "target": ((8, 8, 1), np.uint8)}
  with pytest.raises(ValueError, match=r"\(4, 6, 3\)"):
    jdata.load_source(f"paired:{tmp_path}", image_size=8)


def test_mismatched_names_and_odd_width(tmp_path):
  rng = np.random.default_rng(2)
  for name in ("1", "2", "3"):
    _save(tmp_path / "ab" / "A" / f"{name}.png", _pair(rng)[0])
  for name in ("1", "4"):
    _save(tmp_path / "ab" / "B" / f"{name}.png", _pair(rng)[0])
  with pytest.raises(ValueError) as e:
    jdata.load_source(f"paired:{tmp_path / 'ab'}")
  msg = str(e.value)
  assert "2 only in A/" in msg and "'2', '3'" in msg and "1 only in B/" in msg and "'4'" in msg
  _save(tmp_path / "odd" / "x.png", rng.integers(0, 256, (4, 7, 3), dtype=np.uint8))
  with pytest.raises(ValueError, match="x.png is 7 pixels wide, an odd width"):
    jdata.load_source(f"paired:{tmp_path / 'odd'}")
  with pytest.raises(jdata.DatasetUnavailableError, match="does not exist"):
    jdata.load_source(f"paired:{tmp_path / 'nope'}")


def test_joint_flips_on_pipeline_batches():
  """source and target flip together: target = 255 - source survives every flip."""
  ramp = np.broadcast_to(np.arange(W, dtype=np.uint8) * 40, (16, H, W)).copy()[..., None]
  src = jdata.PairedSource(ramp, 255 - ramp)
  ds = jdata.make_dataset(src, global_batch_size=8, seed=0, random_flip=True)
  flipped = []
  for step in range(6):
    batch = ds[step]
    np.testing.assert_allclose(batch["target"], -batch["source"], atol=1e-6)
    flipped.append(batch["source"][:, 0, 0, 0] > batch["source"][:, 0, -1, 0])
  assert 0 < np.mean(flipped) < 1


# ----------------------------------------------------------------------------- unpaired


def _domains(na: int = 5, nb: int = 3) -> tuple[jdata.ArraySource, jdata.ArraySource]:
  """Image k of a domain: a horizontal ramp whose pixel [0, 0] is k (its id)."""
  def domain(n):
    images = np.broadcast_to(np.arange(W, dtype=np.uint8) * 40 + 20, (n, H, W)).copy()
    images[:, 0, 0] = np.arange(n)
    return jdata.ArraySource(images[..., None])
  return domain(na), domain(nb)


def test_unpaired_passes_cover_both_domains_independently():
  src = jdata.UnpairedSource(*_domains(5, 3), seed=7)
  assert len(src) == 5 and src.varies_by_pass
  passes = np.array([[src.indices(p * 5 + j) for j in range(5)] for p in range(40)])
  for p in range(40):
    assert sorted(passes[p, :, 0]) == list(range(5))  # A: a permutation per pass
    assert set(passes[p, :, 1]) == {0, 1, 2}            # B: every image in every pass
  # Which B image meets A image a is not fixed: over passes every B image meets every A image.
  for a in range(5):
    met = {b for p in range(40) for a_, b in passes[p] if a_ == a}
    assert met == {0, 1, 2}
  np.testing.assert_array_equal(src[12]["image_a"][0, 0], passes[2, 2, 0])
  again = jdata.UnpairedSource(*_domains(5, 3), seed=7)
  assert [again.indices(i) for i in range(50)] == [src.indices(i) for i in range(50)]
  other = jdata.UnpairedSource(*_domains(5, 3), seed=8)
  assert [other.indices(i) for i in range(50)] != [src.indices(i) for i in range(50)]


def test_unpaired_pipeline_pairs_change_between_epochs_and_flip_independently():
  src = jdata.UnpairedSource(*_domains(8, 8))
  batch = check_specs(src, batch_size=8)
  assert set(batch) == {"image_a", "image_b"}
  ds = jdata.make_dataset(src, global_batch_size=8, seed=0, random_flip=True)
  ids = lambda x: np.rint((np.where(x[:, 0, 0, 0] < x[:, 0, -1, 0], x[:, 0, 0, 0],
                                    x[:, 0, -1, 0]) + 1) * 127.5).astype(int)
  partners = {a: set() for a in range(8)}
  flips = []
  for epoch in range(6):
    b = ds[epoch]
    a_ids, b_ids = ids(b["image_a"]), ids(b["image_b"])
    assert sorted(a_ids) == sorted(b_ids) == list(range(8))  # equal sizes: both full per pass
    for a, b_id in zip(a_ids, b_ids):
      partners[a].add(b_id)
    flips.append(np.stack([b[k][:, 0, 0, 0] > b[k][:, 0, -1, 0]
                           for k in ("image_a", "image_b")], axis=1))
  assert all(len(p) > 1 for p in partners.values())  # not one fixed partner per image_a
  flips = np.concatenate(flips)
  assert (flips[:, 0] != flips[:, 1]).any() and (flips[:, 0] == flips[:, 1]).any()


def test_unpaired_folder_and_zip(tmp_path):
  rng = np.random.default_rng(3)
  arrays = {}
  for folder, n in (("trainA", 4), ("trainB", 2), ("testA", 1), ("testB", 3)):
    for i in range(n):
      arrays[folder, i] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
      _save(tmp_path / "tree" / folder / f"{i}.png", arrays[folder, i])
  zipped = _zip(tmp_path / "tree", tmp_path / "h2z.zip", wrapper="horse2zebra/")
  for path in (tmp_path / "tree", zipped):
    src = jdata.load_source(f"unpaired:{path}", split="train", seed=1)
    assert len(src) == 4 and src.image_shape == (H, W, 3)
    a, b = src.indices(2)
    np.testing.assert_array_equal(src[2]["image_a"], arrays["trainA", a])
    np.testing.assert_array_equal(src[2]["image_b"], arrays["trainB", b])
    assert len(jdata.load_source(f"unpaired:{path}", split="test")) == 3
  check_specs(src, random_flip=True)
  with pytest.raises(jdata.DatasetUnavailableError, match="no images in 'valA/'"):
    jdata.load_source(f"unpaired:{tmp_path / 'tree'}", split="val")


def test_unpaired_two_specs_and_shape_check(tmp_path):
  images = np.random.default_rng(4).integers(0, 256, (3, 8, 8), dtype=np.uint8)
  np.savez(tmp_path / "b.npz", images=images)
  src = jdata.load_source(f"unpaired:digits|npz:{tmp_path / 'b.npz'}", split="test")
  assert len(src) == jdata.sources.DIGITS_NUM_TEST and src.image_shape == (8, 8, 1)
  check_specs(src)
  with pytest.raises(ValueError, match="domain A has images"):
    jdata.UnpairedSource(jdata.load_source("digits"),
                         jdata.load_source("digits", image_size=4, resize=True))


def test_unpaired_tfds_splits_mocked(monkeypatch):
  # tfds's mock data source breaks batched reads (its __getitems__ is bound without `self`):
  # read record by record.
  monkeypatch.delattr(jdata.TfdsSource, "_getitems")
  with tfds.testing.mock_data(num_examples=5):
    src = jdata.load_source("unpaired:tfds:cycle_gan/horse2zebra", split="train",
                            image_size=8, resize=True)
    assert len(src) == 5 and src.element_spec == {"image_a": ((8, 8, 3), np.uint8),
                                                  "image_b": ((8, 8, 3), np.uint8)}
    check_specs(src, random_flip=True)
    with pytest.raises(ValueError, match="varying size"):
      jdata.load_source("unpaired:tfds:cycle_gan/horse2zebra")


@pytest.mark.parametrize("spec", ["paired:", "unpaired:", "unpaired:digits|", "derived:edges",
                                  "derived:downsample:4", "derived:blur:digits"])
def test_bad_specs(spec):
  with pytest.raises(ValueError, match="valid"):
    jdata.load_source(spec)
