"""Tests of jgen.data.pipeline: determinism, epochs, flips, sharding, iterate, batch_spec."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from jgen import data as jdata

N, H, W = 48, 4, 6


def _source(labels=True) -> jdata.ArraySource:
  """Example i: a horizontal ramp (so flips show) whose first pixel is i; label i."""
  ramp = np.broadcast_to(np.arange(W, dtype=np.uint8) * 40, (N, H, W)).copy()
  ramp[:, 0, 0] = np.arange(N)
  return jdata.ArraySource(ramp[..., None], np.arange(N) if labels else None)


def _ids(batch) -> np.ndarray:
  return batch["label"]


def _is_flipped(batch) -> np.ndarray:
  row = batch["image"][:, 1, :, 0]
  return row[:, 0] > row[:, -1]


def test_batch_format_and_range():
  ds = jdata.make_dataset(_source(), global_batch_size=16, seed=0, random_flip=True)
  batch = ds[5]
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (16, H, W, 1)
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (16,)
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  # uint8 x -> x / 127.5 - 1 (0 -> -1, 255 -> 1).
  unflipped = batch["image"][~_is_flipped(batch)]
  np.testing.assert_allclose(unflipped[:, 1, :, 0],
                             np.broadcast_to(np.arange(W) * 40 / 127.5 - 1, (len(unflipped), W)),
                             atol=1e-6)
  nolabel = jdata.make_dataset(_source(labels=False), global_batch_size=8, seed=0)
  assert set(nolabel[0]) == {"image"}
  dropped = jdata.make_dataset(_source(), global_batch_size=8, seed=0, drop_labels=True)
  assert set(dropped[0]) == {"image"}


def test_deterministic_and_seed_dependent():
  make = lambda seed: jdata.make_dataset(_source(), global_batch_size=16, seed=seed,
                                         random_flip=True)
  a, b, c = make(3), make(3), make(4)
  for step in (0, 7, 1000):
    np.testing.assert_array_equal(a[step]["image"], b[step]["image"])
    np.testing.assert_array_equal(a[step]["label"], b[step]["label"])
  assert not np.array_equal(_ids(a[0]), _ids(c[0]))


def test_every_example_once_per_epoch_fresh_order():
  ds = jdata.make_dataset(_source(), global_batch_size=16, seed=0)
  steps_per_epoch = N // 16
  epochs = [np.concatenate([_ids(ds[e * steps_per_epoch + s]) for s in range(steps_per_epoch)])
            for e in range(3)]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.arange(N))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.arange(N))


def test_batches_may_straddle_epochs():
  ds = jdata.make_dataset(_source(), global_batch_size=20, seed=1)
  ids = np.concatenate([_ids(ds[s]) for s in range(12)])  # 240 = 5 epochs of 48
  for e in range(5):
    np.testing.assert_array_equal(np.sort(ids[e * N:(e + 1) * N]), np.arange(N))


def test_flips_about_half_and_consistent():
  ds = jdata.make_dataset(_source(), global_batch_size=16, seed=0, random_flip=True)
  batches = [ds[s] for s in range(60)]  # 960 examples
  flipped = np.concatenate([_is_flipped(b) for b in batches])
  assert 0.4 < flipped.mean() < 0.6
  for b in batches[:5]:  # a flipped image is the mirror of the stored one
    expect = _source().images[_ids(b)] / 127.5 - 1
    expect[_is_flipped(b)] = expect[_is_flipped(b)][:, :, ::-1]
    np.testing.assert_allclose(b["image"], expect, atol=1e-6)
  plain = jdata.make_dataset(_source(), global_batch_size=16, seed=0)
  assert not np.concatenate([_is_flipped(plain[s]) for s in range(6)]).any()


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batch_independent_of_process_count(process_count):
  kwargs = dict(global_batch_size=16, seed=5, random_flip=True)
  single = jdata.make_dataset(_source(), **kwargs)
  parts = [jdata.make_dataset(_source(), process_index=p, process_count=process_count, **kwargs)
           for p in range(process_count)]
  for step in (0, 1, 2, 3, 17):
    for key in ("image", "label"):
      joined = np.concatenate([part[step][key] for part in parts])
      np.testing.assert_array_equal(joined, single[step][key])
    assert parts[0][step]["image"].shape[0] == 16 // process_count


def test_iterate_from_start_step():
  ds = jdata.make_dataset(_source(), global_batch_size=8, seed=2, random_flip=True)
  for prefetch in (0, 2):
    batches = jdata.iterate(ds, 13, prefetch=prefetch)
    for k in range(10):
      batch = next(batches)
      np.testing.assert_array_equal(batch["image"], ds[13 + k]["image"])
      np.testing.assert_array_equal(batch["label"], ds[13 + k]["label"])


def test_check_batch_size():
  jdata.check_batch_size(16, num_devices=8, process_count=2)
  with pytest.raises(ValueError, match="--config.data.batch_size") as e:
    jdata.check_batch_size(10, num_devices=4, process_count=1)
  assert "10" in str(e.value) and "4" in str(e.value)
  with pytest.raises(ValueError, match="5 processes"):
    jdata.check_batch_size(12, num_devices=12, process_count=5)
  with pytest.raises(ValueError, match="positive"):
    jdata.check_batch_size(0, num_devices=1, process_count=1)
  with pytest.raises(ValueError, match="3 processes"):
    jdata.make_dataset(_source(), global_batch_size=16, seed=0, process_count=3)


@pytest.mark.parametrize("num_devices", sorted({1, len(jax.devices())}))
def test_shard_batch(num_devices):
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  ds = jdata.make_dataset(_source(), global_batch_size=8 * num_devices, seed=0)
  local = ds[3]
  batch = jdata.shard_batch(local, sharding)
  assert isinstance(batch["image"], jax.Array) and batch["image"].sharding == sharding
  assert batch["image"].shape == local["image"].shape and batch["label"].dtype == np.int32
  np.testing.assert_array_equal(np.asarray(batch["image"]), local["image"])
  np.testing.assert_array_equal(np.asarray(batch["label"]), local["label"])


class _FieldsSource:
  """Example i: every kind of field, with values derived from i."""

  element_spec = {
      "image": ((H, W, 1), np.dtype(np.uint8)),
      "label": ((), np.dtype(np.int64)),
      "attributes": ((3,), np.dtype(np.bool_)),
      "mask": ((H, W, 1), np.dtype(np.float32)),
      "code": ((2,), np.dtype(np.uint8)),
  }

  def __len__(self):
    return N

  def __getitem__(self, i):
    image = _source().images[i]
    return {"image": image, "label": np.int64(i), "attributes": np.array([i % 2, 1, 0], bool),
            "mask": (image > 100).astype(np.float32), "code": np.array([i, 255], np.uint8)}


def test_batch_spec_conversion_rules():
  spec = jdata.batch_spec(_FieldsSource.element_spec, 12)
  assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
      "image": ((12, H, W, 1), np.float32), "label": ((12,), np.int32),
      "attributes": ((12, 3), np.float32), "mask": ((12, H, W, 1), np.float32),
      "code": ((12, 2), np.int32)}
  assert "label" not in jdata.batch_spec(_FieldsSource.element_spec, 12, drop_labels=True)
  with pytest.raises(TypeError, match="'caption'"):
    jdata.batch_spec({"caption": ((), np.dtype("U8"))}, 2)


def test_every_field_kept_converted_and_flipped_jointly():
  src = _FieldsSource()
  for drop_labels in (False, True):
    ds = jdata.make_dataset(src, global_batch_size=16, seed=0, random_flip=True,
                            drop_labels=drop_labels)
    batch = ds[2]
    spec = jdata.batch_spec(src.element_spec, 16, drop_labels=drop_labels)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (v.shape, v.dtype) for k, v in spec.items()}
  ids = batch["code"][:, 0]
  np.testing.assert_array_equal(batch["code"][:, 1], 255)  # integers: values, not rescaled
  np.testing.assert_array_equal(batch["attributes"][:, 0], ids % 2)
  # The mask was computed from the unflipped image and flips with it.
  np.testing.assert_array_equal(batch["mask"] > 0, batch["image"] > 100 / 127.5 - 1)
  assert _is_flipped(batch).any() and not _is_flipped(batch).all()
