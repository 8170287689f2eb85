"""Tests of jgen.data.sources: digits, folder/zip, idx, npz, tfds (offline), bad inputs."""

import gzip
import pathlib
import struct
import time
import zipfile

from etils import epath
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from jgen import data as jdata
from tests.data.helpers import check_specs

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared"
MNIST_TEST = SHARED / "data" / "mnist-test"
CIFAR_ZIP = SHARED / "data" / "cifar10-jpeg.zip"


# ----------------------------------------------------------------------------- digits


def test_digits_real_split_and_labels():
  train = jdata.load_source("digits", split="train")
  test = jdata.load_source("digits", split="test")
  assert len(train) + len(test) == 1797
  assert len(test) == jdata.sources.DIGITS_NUM_TEST
  assert train.image_shape == (8, 8, 1) and train.num_classes == 10
  ex = train[0]
  assert ex["image"].dtype == np.uint8 and ex["image"].shape == (8, 8, 1)
  assert ex["label"].dtype == np.int32 and ex["label"] == 0  # load_digits() starts with a 0
  assert train.images.max() == 255 and train.images.min() == 0
  assert train.element_spec == {"image": ((8, 8, 1), np.uint8), "label": ((), np.int32)}
  assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))


def test_digits_resize():
  src = jdata.load_source("digits", split="test", image_size=16, resize=True)
  assert src.image_shape == (16, 16, 1) and src[3]["image"].shape == (16, 16, 1)
  assert src[3]["image"].dtype == np.uint8
  rgb = jdata.load_source("digits", split="test", image_size=32, channels=3, resize=True)
  assert rgb.image_shape == (32, 32, 3)
  np.testing.assert_array_equal(rgb.images[..., 0], rgb.images[..., 2])


def test_shape_mismatch_message():
  with pytest.raises(ValueError) as e:
    jdata.load_source("digits", image_size=32, channels=3)
  msg = str(e.value)
  assert "(8, 8, 1)" in msg and "(32, 32, 3)" in msg
  assert "--config.data.image_size=8" in msg and "--config.data.resize=True" in msg


# ----------------------------------------------------------------------------- folder / zip


def _write_tree(root: pathlib.Path, rng) -> dict:
  """train/{cat,dog}/*.png and test/{cat,dog}/*.png; returns {relpath: array}."""
  arrays = {}
  for split, n in (("train", 3), ("test", 2)):
    for cls in ("dog", "cat"):
      for i in range(n):
        rel = f"{split}/{cls}/{i:03d}.png"
        arrays[rel] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays[rel]).save(root / rel)
  (root / "train" / "notes.txt").write_text("not an image")
  return arrays


def _check_tree(src, arrays, split):
  names = sorted(r for r in arrays if r.startswith(split + "/"))  # cat before dog
  assert len(src) == len(names) and src.image_shape == (6, 5, 3)
  assert src.num_classes == 2 and src.class_names == ("cat", "dog")
  for i, rel in enumerate(names):
    np.testing.assert_array_equal(src[i]["image"], arrays[rel])
    assert src[i]["label"] == (0 if "/cat/" in rel else 1)


def test_folder_with_splits_and_classes(tmp_path):
  arrays = _write_tree(tmp_path, np.random.default_rng(0))
  for split in ("train", "test"):
    _check_tree(jdata.load_source(f"folder:{tmp_path}", split=split), arrays, split)
  with pytest.raises(jdata.DatasetUnavailableError, match="no 'validation/'"):
    jdata.load_source(f"folder:{tmp_path}", split="validation")


def test_zip_with_wrapper_folder(tmp_path):
  arrays = _write_tree(tmp_path / "tree", np.random.default_rng(1))
  path = tmp_path / "data.zip"
  with zipfile.ZipFile(path, "w") as zf:
    for rel in sorted(arrays, reverse=True):  # archive order must not matter
      zf.write(tmp_path / "tree" / rel, f"mydata/{rel}")
  _check_tree(jdata.load_source(f"folder:{path}", split="test"), arrays, "test")


def test_folder_without_labels_gray_and_resize(tmp_path):
  rng = np.random.default_rng(2)
  arrays = [rng.integers(0, 256, (7, 7), dtype=np.uint8) for _ in range(3)]
  for i, a in enumerate(arrays):
    Image.fromarray(a).save(tmp_path / f"{i}.png")
  src = jdata.load_source(f"folder:{tmp_path}", split="test")  # no split folders: all of it
  assert len(src) == 3 and src.num_classes is None and "label" not in src[0]
  assert src.element_spec == {"image": ((7, 7, 1), np.uint8)}
  np.testing.assert_array_equal(src[2]["image"][..., 0], arrays[2])
  Image.fromarray(arrays[0][:5, :5]).save(tmp_path / "3.png")
  with pytest.raises(ValueError, match="different shapes"):
    jdata.load_source(f"folder:{tmp_path}", cache=True)
  lazy = jdata.load_source(f"folder:{tmp_path}")  # decoded on access: the odd file is named
  with pytest.raises(ValueError, match=r"3.png has shape \(5, 5, 1\).*data.resize=True"):
    lazy[3]
  src = jdata.load_source(f"folder:{tmp_path}", image_size=4, resize=True)
  assert src.image_shape == (4, 4, 1) and len(src) == 4 and src[3]["image"].shape == (4, 4, 1)


def test_folders_decode_on_access_only(tmp_path, monkeypatch):
  arrays = _write_tree(tmp_path, np.random.default_rng(3))
  decoded = []
  real = jdata.sources._decode
  monkeypatch.setattr(jdata.sources, "_decode", lambda blob: decoded.append(1) or real(blob))
  src = jdata.load_source(f"folder:{tmp_path}", split="train")
  assert isinstance(src, jdata.FolderSource) and len(src) == 6 and len(decoded) == 1
  np.testing.assert_array_equal(src[4]["image"], arrays["train/dog/001.png"])
  assert len(decoded) == 2
  cached = jdata.load_source(f"folder:{tmp_path}", split="train", cache=True)
  assert isinstance(cached, jdata.ArraySource) and len(decoded) == 2 + 6
  for i in range(6):  # the same records either way
    np.testing.assert_array_equal(src[i]["image"], cached[i]["image"])
    assert src[i]["label"] == cached[i]["label"]


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
  arrays = _write_tree(tmp_path, np.random.default_rng(4))
  (tmp_path / "train" / "cat" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  src = jdata.load_source(f"folder:{tmp_path}", split="train")
  with pytest.raises(jdata.CorruptImageError, match=r"train/cat/001.png.*skip_corrupt=True"):
    src[1]
  src = jdata.load_source(f"folder:{tmp_path}", split="train", skip_corrupt=True)
  np.testing.assert_array_equal(src[1]["image"], arrays["train/cat/002.png"])  # the next one
  src[1]
  assert src.num_skipped == 1


# ----------------------------------------------------------------------------- idx / npz


def _write_idx(path, array, code=0x08):
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
    f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_idx_round_trip(tmp_path):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (5,), dtype=np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
  src = jdata.load_source(f"idx:{tmp_path}", split="test")
  assert len(src) == 5 and src.image_shape == (4, 3, 1)
  np.testing.assert_array_equal(src.images[..., 0], images)
  np.testing.assert_array_equal(src.labels, labels)
  ints = rng.integers(-1000, 1000, (2, 3), dtype=np.int32)
  _write_idx(tmp_path / "ints.idx", ints, code=0x0C)
  np.testing.assert_array_equal(jdata.read_idx(str(tmp_path / "ints.idx")), ints)
  with pytest.raises(jdata.DatasetUnavailableError, match="train-images-idx3-ubyte"):
    jdata.load_source(f"idx:{tmp_path}", split="train")
  (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00" + bytes(8))
  with pytest.raises(ValueError, match="not an idx file"):
    jdata.read_idx(str(tmp_path / "bad"))
  (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 9) + bytes(4))
  with pytest.raises(ValueError, match="header says"):
    jdata.read_idx(str(tmp_path / "short"))


def test_npz(tmp_path):
  rng = np.random.default_rng(4)
  images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
  np.savez(tmp_path / "a.npz", images=images, labels=np.arange(6) % 2)
  src = jdata.load_source(f"npz:{tmp_path / 'a.npz'}")
  assert len(src) == 6 and src.num_classes == 2 and src[5]["label"] == 1
  np.testing.assert_array_equal(src[4]["image"], images[4])
  np.savez(tmp_path / "b.npz", x_train=images[:4, ..., 0], x_test=images[4:, ..., 0])
  src = jdata.load_source(f"npz:{tmp_path / 'b.npz'}", split="test")
  assert len(src) == 2 and src.image_shape == (4, 4, 1) and "label" not in src[0]


# ----------------------------------------------------------------------------- tfds offline


class JgenTinyImages(tfds.core.GeneratorBasedBuilder):
  """A 12/4-example dataset prepared locally (Tensor feature: no TensorFlow needed)."""

  VERSION = tfds.core.Version("1.0.0")
  # tfds finds a builder's checksums beside its code through `importlib_resources`, which is
  # not always installed; point it at this file directly.
  code_path = epath.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(12), "test": self._generate_examples(4)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((4, 4, 1), 10 * i, np.uint8), "label": i % 3}


def test_tfds_prepared_array_record(tmp_path):
  JgenTinyImages(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  src = jdata.load_source("tfds:jgen_tiny_images", split="train", data_dir=str(tmp_path))
  assert len(src) == 12 and src.image_shape == (4, 4, 1) and src.num_classes == 3
  assert src.class_names == ("a", "b", "c")
  values = sorted((int(src[i]["image"][0, 0, 0]), int(src[i]["label"])) for i in range(12))
  assert values == [(10 * i, i % 3) for i in range(12)]
  ds = jdata.make_dataset(src, global_batch_size=4, seed=0)  # batched ArrayRecord reads
  assert ds[0]["image"].shape == (4, 4, 4, 1) and ds[0]["label"].dtype == np.int32
  big = jdata.load_source("tfds:jgen_tiny_images", split="test", data_dir=str(tmp_path),
                          image_size=8, channels=3, resize=True)
  assert big.image_shape == (8, 8, 3) and big[1]["image"].shape == (8, 8, 3)


def test_tfds_mocked_data_source():
  with tfds.testing.mock_data(num_examples=6):
    src = jdata.load_source("tfds:mnist", split="train")
    assert len(src) == 6 and src.image_shape == (28, 28, 1) and src.num_classes == 10
    ex = src[5]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (28, 28, 1)
    assert ex["label"].dtype == np.int32 and 0 <= ex["label"] < 10
    with pytest.raises(ValueError, match=r"\(28, 28, 1\)"):
      jdata.load_source("tfds:mnist", image_size=32)
    src = jdata.load_source("tfds:mnist", image_size=32, resize=True)
    assert src[0]["image"].shape == (32, 32, 1)
    assert src.element_spec == {"image": ((32, 32, 1), np.uint8), "label": ((), np.int32)}


def test_tfds_attributes_mocked(monkeypatch):
  # tfds's mock data source breaks batched reads (its __getitems__ is bound without `self`).
  monkeypatch.delattr(jdata.TfdsSource, "_getitems")
  with tfds.testing.mock_data(num_examples=4):
    src = jdata.load_source("tfds:celeb_a", split="train", image_size=8, resize=True)
    names = src.attribute_names
    assert len(names) == 40 and list(names) == sorted(names) and "Smiling" in names
    assert src.element_spec == {"image": ((8, 8, 3), np.uint8), "attributes": ((40,), np.float32)}
    raw = src._ds[2]["attributes"]
    np.testing.assert_array_equal(src[2]["attributes"], [float(raw[n]) for n in names])
    check_specs(src, random_flip=True)


def test_tfds_unprepared_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(jdata.DatasetUnavailableError) as e:
    jdata.load_source("tfds:cifar10", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  msg = str(e.value)
  assert "not prepared" in msg and str(tmp_path) in msg
  assert "--config.data.data_dir" in msg and "folder:PATH" in msg
  assert not any(tmp_path.iterdir())  # nothing downloaded or written
  with pytest.raises(jdata.DatasetUnavailableError, match="not found"):
    jdata.load_source("tfds:no_such_dataset_jgen", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("spec", ["cifar", "tfds:", "csv:/tmp/x", "folder"])
def test_unknown_spec(spec):
  with pytest.raises(ValueError, match="valid forms"):
    jdata.load_source(spec)


@pytest.mark.parametrize("kind", ["folder", "idx", "npz"])
def test_missing_path(tmp_path, kind):
  with pytest.raises(jdata.DatasetUnavailableError, match="does not exist"):
    jdata.load_source(f"{kind}:{tmp_path / 'nope'}")


def test_array_source_validation():
  with pytest.raises(ValueError, match="labels"):
    jdata.ArraySource(np.zeros((3, 2, 2, 1), np.uint8), np.zeros(2))
  with pytest.raises(ValueError, match="uint8"):
    jdata.ArraySource(np.full((3, 2, 2, 1), 300))


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not MNIST_TEST.is_dir(), reason=f"real MNIST test set not at {MNIST_TEST}")
def test_real_mnist_test_set():
  src = jdata.load_source(f"idx:{MNIST_TEST}", split="test")
  assert len(src) == 10_000 and src.image_shape == (28, 28, 1) and src.num_classes == 10
  assert [int(src[i]["label"]) for i in range(3)] == [7, 2, 1]
  assert np.bincount(src.labels).min() > 850


@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason=f"CIFAR-10 JPEG zip not at {CIFAR_ZIP}")
def test_real_cifar_zip_entries():
  with zipfile.ZipFile(CIFAR_ZIP) as zf:
    names = [n for n in zf.namelist() if n.endswith(".jpg")]
    assert len(names) == 60_000
    image = jdata.sources._decode(zf.read("test/cat/0000.jpg"))
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert sum(n.startswith("train/") for n in names) == 50_000


@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason=f"CIFAR-10 JPEG zip not at {CIFAR_ZIP}")
def test_real_cifar_zip_test_split():
  src = jdata.load_source(f"folder:{CIFAR_ZIP}", split="test", image_size=32, channels=3)
  assert len(src) == 10_000 and src.num_classes == 10 and src.class_names[0] == "airplane"
  np.testing.assert_array_equal(np.bincount(src.labels), [1000] * 10)
