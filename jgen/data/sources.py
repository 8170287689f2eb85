"""Random-access image sources: in-memory arrays, tfds (ArrayRecord), folders/zips, idx, npz.

A *source* is what ``grain.MapDataset.source`` accepts: ``len(source)`` and
``source[i] -> dict[str, np.ndarray]`` of named fields, plus the attributes
``element_spec`` (``{name: (shape, dtype)}`` describing ``source[i]``), ``image_shape``
(H, W, C of the images the model makes) and ``num_classes`` (int, or None without labels).

Field conventions (shared by every source and by ``jgen.data.pipeline``):
  ``image``: uint8 [H, W, C]; ``label``: int32 scalar class; ``attributes``: float32 [K]
  multi-hot (names in ``source.attribute_names``); ``source``/``target``: uint8 [H, W, C] of a
  paired translation (``jgen.data.paired``, ``jgen.data.derived``); ``image_a``/``image_b``:
  uint8 [H, W, C] of two unpaired domains; ``mask``: float32 [H, W, 1], 1 on the pixels to fill.
This module holds the single-image sources (``image`` and optional ``label``/``attributes``).

Everything except tfds is decoded into memory once (``ArraySource``), with no on-disk cache
(decoding is fast, docs/guide/performance.md, and a cache could go stale); tfds datasets are
read lazily, record by record, from their ArrayRecord files (no TensorFlow needed), and are
never downloaded: an unprepared dataset raises ``DatasetUnavailableError`` at once, where
``tfds.data_source`` would retry its downloads for minutes offline.

Shape policy (``image_size``/``channels``/``resize`` of ``jgen.data.load_source``): without
``resize``, data whose shape differs from the requested one raises ``ValueError`` naming both
shapes -- nothing is converted silently. ``resize=True`` adapts the data to the request:
bilinear (antialiased, PIL) resize to ``image_size x image_size`` and channel conversion
1 -> 3 (repeat), 3 -> 1 (ITU-R 601 luma), 4 -> 3 (alpha dropped).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import struct
import threading
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jgen import errors
from jgen.data.fill import FillSource

log = logging.getLogger("jgen")

__all__ = [
    "ArraySource",
    "CorruptImageError",
    "DatasetUnavailableError",
    "ElementSpec",
    "EmptySourceError",
    "FolderSource",
    "TfdsSource",
    "as_nhwc_uint8",
    "load_image_source",
    "read_idx",
    "stack_images",
]

ElementSpec = dict[str, tuple[tuple[int, ...], np.dtype]]
"""``{field: (shape, dtype)}`` of one example ``source[i]``."""

_LOCAL_FORMS = (
    "--config.data.source=folder:PATH (directory or .zip of images, optional class "
    "subfolders and train/ test/ folders), idx:DIR (MNIST-format idx files), npz:FILE "
    "(arrays 'images' and optional 'labels'), paired:PATH or unpaired:PATH"
)
DIGITS_NUM_TEST = 297  # 'digits': the first 1,500 images are 'train', the last 297 'test'.
_SINGLE_SPECS = (
    "'digits', 'fill', 'tfds:NAME' (e.g. tfds:cifar10), 'folder:PATH', 'idx:DIR', 'npz:FILE'")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class DatasetUnavailableError(errors.DataError):
  """The requested data is not on this machine (and will not be downloaded)."""


# ----------------------------------------------------------------------------- shapes


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
  c = image.shape[-1]
  if c == channels:
    return image
  if c == 1 and channels == 3:
    return np.repeat(image, 3, axis=-1)
  if c in (3, 4) and channels == 1:
    luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
  if c == 4 and channels == 3:
    return image[..., :3]
  raise ValueError(f"cannot convert images with {c} channels to {channels} channels")


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  if image.shape[:2] == (size, size):
    return image
  planes = [
      np.asarray(Image.fromarray(image[..., k]).resize((size, size), Image.Resampling.BILINEAR))
      for k in range(image.shape[-1])
  ]
  return np.stack(planes, axis=-1)


def _adapt(image: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
  """Resizes/converts one uint8 [H, W, C] image (the ``resize=True`` path)."""
  if channels is not None:
    image = _convert_channels(image, channels)
  if image_size is not None:
    image = _resize(image, image_size)
  return image


def _check_shape(shape: Sequence[int | None], image_size: int | None, channels: int | None,
                 what: str) -> None:
  """Raises ConfigError when ``shape`` (H, W, C) is not the requested one (no resize)."""
  h, w, c = shape
  bad_size = image_size is not None and (h, w) != (image_size, image_size)
  bad_channels = channels is not None and c != channels
  if not (bad_size or bad_channels):
    return
  wanted = (image_size or h, image_size or w, channels or c)
  as_is = ""
  if h == w and h is not None:
    as_is = f"set --config.data.image_size={h} --config.data.channels={c} to use it as is, or "
  raise errors.ConfigError(
      f"{what} has images of shape {tuple(shape)} but shape {wanted} was asked for; "
      f"{as_is}set --config.data.resize=True to resize it (and convert 1 <-> 3 channels)."
  )


class EmptySourceError(errors.DataError, ValueError):
  """A data source split holds no images."""

  def __init__(self, what: str):
    super().__init__(f"{what} has no images: check the path or pattern, or choose another "
                     "split (--config.data.split, --config.data.eval_split)")


def _conform(images: np.ndarray, *, image_size: int | None, channels: int | None,
             resize: bool, what: str) -> np.ndarray:
  """Checks (or, with ``resize``, adapts) a uint8 [N, H, W, C] stack to the requested shape."""
  if len(images) == 0:
    raise EmptySourceError(what)
  if not resize:
    _check_shape(images.shape[1:], image_size, channels, what)
    return images
  if image_size is None and channels is None:
    return images
  return np.stack([_adapt(x, image_size, channels) for x in images])


def as_nhwc_uint8(images: np.ndarray, what: str) -> np.ndarray:
  """uint8 [N, H, W, C] from [N, H, W] or [N, H, W, C] integers in 0..255, else ValueError."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"{what}: expected images [N, H, W] or [N, H, W, C], got {images.shape}")
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.integer) or images.min(initial=0) < 0 or images.max(
        initial=0) > 255:
      raise ValueError(f"{what}: expected uint8 images in 0..255, got dtype {images.dtype}")
    images = images.astype(np.uint8)
  return images


# ----------------------------------------------------------------------------- in memory


class ArraySource:
  """In-memory source over uint8 images [N, H, W, C] and optional integer labels [N].

  Fields: ``image`` and, with labels, ``label`` (int32).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None,
               num_classes: int | None = None, *, class_names: Sequence[str] | None = None):
    """Labels default ``num_classes`` to ``max(labels) + 1``; images [N, H, W] get C = 1."""
    images = as_nhwc_uint8(images, "ArraySource")
    if labels is not None:
      labels = np.asarray(labels).astype(np.int32).reshape(-1)
      if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
      if num_classes is None and len(labels):
        num_classes = int(labels.max()) + 1
      if len(labels) and (labels.min() < 0 or labels.max() >= (num_classes or 0)):
        raise ValueError(f"labels must lie in 0..{num_classes}-1, got "
                         f"{labels.min()}..{labels.max()}")
    else:
      num_classes = None
    self.images = images
    self.labels = labels
    self.num_classes = num_classes
    self.class_names = tuple(class_names) if class_names is not None else None
    self.image_shape = tuple(images.shape[1:])
    self.element_spec: ElementSpec = {"image": (self.image_shape, np.dtype(np.uint8))}
    if labels is not None:
      self.element_spec["label"] = ((), np.dtype(np.int32))

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    out = {"image": self.images[index]}
    if self.labels is not None:
      out["label"] = self.labels[index]
    return out

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Batched read (grain calls this when present)."""
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return (f"ArraySource(n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})")


# ----------------------------------------------------------------------------- tfds


def _tfds_howto(name: str, variant_dir: str) -> str:
  return (
      f"Prepare it on a machine with network access, in ArrayRecord format:\n"
      f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
      f"file_format='array_record').download_and_prepare()\"\n"
      f"(most image datasets need TensorFlow for this step), copy the resulting "
      f"tensorflow_datasets/ folder (the one holding {name}/) here and set "
      f"--config.data.data_dir to it (looked for {variant_dir}); or use local files with "
      f"{_LOCAL_FORMS}."
  )


def _open_tfds(name: str, split: str, data_dir: str | None):
  """Returns (builder, data source), never downloading: fails in seconds offline.

  ``tfds.data_source`` would call ``download_and_prepare``, which offline retries for minutes
  before failing; we build the builder and read the prepared ArrayRecord files only.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415 (only tfds: sources; its import loads TensorFlow's protos)

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    first = str(e).splitlines()[0]
    raise DatasetUnavailableError(
        f"tfds:{name}: {first} Check the name (tfds.list_builders()) or use local files: "
        f"{_LOCAL_FORMS}."
    ) from e
  try:
    return builder, builder.as_data_source(split=split)
  except (KeyError, ValueError, NotImplementedError, OSError) as e:
    if not builder.is_prepared():
      raise DatasetUnavailableError(
          f"tfds:{name} is not prepared in {builder.data_dir} and is not downloaded "
          f"(no network is assumed). {_tfds_howto(name, builder.data_dir)}"
      ) from e
    raise DatasetUnavailableError(
        f"tfds:{name} is prepared in {builder.data_dir} (file format "
        f"{builder.info.file_format}) but split '{split}' cannot be read with random access: "
        f"{e}. Random access needs ArrayRecord files. {_tfds_howto(name, builder.data_dir)}"
    ) from e


def _attribute_names(features, key: str) -> tuple[str, ...] | None:
  """Sorted names of a tfds ``FeaturesDict`` of scalar bool/int features, else None."""
  if key not in features or not hasattr(features[key], "keys"):
    return None
  feature = features[key]
  names = tuple(sorted(feature.keys()))
  return names if names and all(_is_flag(feature[n]) for n in names) else None


def _is_flag(feature) -> bool:
  """A scalar bool (or integer 0/1) tfds feature."""
  dtype = np.dtype(feature.np_dtype)
  return tuple(feature.shape) == () and (dtype == np.bool_ or np.issubdtype(dtype, np.integer))


class TfdsSource:
  """Lazy source over a prepared tfds dataset (ArrayRecord files, no TensorFlow).

  Records are read and decoded on access. Fields: ``image``; ``label`` when the dataset has a
  ``label`` feature; ``attributes`` (float32 multi-hot [K]) when it has an ``attributes``
  dict of scalar bool features (celeb_a's 40), in the sorted order of ``attribute_names``.
  ``image_size``/``channels``/``resize`` follow the module's shape policy; datasets with
  images of varying size need ``resize=True``.
  """

  def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None,
               image_size: int | None = None, channels: int | None = None,
               resize: bool = False, image_key: str = "image", label_key: str = "label",
               attributes_key: str = "attributes"):
    builder, self._ds = _open_tfds(name, split, data_dir)
    features = builder.info.features
    if image_key not in features:
      raise ValueError(f"tfds:{name} has no feature '{image_key}' (features: {list(features)})")
    shape = tuple(features[image_key].shape)
    if len(shape) == 2:
      shape = (*shape, 1)
    self._what = f"tfds:{name} split '{split}'"
    self._image_size, self._channels, self._resize = image_size, channels, resize
    if resize:
      shape = (image_size or shape[0], image_size or shape[1], channels or shape[2])
    elif None not in shape:
      _check_shape(shape, image_size, channels, self._what)
    if None in shape:
      raise errors.ConfigError(f"{self._what} has images of varying size {shape}; set "
                       "--config.data.resize=True and --config.data.image_size")
    self.image_shape = shape
    self._image_key = image_key
    self._label_key = label_key if label_key in features else None
    self.num_classes = (getattr(features[label_key], "num_classes", None)
                        if self._label_key else None)
    self.class_names = None
    if self._label_key and self.num_classes:
      self.class_names = tuple(features[label_key].names)
    self.attribute_names = _attribute_names(features, attributes_key)
    self._attributes_key = attributes_key
    self.element_spec: ElementSpec = {"image": (self.image_shape, np.dtype(np.uint8))}
    if self._label_key:
      self.element_spec["label"] = ((), np.dtype(np.int32))
    if self.attribute_names:
      self.element_spec["attributes"] = ((len(self.attribute_names),), np.dtype(np.float32))

  def __len__(self) -> int:
    return len(self._ds)

  def _convert(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    image = np.asarray(example[self._image_key], np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    if self._resize:
      image = _adapt(image, self._image_size, self._channels)
    out = {"image": image}
    if self._label_key:
      out["label"] = np.int32(example[self._label_key])
    if self.attribute_names:
      values = example[self._attributes_key]
      out["attributes"] = np.array([values[n] for n in self.attribute_names], np.float32)
    return out

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._convert(self._ds[int(index)])

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Batched read: ArrayRecord reads the records in parallel."""
    return [self._convert(ex) for ex in self._ds.__getitems__([int(i) for i in indices])]

  def __repr__(self) -> str:
    return f"TfdsSource({self._what}, n={len(self)}, image_shape={self.image_shape})"


# ----------------------------------------------------------------------------- files


def _missing(kind: str, path: str) -> DatasetUnavailableError:
  return DatasetUnavailableError(
      f"{kind} path {path!r} does not exist. Local data is read with {_LOCAL_FORMS}; "
      "'digits' (bundled with scikit-learn) needs no files, and 'tfds:NAME' reads a dataset "
      "prepared under --config.data.data_dir."
  )


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # noqa: PLC0415 (only the digits source needs scikit-learn)

  digits = load_digits()
  images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  cut = len(images) - DIGITS_NUM_TEST
  if split == "train":
    return images[:cut], labels[:cut]
  if split == "test":
    return images[cut:], labels[cut:]
  raise errors.ConfigError(f"digits has splits 'train' and 'test', not {split!r}")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
  """Reads an idx file (the MNIST format), gzipped when the name ends in .gz.

  Layout: magic = two zero bytes, a dtype code (0x08 = uint8 ...) and the number of dimensions;
  then each dimension as a big-endian uint32; then the data, big-endian, row-major.
  """
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an idx file (magic bytes {data[:4].hex()})")
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{path}: truncated idx header")
  dims = struct.unpack(f">{ndim}I", data[4:header])
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  if len(data) - header != expected:
    raise ValueError(f"{path}: header says {dims} ({expected} bytes of data), "
                     f"file has {len(data) - header}")
  return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _load_idx(directory: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
  prefixes = {"train": "train", "test": "t10k"}
  if split not in prefixes:
    raise errors.ConfigError(f"idx data has splits 'train' and 'test', not {split!r}")
  names = sorted(os.listdir(directory))

  def find(kind: str, ndim: int) -> str | None:
    pattern = re.compile(rf"^{prefixes[split]}-{kind}[.-]idx{ndim}-ubyte(\.gz)?$")
    found = [n for n in names if pattern.match(n)]
    return os.path.join(directory, found[0]) if found else None

  images_path, labels_path = find("images", 3), find("labels", 1)
  if images_path is None:
    raise DatasetUnavailableError(
        f"no {prefixes[split]}-images-idx3-ubyte[.gz] for split '{split}' in {directory} "
        f"(it holds: {', '.join(names) or 'nothing'}). Choose another split or directory, or "
        f"use {_LOCAL_FORMS}."
    )
  images = read_idx(images_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f"{images_path}: expected uint8 [N, H, W], got {images.dtype} {images.shape}")
  labels = read_idx(labels_path) if labels_path else None
  if labels is not None and labels.shape != images.shape[:1]:
    raise ValueError(f"{labels_path}: {labels.shape} labels for {len(images)} images")
  return images, labels


def _load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
  with np.load(path) as f:
    keys = set(f.files)

    def pick(*names: str) -> np.ndarray | None:
      for name in names:
        if name in keys:
          return f[name]
      return None

    images = pick(f"images_{split}", f"x_{split}", "images", "x")
    if images is None:
      raise ValueError(f"{path} has no array 'images' (or 'x'); it holds {sorted(keys)}")
    labels = pick(f"labels_{split}", f"y_{split}", "labels", "y")
  return images, labels


def _is_image(name: str) -> bool:
  parts = name.split("/")
  return (name.lower().endswith(_IMAGE_EXTS) and not any(p.startswith(".") for p in parts)
          and parts[0] != "__MACOSX")


def _decode(blob: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(blob)) as im:
    mode = "L" if im.mode in _GRAY_MODES else "RGB"
    array = np.asarray(im if im.mode == mode else im.convert(mode))
  return array[..., None] if array.ndim == 2 else array


class _ZipReader:
  """Reads members of one zip archive, with an open handle per thread (grain's reader threads
  share the source; one ZipFile's file position is not theirs to share)."""

  def __init__(self, path: str):
    self.path = path
    self._local = threading.local()

  def __call__(self, name: str) -> bytes:
    archive = getattr(self._local, "archive", None)
    if archive is None:
      archive = self._local.archive = zipfile.ZipFile(self.path)
    return archive.read(name)


def _list_images(path: str, stack: contextlib.ExitStack
                 ) -> tuple[list[str], list[str], Callable[[str], bytes]]:
  """Image files of a folder or zip: (names to read, names from the data root, reader).

  The reader may be called from any thread, also after `stack` is closed.
  """
  if zipfile.is_zipfile(path):
    archive = stack.enter_context(zipfile.ZipFile(path))
    files = sorted(n for n in archive.namelist() if not n.endswith("/") and _is_image(n))
    # `zip -r data.zip data/` wraps everything in one folder: look inside it.
    tops = {n.split("/")[0] for n in files}
    if len(tops) == 1 and not tops & {"train", "test"} and all(n.count("/") >= 2 for n in files):
      strip = len(tops.pop()) + 1
      return files, [n[strip:] for n in files], _ZipReader(path)
    return files, files, _ZipReader(path)
  files = []
  for root, dirs, names in os.walk(path):
    dirs.sort()
    rel_root = os.path.relpath(root, path).replace(os.sep, "/")
    files += [n if rel_root == "." else f"{rel_root}/{n}" for n in names]
  files = sorted(n for n in files if _is_image(n))

  def read(name: str) -> bytes:
    with open(os.path.join(path, name), "rb") as f:
      return f.read()

  return files, files, read


class CorruptImageError(errors.DataError, ValueError):
  """An image file of a folder/zip source cannot be decoded."""


class FolderSource:
  """The images of a folder or zip, indexed when opened and decoded on access.

  Nothing but the file list (and the first image, for the element shape) is read up front,
  so a folder far larger than memory serves as well as a small one; grain's reader threads
  decode the records of each batch, and each process only the records of its share. Every
  image is checked (or, with ``resize``, adapted) on access against the element shape, and a
  gray image among color ones becomes RGB. A file that cannot be decoded raises
  `CorruptImageError` naming it, or with ``skip_corrupt`` is logged and counted
  (``num_skipped``) and replaced by the next decodable record.
  """

  def __init__(self, path: str, files: Sequence[str], read: Callable[[str], bytes],
               labels: np.ndarray | None, class_names: Sequence[str] | None, *, what: str,
               image_size: int | None, channels: int | None, resize: bool,
               skip_corrupt: bool = False):
    self.path, self.files, self._read, self.what = path, list(files), read, what
    self.labels = labels
    self.class_names = tuple(class_names) if class_names is not None else None
    self.num_classes = len(class_names) if class_names is not None else None
    self._size, self._channels, self._resize = image_size, channels, resize
    self.skip_corrupt = skip_corrupt
    self._skipped: set[int] = set()
    self._lock = threading.Lock()
    first = self._decode_checked(0, shape=None)
    self.image_shape = tuple(first.shape)
    self.element_spec: ElementSpec = {"image": (self.image_shape, np.dtype(np.uint8))}
    if labels is not None:
      self.element_spec["label"] = ((), np.dtype(np.int32))

  @property
  def num_skipped(self) -> int:
    """Corrupt files met so far (``skip_corrupt``)."""
    return len(self._skipped)

  def _decode_checked(self, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    name = self.files[index]
    try:
      image = _decode(self._read(name))
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on bad files
      raise CorruptImageError(
          f"cannot decode {self.path}:{name} ({type(e).__name__}: {e}); remove or replace "
          "the file, or set --config.data.skip_corrupt=True to skip such files") from e
    if self._resize:
      return _adapt(image, self._size, self._channels)
    wanted_c = shape[-1] if shape is not None else self._channels
    if image.shape[-1] == 1 and wanted_c == 3:  # a gray image in a color folder
      image = _convert_channels(image, 3)
    if shape is None:
      _check_shape(image.shape, self._size, self._channels, self.what)
    elif image.shape != shape:
      raise errors.ConfigError(f"{self.path}:{name} has shape {image.shape}, the other images of "
                               f"{self.what} {shape}; set --config.data.resize=True and "
                               "--config.data.image_size")
    return image

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    for offset in range(len(self.files)):
      i = (index + offset) % len(self.files)
      try:
        image = self._decode_checked(i, self.image_shape)
      except CorruptImageError:
        if not self.skip_corrupt:
          raise
        with self._lock:
          if i not in self._skipped:
            self._skipped.add(i)
            log.warning("skipping corrupt image %s:%s (%d skipped so far)", self.path,
                        self.files[i], len(self._skipped))
        continue
      out = {"image": image}
      if self.labels is not None:
        out["label"] = self.labels[i]
      return out
    raise CorruptImageError(f"no image of {self.what} can be decoded")


def _load_folder(path: str, split: str, image_size: int | None, channels: int | None,
                 resize: bool, *, cache: bool = False, skip_corrupt: bool = False
                 ) -> FolderSource | ArraySource:
  """Indexes an image folder or zip (layout rules: see ``load_source``): a lazy
  `FolderSource`, or with ``cache`` every image decoded into an `ArraySource`."""
  with contextlib.ExitStack() as stack:
    files, files_rel, read = _list_images(path, stack)
  if not files:
    raise DatasetUnavailableError(f"no image files ({', '.join(_IMAGE_EXTS)}) in {path}")
  split_dirs = {n.split("/")[0] for n in files_rel if "/" in n} & {
      "train", "test", "val", "validation"}
  if split_dirs & {"train", "test"}:
    if split not in split_dirs:
      raise DatasetUnavailableError(
          f"{path} has split folders {sorted(split_dirs)} but no '{split}/'; choose one of "
          "them as the split.")
    # Class names come from every split so that labels agree across splits.
    class_names = sorted({n.split("/")[1] for n in files_rel
                          if n.split("/")[0] in split_dirs and n.count("/") >= 2})
    chosen = [(f, r[len(split) + 1:]) for f, r in zip(files, files_rel)
              if r.startswith(split + "/")]
  else:
    class_names = sorted({r.split("/")[0] for r in files_rel if "/" in r})
    chosen = list(zip(files, files_rel))
  what = f"folder:{path} split '{split}'"
  if not chosen:
    raise EmptySourceError(what)
  nested = [r for _, r in chosen if "/" in r]
  if nested and len(nested) != len(chosen):
    raise ValueError(f"{path}: images both directly in the folder and in class subfolders; "
                     "put all images in class subfolders (labels) or none (no labels)")
  labels = None
  if nested:
    class_index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([class_index[r.split("/")[0]] for _, r in chosen], np.int32)
  names = class_names if nested else None
  if not cache:
    return FolderSource(path, [f for f, _ in chosen], read, labels, names, what=what,
                        image_size=image_size, channels=channels, resize=resize,
                        skip_corrupt=skip_corrupt)
  # Serial decoding: for small images (CIFAR's 32x32 JPEGs) a thread pool is slower, the
  # per-image cost being Python (GIL) overhead; CIFAR-10's 50,000 take about 12 s.
  images = [_decode(read(f)) for f, _ in chosen]
  array = stack_images(images, what=what, image_size=image_size, channels=channels,
                       resize=resize)
  return ArraySource(array, labels, len(class_names) if nested else None, class_names=names)


def stack_images(images: Sequence[np.ndarray], *, what: str, image_size: int | None,
                 channels: int | None, resize: bool) -> np.ndarray:
  """Stacks decoded uint8 [H, W, C] images into [N, H, W, C] under the shape policy.

  A few gray images among color ones become RGB; differing shapes need ``resize`` and
  ``image_size``; the result is checked (or adapted) against ``image_size``/``channels``.
  """
  if not images:
    raise EmptySourceError(what)
  if max(x.shape[-1] for x in images) == 3:  # a few gray images in a color folder
    images = [_convert_channels(x, 3) for x in images]
  shapes = {x.shape for x in images}
  if len(shapes) > 1:
    if not (resize and image_size):
      raise errors.ConfigError(f"{what} has images of different shapes ({sorted(shapes)[:4]} ...); "
                               "set --config.data.resize=True and --config.data.image_size")
    images = [_adapt(x, image_size, channels) for x in images]
  return _conform(np.stack(images), image_size=image_size, channels=channels, resize=resize,
                  what=what)


# ----------------------------------------------------------------------------- by spec


def load_image_source(spec: str, *, split: str = "train", data_dir: str | None = None,
                      image_size: int | None = None, channels: int | None = None,
                      resize: bool = False, valid_specs: str = _SINGLE_SPECS,
                      cache: bool = False, skip_corrupt: bool = False):
  """Opens a single-image spec: 'digits', 'fill', 'tfds:NAME', 'folder:PATH', 'idx:DIR', 'npz:FILE'.

  The forms and arguments are those of ``jgen.data.load_source`` (which documents them and
  adds the pair, domain and derived forms); ``valid_specs`` is quoted for an unknown spec.
  ``cache`` and ``skip_corrupt`` apply to folders (`FolderSource`).
  """
  kind, _, arg = spec.partition(":")
  shape_args = dict(image_size=image_size, channels=channels, resize=resize)
  if spec == "fill":
    return FillSource(split, size=image_size or 32, channels=channels)
  if spec == "digits":
    images, labels = _load_digits(split)
    return ArraySource(_conform(images, what="digits", **shape_args), labels, num_classes=10)
  if kind == "tfds" and arg:
    return TfdsSource(arg, split=split, data_dir=data_dir, **shape_args)
  if kind not in ("folder", "idx", "npz") or not arg:
    raise errors.ConfigError(f"unknown data source {spec!r}; valid forms: {valid_specs}")
  path = checked_path(kind, arg)
  if kind == "folder":
    return _load_folder(path, split, image_size, channels, resize, cache=cache,
                        skip_corrupt=skip_corrupt)
  images, labels = _load_idx(path, split) if kind == "idx" else _load_npz(path, split)
  images = as_nhwc_uint8(images, spec)
  return ArraySource(_conform(images, what=f"{spec} split '{split}'", **shape_args), labels)


def checked_path(kind: str, arg: str) -> str:
  """``arg`` with ~ expanded; raises DatasetUnavailableError when it does not exist."""
  path = os.path.expanduser(arg)
  if not os.path.exists(path):
    raise _missing(kind, path)
  return path
