"""What a run draws from a method: its sampler (by its abilities), the labels of its samples,
samples in chunks, and the held-out metrics of an `Evaluates` method.

`method_sampler` is the one place that reads the drawing abilities of `jgen.train.method`:
`Conditional` (draws for labels), `Samples` (draws of the model) and `Reconstructs` (an
autoencoder's held-out reconstructions, what its grids show in place of samples); `jit_sampler`
adds `SamplesWithFrozen`'s arrays, `jit_evaluator` is the held-out step of `Evaluates`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from jgen import data as jdata
from jgen.nn import conditioning
from jgen.train import mesh as mesh_lib
from jgen.train.method import (Conditional, Evaluates, Method, Reconstructs, Samples,
                               SamplesWithFrozen)
from jgen.train.state import TrainState

__all__ = ["MethodSampler", "draw", "evaluate_loss", "grid_cols", "jit_evaluator", "jit_sampler",
           "labels_for_samples", "method_sampler", "sample_images", "to_host", "upscale"]


class MethodSampler(NamedTuple):
  """What a method's grids are drawn with (`method_sampler`)."""

  fn: Callable
  """``(state, rng, n) -> images`` in [-1, 1], or ``(state, rng, labels)`` when `by_label`."""
  by_label: bool
  """A `Conditional` method: `fn` takes int32 labels [n] in place of n."""
  samples: bool
  """Draws of the model (sample metrics apply); False: an autoencoder's reconstructions."""


def method_sampler(method: Method) -> MethodSampler:
  """What the method's grids show, unjitted: its samples (`Samples`; for labels when
  `Conditional`) or, for an autoencoder, its held-out `reconstructions` (`Reconstructs`).

  Raises:
    ValueError: the method neither samples nor reconstructs.
  """
  if isinstance(method, Conditional):
    def conditional(state, rng, labels):
      return method.sample_conditional(state, rng, {"label": labels}, labels.shape[0])
    return MethodSampler(conditional, by_label=True, samples=True)
  if isinstance(method, Samples):
    return MethodSampler(method.sample, by_label=False, samples=True)
  if isinstance(method, Reconstructs):
    return MethodSampler(method.reconstructions, by_label=False, samples=False)
  raise ValueError(f"method {type(method).__name__} neither samples (jgen.train.Samples) nor "
                   "reconstructs (jgen.train.Reconstructs): it has nothing to draw")


def jit_sampler(method: Method, mesh):
  """The method's sampler under one jit (the whole sampling chain is one compiled program):
  `fn(state, rng, n)`, or `fn(state, rng, labels)` for a `Conditional` method, returning host
  images (an autoencoder's: its held-out `reconstructions`).

  The samples are spread over every device of every process: when the mesh size divides `n`
  the output is split along its batch axis (XLA partitions the whole chain: each device draws
  and denoises n / devices samples; `threefry` keys make the draws independent of the split),
  then gathered to every process's host (`process_allgather`); otherwise it runs replicated.
  A `SamplesWithFrozen` method's `sample_frozen` arrays are put on the mesh once and passed to
  the jitted function as `state.frozen` entries on every call.

  Raises:
    ValueError: the method neither samples nor reconstructs.
  """
  fn, by_label, _ = method_sampler(method)
  repl = mesh_lib.replicated(mesh)
  outs = {True: mesh_lib.batch_sharding(mesh), False: repl}
  extra = dict(method.sample_frozen) if isinstance(method, SamplesWithFrozen) else {}
  extra = jax.device_put(extra, repl)

  def with_extra(state):
    clash = sorted(set(extra) & set(state.frozen))
    if clash:
      raise ValueError(f"the sampler's frozen arrays {clash} clash with the run's own frozen "
                       "arrays of the same name")
    return state.replace(frozen={**state.frozen, **extra}) if extra else state

  if by_label:
    fns = {k: jax.jit(fn, out_shardings=v) for k, v in outs.items()}
    return lambda state, rng, labels: to_host(
        fns[len(labels) % mesh.size == 0](with_extra(state), rng, labels))
  fns = {k: jax.jit(fn, static_argnums=2, out_shardings=v) for k, v in outs.items()}
  return lambda state, rng, n: to_host(fns[n % mesh.size == 0](with_extra(state), rng, n))


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-process) array as one host array on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def labels_for_samples(method: Method, config: Any, num: int) -> np.ndarray | None:
  """Labels of a conditional method's samples (`config.sample.labels`), else None."""
  if not isinstance(method, Conditional):
    return None
  return conditioning.sample_labels(config.sample.get("labels", ""), num, method.num_classes)


def draw(sample_fn, state: TrainState, rng: jax.Array, n: int, labels: np.ndarray | None
         ) -> jax.Array:
  """`n` images of a `jit_sampler` function (conditioned on `labels` [n] when given)."""
  return sample_fn(state, rng, n) if labels is None else sample_fn(state, rng, labels[:n])


def sample_images(sample_fn, state: TrainState, config: Any, *, num: int, seed: int,
                  labels: np.ndarray | None = None) -> np.ndarray:
  """`num` samples in [-1, 1] as a host array, in jitted chunks of config.sample.batch_size
  (conditioned on `labels` [num] when given)."""
  chunk = min(config.sample.batch_size, num)
  base = jax.random.key(seed)
  out = []
  for i in range(math.ceil(num / chunk)):
    part = None if labels is None else np.resize(labels[i * chunk:(i + 1) * chunk], chunk)
    out.append(np.asarray(draw(sample_fn, state, jax.random.fold_in(base, i), chunk, part)))
  return np.concatenate(out)[:num]


def grid_cols(n: int) -> int:
  """Columns of a square-ish grid of `n` images."""
  return int(math.ceil(math.sqrt(n)))


def upscale(config: Any) -> int:
  """Grid upscaling so that small images (8-16 px) are visible in a PNG viewer."""
  return max(1, 64 // config.data.image_size)


def jit_evaluator(method: Method, mesh):
  """An `Evaluates` method's `evaluate` under jit (replicated metrics), else None."""
  if not isinstance(method, Evaluates):
    return None
  return jax.jit(method.evaluate, out_shardings=mesh_lib.replicated(mesh))


def evaluate_loss(eval_fn, state, dataset, sharding, *, num_batches: int, seed: int
                  ) -> dict[str, float]:
  """Averages an `Evaluates` method's `eval_fn(state, batch, rng)` metrics over the first
  `num_batches` batches of `dataset`."""
  totals: dict[str, float] = {}
  for i in range(num_batches):
    batch = jdata.shard_batch(dataset[i], sharding)
    m = jax.device_get(eval_fn(state, batch, jax.random.fold_in(jax.random.key(seed), i)))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v) / num_batches
  return totals
