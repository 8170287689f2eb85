"""Shared checks for tests/data: examples and batches agree with the declared specs."""

import numpy as np

from jgen import data as jdata


def check_specs(source, *, batch_size: int = 4, seed: int = 0, **dataset_kwargs) -> dict:
  """Asserts source[i] matches element_spec and a pipeline batch matches batch_spec.

  Returns that batch.
  """
  for i in (0, len(source) - 1):
    example = source[i]
    assert set(example) == set(source.element_spec)
    for name, (shape, dtype) in source.element_spec.items():
      value = np.asarray(example[name])
      assert value.shape == tuple(shape), (name, value.shape, shape)
      assert value.dtype == np.dtype(dtype), (name, value.dtype, dtype)
  ds = jdata.make_dataset(source, global_batch_size=batch_size, seed=seed, **dataset_kwargs)
  batch = ds[1]
  spec = jdata.batch_spec(source.element_spec, batch_size,
                          drop_labels=dataset_kwargs.get("drop_labels", False))
  assert set(batch) == set(spec)
  for name, struct in spec.items():
    assert batch[name].shape == struct.shape and batch[name].dtype == struct.dtype, name
  return batch
