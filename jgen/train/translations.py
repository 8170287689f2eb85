"""What the loop does for a `Translates` method (pix2pix, CycleGAN, StarGAN) instead of sampling.

* **Inputs:** the first N examples of ``config.data.eval_split`` in a fixed order, through the
  method's `translation_inputs` (``source``, and ``target`` / ``label`` where known); or, with
  ``config.sample.source=PATH``, the images of a folder of the user's own (``source`` only,
  resized to the model's input as ``config.data`` says).
* **Translations:** `method.translate` under one jit, in chunks of ``config.sample.batch_size``
  (the last chunk padded, so one program serves every chunk), EMA generator.
* **Grids:** one row per source: ``source | its D translations | the D known targets``
  (one-channel images shown as gray RGB when the outputs have three channels).
* **Files:** ``samples/<tag>.png`` and ``samples/<tag>.npz`` with ``source`` uint8 [N, H, W, C],
  ``images`` uint8 [N, D, H, W, C'], ``target`` (when known), ``label`` (when present) and
  ``names`` (the D translations).
* **Eval:** `jgen.metrics.translation.translation_metrics` over the held-out split.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen import data as jdata
from jgen.train import mesh as mesh_lib
from jgen.train.method import SamplesWithFrozen, Translates, TranslatesByLabel
from jgen.train.state import TrainState
from jgen.train.writers import save_image_grid, save_npz, to_uint8

log = logging.getLogger("jgen")

__all__ = ["held_out_inputs", "translate_all", "translation_eval", "translation_rows",
           "write_translations"]


def held_out_inputs(method: Translates, config: Any, num: int | None) -> dict[str, np.ndarray]:
  """The translation inputs of the first `num` (None: all) held-out examples, host arrays."""
  d = config.data
  user = config.sample.get("source", "")
  if user:
    src = jdata.load_source(f"folder:{user}", split=d.eval_split, image_size=d.image_size,
                            channels=d.channels, resize=True)
  else:
    src = jdata.load_source(d.source, split=d.eval_split, data_dir=d.data_dir,
                            image_size=d.image_size, channels=d.channels, resize=d.resize,
                            seed=config.seed)
  n = len(src) if num is None else min(int(num), len(src))
  if n == 0:
    raise ValueError(f"no held-out images to translate in {user or d.source} "
                     f"(split {d.eval_split!r})")
  batch = jdata.read_batch(src, range(n))
  if user:
    return {"source": batch["image"]}
  inputs = method.translation_inputs({k: jnp.asarray(v) for k, v in batch.items()})
  return {k: np.asarray(v) for k, v in inputs.items()}


def translate_all(method: Translates, state: TrainState, mesh, source: np.ndarray, *,
                  batch_size: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
  """`method.translate` of every source, [N, D, H, W, C'] on the host (chunk i uses key
  ``fold_in(key(seed), i)``); ``translate_labeled`` with `labels` [N] for a
  `TranslatesByLabel` method. A `SamplesWithFrozen` method's arrays join ``state.frozen`` as
  arguments of the compiled function, as in the loop's sampler."""
  labeled = labels is not None and isinstance(method, TranslatesByLabel)
  if isinstance(method, SamplesWithFrozen) and method.sample_frozen:
    extra = jax.device_put(dict(method.sample_frozen), mesh_lib.replicated(mesh))
    state = state.replace(frozen={**state.frozen, **extra})
  fn = jax.jit(method.translate_labeled if labeled else method.translate,
               out_shardings=mesh_lib.replicated(mesh))
  chunk = min(batch_size, len(source))
  base = jax.random.key(seed)
  out = []
  for i in range(math.ceil(len(source) / chunk)):
    part = source[i * chunk:(i + 1) * chunk]
    n = len(part)
    args = [_padded(part, chunk)]
    if labeled:
      args.append(_padded(np.asarray(labels[i * chunk:(i + 1) * chunk], np.int32), chunk))
    out.append(np.asarray(fn(state, jax.random.fold_in(base, i), *map(jnp.asarray, args)))[:n])
  return np.concatenate(out)


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  """`x` with zero rows appended up to `size` (one compiled shape for every chunk)."""
  if len(x) == size:
    return x
  return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def _rgb_like(x: np.ndarray, channels: int) -> np.ndarray:
  return np.repeat(x, channels, axis=-1) if x.shape[-1] == 1 and channels == 3 else x


def translation_rows(source: np.ndarray, images: np.ndarray,
                     target: np.ndarray | None = None) -> tuple[np.ndarray, int]:
  """`(tiles [N * cols, H, W, C], cols)`: per source, the source, its D translations and the D
  targets (when given), in that order."""
  channels = max(source.shape[-1], images.shape[-1])
  rows = [_rgb_like(source, channels)[:, None], _rgb_like(images, channels)]
  if target is not None:
    rows.append(_rgb_like(target, channels))
  tiles = np.concatenate(rows, axis=1)
  return tiles.reshape(-1, *tiles.shape[2:]), tiles.shape[1]


def write_translations(method: Translates, state: TrainState, mesh, config: Any, out_dir: str,
                       tag: str, *, upscale: int) -> dict[str, str]:
  """Translates `config.sample.num` held-out (or user) images; writes the PNG grid and npz."""
  inputs = held_out_inputs(method, config, config.sample.num)
  images = translate_all(method, state, mesh, inputs["source"],
                         batch_size=config.sample.batch_size, seed=config.sample.seed,
                         labels=inputs.get("label"))
  target = inputs.get("target")
  tiles, cols = translation_rows(inputs["source"], images, target)
  paths = {"png": os.path.join(out_dir, f"{tag}.png"), "npz": os.path.join(out_dir, f"{tag}.npz")}
  if jax.process_index() == 0:
    save_image_grid(tiles, paths["png"], ncol=cols, upscale=upscale)
    arrays = {"source": to_uint8(inputs["source"]), "images": to_uint8(images),
              "names": np.asarray(method.translation_names)}
    if target is not None:
      arrays["target"] = to_uint8(target)
    if "label" in inputs:
      arrays["label"] = inputs["label"]
    save_npz(paths["npz"], **arrays)
    log.info("wrote %d translations (%s): %s, %s", len(images),
             ", ".join(method.translation_names), paths["png"], paths["npz"])
  return paths


def translation_eval(method: Translates, state: TrainState, mesh, config: Any
                     ) -> dict[str, float]:
  """`translation_metrics` of the translations of the whole held-out split (or the first
  ``config.eval.num_samples`` examples). Domain FID uses ``config.eval.features`` when it names
  a domain classifier (``domain:digits``), else none (Inception features of a few hundred
  translations would mean little)."""
  from jgen.metrics import networks  # pylint: disable=import-outside-toplevel
  from jgen.metrics import translation as tm  # pylint: disable=import-outside-toplevel

  inputs = held_out_inputs(method, config, config.eval.get("num_samples"))
  images = translate_all(method, state, mesh, inputs["source"],
                         batch_size=config.sample.batch_size, seed=config.eval.seed,
                         labels=inputs.get("label"))
  features = config.eval.get("features", "auto")
  net = networks.load(features) if str(features).startswith("domain:") else None
  if net is None:
    log.info("translation eval: no domain FID (eval.features=%r is not a domain:<dataset> "
             "classifier)", features)
  return tm.translation_metrics(inputs["source"], images, inputs.get("target"),
                                inputs.get("label"), feature_net=net, seed=config.eval.seed)
