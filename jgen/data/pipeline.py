"""The batching pipeline: an infinite, random-access grain ``MapDataset`` of train batches.

``ds = make_dataset(source, global_batch_size=B, seed=s)`` gives ``ds[step]``, the batch of
train step ``step``: a pure function of (source, seed, step), so resuming from a checkpoint
needs only the step. The example stream is ``source`` shuffled with a fresh permutation each
epoch (grain's ``shuffle`` folds the epoch into its seed) and repeated forever; global batch
``step`` is stream elements ``[step * B, (step + 1) * B)`` and process ``p`` of ``P`` gets the
``p``-th contiguous ``B / P`` of it, so the global batch does not depend on the number of
processes or devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np

__all__ = ["check_batch_size", "iterate", "make_dataset", "shard_batch"]

Batch = dict[str, np.ndarray]


def check_batch_size(global_batch_size: int, *, num_devices: int, process_count: int) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  if global_batch_size <= 0:
    raise ValueError(f"the global batch size must be positive, got {global_batch_size}; "
                     "set --config.data.batch_size")
  for count, what in ((num_devices, "devices"), (process_count, "processes")):
    if global_batch_size % count:
      raise ValueError(
          f"the global batch size {global_batch_size} does not divide evenly over {count} "
          f"{what} ({num_devices} devices in {process_count} processes); set "
          f"--config.data.batch_size to a multiple of {num_devices} (e.g. "
          f"{max(1, round(global_batch_size / num_devices)) * num_devices}).")


def _flip(example: Batch, rng: np.random.Generator) -> Batch:
  if rng.random() < 0.5:
    return {**example, "image": example["image"][:, ::-1]}
  return example


def _drop_label(example: Batch) -> Batch:
  return {"image": example["image"]}


def _to_float(batch: Batch) -> Batch:
  out = {"image": batch["image"].astype(np.float32) / np.float32(127.5) - np.float32(1.0)}
  if "label" in batch:
    out["label"] = batch["label"].astype(np.int32)
  return out


def make_dataset(source, *, global_batch_size: int, seed: int, random_flip: bool = False,
                 process_index: int = 0, process_count: int = 1,
                 drop_labels: bool = False) -> grain.MapDataset:
  """Infinite dataset of this process's share of each global batch.

  Args:
    source: random access, ``source[i] -> {'image': uint8 [H, W, C], 'label': int}``.
    global_batch_size: examples per train step over all processes.
    seed: shuffling and flip seed (non-negative int).
    random_flip: flip each example horizontally with probability 1/2; the decision is a
      function of (seed, position in the example stream), so it differs between epochs.
    process_index: this process (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).
    drop_labels: leave labels out of the batches.

  Returns:
    A ``grain.MapDataset`` whose ``ds[step]`` is ``{'image': float32 [B/P, H, W, C] in [-1, 1],
    'label': int32 [B/P]}`` (no 'label' when the source has none or ``drop_labels``).
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"the global batch size {global_batch_size} does not divide evenly over "
                     f"{process_count} processes; set --config.data.batch_size to a positive "
                     f"multiple of {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
  if len(source) == 0:
    raise ValueError("the data source is empty")
  local_batch_size = global_batch_size // process_count
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  if random_flip:
    ds = ds.random_map(_flip)
  if drop_labels:
    ds = ds.map(_drop_label)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  # Mini-batch k holds stream elements [k * B/P, (k + 1) * B/P): global batch s is mini-batches
  # s * P .. s * P + P - 1, of which process p takes number s * P + p.
  ds = ds[process_index::process_count]
  return ds.map(_to_float)


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
