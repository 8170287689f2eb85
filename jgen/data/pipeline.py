"""The batching pipeline: an infinite, random-access grain ``MapDataset`` of train batches.

``ds = make_dataset(source, global_batch_size=B, seed=s)`` gives ``ds[step]``, the batch of
train step ``step``: a pure function of (source, seed, step), so resuming from a checkpoint
needs only the step. The example stream is ``source`` shuffled with a fresh permutation each
epoch (grain's ``shuffle`` folds the epoch into its seed) and repeated forever; global batch
``step`` is stream elements ``[step * B, (step + 1) * B)`` and process ``p`` of ``P`` gets the
``p``-th contiguous ``B / P`` of it, so the global batch does not depend on the number of
processes or devices.

Batches keep every field of the source (see ``jgen.data.sources`` for the names), converted
by one rule that ``batch_spec`` states without reading data:
  * uint8 fields of rank 3 ([H, W, C]: ``image``, ``source``, ``target``, ``image_a`` ...)
    become float32 images in [-1, 1] (``x / 127.5 - 1``);
  * other integer fields (``label``) become int32; bool and float fields (``attributes``,
    ``mask``) become float32, values unchanged.

Random flips mirror every rank-3 field of an example (images and masks) with one coin, so
``source`` and ``target`` (and ``mask``) stay aligned; ``image_a`` and ``image_b`` of
unpaired domains are drawn independently and so get a coin each.

A source whose attribute ``varies_by_pass`` is true (``UnpairedSource``, random masks) is read
at ``source[epoch * len(source) + i]`` instead of ``source[i]``: its examples then change from
one epoch to the next (a new pairing of the two domains, a new mask), still as a pure function
of (seed, step).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from jgen import errors

__all__ = ["batch_spec", "check_batch_size", "iterate", "make_dataset", "shard_batch"]

Batch = dict[str, np.ndarray]
_OWN_FLIP = ("image_a", "image_b")  # fields flipped with their own coin


def _batch_dtype(name: str, shape: Sequence[int], dtype: Any) -> np.dtype:
  """The dtype a field of one example gets in a batch (the module's conversion rule)."""
  dtype = np.dtype(dtype)
  if dtype == np.uint8 and len(shape) == 3:
    return np.dtype(np.float32)
  if dtype == np.bool_ or np.issubdtype(dtype, np.floating):
    return np.dtype(np.float32)
  if np.issubdtype(dtype, np.integer):
    return np.dtype(np.int32)
  raise TypeError(f"field {name!r} has dtype {dtype}; the pipeline batches uint8 images, "
                  "integer, bool and float fields only")


def batch_spec(element_spec: Mapping[str, tuple[tuple[int, ...], Any]], batch_size: int, *,
               drop_labels: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of a batch of ``batch_size`` examples, after the pipeline's conversion.

  Args:
    element_spec: ``source.element_spec``, ``{field: (shape, dtype)}`` of one example.
    batch_size: leading dimension (the global batch size for the train loop).
    drop_labels: as in ``make_dataset``: leave ``label`` out.

  Returns:
    ``{field: jax.ShapeDtypeStruct((batch_size, *shape), dtype)}`` with the converted dtype
    (uint8 [H, W, C] -> float32, integers -> int32, bool/float -> float32); no sharding.
  """
  return {
      name: jax.ShapeDtypeStruct((batch_size, *shape), _batch_dtype(name, shape, dtype))
      for name, (shape, dtype) in element_spec.items()
      if not (drop_labels and name == "label")
  }


def check_batch_size(global_batch_size: int, *, num_devices: int, process_count: int) -> None:
  """Raises ConfigError unless the global batch splits evenly over devices and processes."""
  if global_batch_size <= 0:
    raise errors.ConfigError(f"the global batch size must be positive, got {global_batch_size}; "
                             "set --config.data.batch_size")
  for count, what in ((num_devices, "devices"), (process_count, "processes")):
    if global_batch_size % count:
      raise errors.ConfigError(
          f"the global batch size {global_batch_size} does not divide evenly over {count} "
          f"{what} ({num_devices} devices in {process_count} processes); set "
          f"--config.data.batch_size to a multiple of {num_devices} (e.g. "
          f"{max(1, round(global_batch_size / num_devices)) * num_devices}).")


def _flip(example: Batch, coins: np.ndarray) -> Batch:
  """Mirrors rank-3 fields: ``image_a``/``image_b`` by ``coins[1]``/``coins[2]``, the rest
  jointly by ``coins[0]``; an example marked ``paired`` (a true pair of the two domains,
  `jgen.data.unpaired_derived`'s held-out split) has all its images flipped together."""
  out = dict(example)
  together = bool(np.any(example.get("paired", False)))
  for name, value in example.items():
    own = name in _OWN_FLIP and not together
    coin = coins[1 + _OWN_FLIP.index(name)] if own else coins[0]
    if np.ndim(value) == 3 and coin < 0.5:
      out[name] = value[:, ::-1]
  return out


def _convert(name: str, values: np.ndarray) -> np.ndarray:
  dtype = _batch_dtype(name, values.shape[1:], values.dtype)
  if values.dtype == np.uint8 and values.ndim == 4:
    return values.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
  return values.astype(dtype)


class _ReadBatch:
  """Reads, flips and converts one mini-batch of (stream position, source index) pairs."""

  def __init__(self, source, *, seed: int, random_flip: bool, drop_labels: bool):
    self._source, self._seed = source, seed
    self._random_flip, self._drop_labels = random_flip, drop_labels
    self._by_pass = bool(getattr(source, "varies_by_pass", False))

  def __call__(self, positions_and_indices: tuple[np.ndarray, np.ndarray]) -> Batch:
    positions, indices = positions_and_indices
    n = len(self._source)
    keys = [int(i) if self._by_pass else int(i) % n for i in indices]
    if hasattr(self._source, "_getitems"):
      examples = list(self._source._getitems(keys))  # pylint: disable=protected-access
    else:
      examples = [self._source[k] for k in keys]
    if self._random_flip:
      # The coins of stream element t are a function of (seed, t) only.
      examples = [_flip(ex, np.random.default_rng((self._seed, int(t))).random(3))
                  for ex, t in zip(examples, positions)]
    names = [k for k in examples[0] if not (self._drop_labels and k == "label")]
    return {k: _convert(k, np.stack([np.asarray(ex[k]) for ex in examples])) for k in names}


def read_batch(source, indices: Sequence[int]) -> Batch:
  """Examples `indices` of `source` as one converted batch (no shuffling, no flips): what
  `make_dataset` yields, for held-out images in a fixed order (translation grids, eval)."""
  indices = np.asarray(indices, np.int64)
  return _ReadBatch(source, seed=0, random_flip=False, drop_labels=False)((indices, indices))


def make_dataset(source, *, global_batch_size: int, seed: int, random_flip: bool = False,
                 process_index: int = 0, process_count: int = 1,
                 drop_labels: bool = False) -> grain.MapDataset:
  """Infinite dataset of this process's share of each global batch.

  Args:
    source: random access, ``source[i] -> {field: array}`` (``element_spec`` describes it);
      ``_getitems(indices)``, when present, is used for batched reads.
    global_batch_size: examples per train step over all processes.
    seed: shuffling and flip seed (non-negative int).
    random_flip: flip each example horizontally with probability 1/2 (all its images and
      masks together; ``image_a``/``image_b`` each on its own); the decision is a function of
      (seed, position in the example stream), so it differs between epochs.
    process_index: this process (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).
    drop_labels: leave the ``label`` field out of the batches (other fields stay).

  Returns:
    A ``grain.MapDataset`` whose ``ds[step]`` holds every field of the source with a leading
    batch dimension B/P, converted as ``batch_spec`` says: e.g. ``{'image': float32
    [B/P, H, W, C] in [-1, 1], 'label': int32 [B/P]}``.
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"the global batch size {global_batch_size} does not divide evenly over "
                     f"{process_count} processes; set --config.data.batch_size to a positive "
                     f"multiple of {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
  n = len(source)
  if n == 0:
    raise ValueError("the data source is empty")
  local_batch_size = global_batch_size // process_count
  # A stream of source indices (a fresh permutation per epoch), tagged with the stream position
  # t and turned into pass-aware indices epoch * n + i; reading happens once per mini-batch.
  ds = grain.MapDataset.range(n).seed(seed).shuffle().repeat()
  ds = ds.map_with_index(lambda t, i: (t, (t // n) * n + i))
  ds = ds.batch(local_batch_size, drop_remainder=True)
  # Mini-batch k holds stream elements [k * B/P, (k + 1) * B/P): global batch s is mini-batches
  # s * P .. s * P + P - 1, of which process p takes number s * P + p.
  ds = ds[process_index::process_count]
  return ds.map(_ReadBatch(source, seed=seed, random_flip=random_flip, drop_labels=drop_labels))


def iterate(ds: grain.MapDataset, start_step: int = 0, *, prefetch: int = 2,
            num_threads: int = 2) -> Iterator[Any]:
  """Iterates ``ds[start_step], ds[start_step + 1], ...`` with background prefetching.

  Args:
    ds: a dataset from ``make_dataset`` (or any ``MapDataset``).
    start_step: first step to yield (the step restored from a checkpoint).
    prefetch: batches read ahead in background threads; 0 reads in the caller's thread.
    num_threads: threads producing batches (each batch is built by one thread).
  """
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  read_options = grain.ReadOptions(num_threads=num_threads if prefetch > 0 else 0,
                                   prefetch_buffer_size=prefetch)
  return iter(ds[start_step:].to_iter_dataset(read_options))


def shard_batch(batch: Batch, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles per-process numpy batches into global arrays sharded by ``sharding``.

  ``sharding`` is typically ``NamedSharding(mesh, P('data'))``: the leading (batch) axis of
  every leaf is split over the mesh's data axis; each process passes its own rows.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
