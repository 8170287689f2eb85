"""Restoring a run, and the sample and eval modes of `launch.py` (`--mode=sample`, `--mode=eval`).

Each mode takes the experiment config and a work directory, restores the latest checkpoint
without building a fresh state (`restore_for_inference`) and dispatches on the method's
abilities (`jgen.train.method`): a `Translates` method translates held-out images
(`jgen.train.translations`) where another draws from its sampler (`jgen.train.sampling`); the
eval mode scores an `Evaluates` method's held-out metrics and the sample metrics of
``config.eval`` that the method's abilities allow (`sample_metric_fns`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import numpy as np

from jgen import data as jdata
from jgen.metrics import evaluate as metrics_lib
from jgen.metrics import networks
from jgen.metrics import translation as translation_metrics
from jgen.train import inputs
from jgen.train import mesh as mesh_lib
from jgen.train import sampling
from jgen.train import translations
from jgen.errors import CheckpointError
from jgen.train.checkpoint import Checkpointer
from jgen.train.method import (Method, PathLengths, Reconstructs, SampleFigures, Translates,
                               Truncates, load_method, sample_tag)
from jgen.train.sharding import abstract_state
from jgen.train.state import TrainState
from jgen.train.writers import MetricWriter, save_image_grid, save_json, save_npz, to_uint8

log = logging.getLogger("jgen")

__all__ = ["evaluate", "restore_for_inference", "sample", "sample_metric_fns",
           "translation_eval"]


def _is_main() -> bool:
  return jax.process_index() == 0


def restore_for_inference(config, workdir: str, step: int | None = None
                          ) -> tuple[Method, Any, TrainState]:
  """(method, mesh, state) of checkpoint `step` in `workdir` (None: the latest), without
  building a fresh state.

  Raises:
    CheckpointError: `step` is not one of the run's kept checkpoints (checked before any
      tracing), or no checkpoint / an unreadable one.
  """
  method = load_method(config)
  mesh = mesh_lib.make_mesh(fsdp=mesh_lib.fsdp_from_config(config))
  jdata.check_batch_size(config.data.batch_size, num_devices=mesh.size,
                         process_count=jax.process_count())  # eval batches, state shapes
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  if step is not None and step not in ckpt.all_steps():
    steps = ckpt.all_steps()
    ckpt.close()
    raise CheckpointError(f"no checkpoint of step {step} in {workdir}/checkpoints; the run "
                          f"keeps steps {steps}: set eval.checkpoint_step to one of them, or "
                          f"leave it unset for the latest")
  batch = inputs.inference_batch(method, config, mesh)
  abstract = abstract_state(method, config, jax.random.key(config.seed), batch, mesh)
  items = ckpt.restore(abstract.checkpoint_items(), step=step)
  ckpt.close()
  return method, mesh, abstract.from_checkpoint_items(items)


def _checkpoint_step(config) -> int | None:
  """``config.eval.checkpoint_step``: the checkpoint --mode=eval / sample read (None: latest)."""
  return config.get("eval", {}).get("checkpoint_step")


def sample(config, workdir: str) -> dict[str, str]:
  """Loads the latest checkpoint (or ``eval.checkpoint_step``) and writes config.sample.num
  samples (EMA params).

  Writes `samples/<tag>.png` (a grid) and `samples/<tag>.npz` (uint8 images [N, H, W, C]),
  where the tag names the step and the method's sampler settings. A `Translates` method
  translates held-out (or ``config.sample.source``) images instead (`jgen.train.translations`);
  a `Reconstructs` method that does not sample writes its held-out reconstructions.

  Returns:
    Paths of the written files.
  """
  method, mesh, state = restore_for_inference(config, workdir, _checkpoint_step(config))
  tag = f"step{int(state.step)}_{sample_tag(method)}"
  out_dir = os.path.join(workdir, "samples")
  upscale = sampling.upscale(config)
  if isinstance(method, Translates):
    if config.sample.get("source", ""):
      tag += "_user"
    return translations.write_translations(method, state, mesh, config, out_dir, tag,
                                           upscale=upscale)
  t0 = time.time()
  labels = sampling.labels_for_samples(method, config, config.sample.num)
  images = sampling.sample_images(sampling.jit_sampler(method, mesh), state, config,
                                  num=config.sample.num, seed=config.sample.seed, labels=labels)
  seconds = time.time() - t0
  bad = int(np.sum(~np.isfinite(np.asarray(images)).reshape(len(images), -1).all(axis=1)))
  if bad:
    log.warning("%d of %d samples have non-finite pixels (written black): the model's sampler "
                "overflowed; train longer or sample more conservatively (e.g. a lower "
                "sample.temperature for flows)", bad, len(images))
  paths = {"png": os.path.join(out_dir, f"{tag}.png"),
           "npz": os.path.join(out_dir, f"{tag}.npz")}
  if _is_main():
    save_image_grid(images, paths["png"], ncol=sampling.grid_cols(len(images)), upscale=upscale)
    arrays = {"images": to_uint8(images)}
    if labels is not None:
      arrays["labels"] = labels
    save_npz(paths["npz"], **arrays)
    log.info("wrote %d samples in %.1fs: %s, %s", len(images), seconds, paths["png"],
             paths["npz"])
  if isinstance(method, SampleFigures):
    figures = jax.jit(method.sample_figures)(state, jax.random.key(config.sample.seed))
    for name, (grid, ncol) in figures.items():
      paths[name] = os.path.join(out_dir, f"{tag}_{name}.png")
      if _is_main():
        save_image_grid(np.asarray(grid), paths[name], ncol=ncol, upscale=upscale)
        log.info("wrote %s", paths[name])
  return paths


def sample_metric_fns(method: Method, state: TrainState, mesh, config) -> dict[str, Any]:
  """What `jgen.metrics.evaluate.evaluate_config` can score of the method, by its abilities:
  ``sample_fn`` (i, n) -> n EMA samples (`Samples`; None otherwise: sample metrics are then
  refused), ``reconstruct_fn`` (`Reconstructs`: "rfid") and ``path_length_fns``
  (`PathLengths`: "ppl"); the functions not given are None."""
  sample_fn = reconstruct_fn = None
  if sampling.method_sampler(method).samples:
    sampler = sampling.jit_sampler(method, mesh)
    base = jax.random.key(config.eval.seed)
    labels = sampling.labels_for_samples(method, config, config.sample.batch_size)

    def sample_fn(i, n):
      return sampling.draw(sampler, state, jax.random.fold_in(base, i), n,
                           None if labels is None else np.resize(labels, n))
  if isinstance(method, Reconstructs):
    recon = jax.jit(method.reconstruct_images, out_shardings=mesh_lib.replicated(mesh))

    def reconstruct_fn(images):
      return recon(state, images)
  paths = method.path_length_fns(state) if isinstance(method, PathLengths) else None
  return {"sample_fn": sample_fn, "reconstruct_fn": reconstruct_fn, "path_length_fns": paths}


def _truncation(method: Method) -> float | None:
  """The psi a `Truncates` method samples at, else None."""
  return method.truncation if isinstance(method, Truncates) else None


def _sample_metrics(method: Method, state: TrainState, mesh, config) -> dict[str, Any] | None:
  """``config.eval``'s sample metrics of the method (`sample_metric_fns`); logged."""
  fns = sample_metric_fns(method, state, mesh, config)
  result = metrics_lib.evaluate_config(config, fns["sample_fn"], method=method,
                                       reconstruct_fn=fns["reconstruct_fn"],
                                       path_length_fns=fns["path_length_fns"])
  if result is not None:
    psi = _truncation(method)
    log.info("sample metrics at step %d%s (%s features): %s", int(state.step),
             "" if psi is None else f" at psi {psi:g}", result.get("features", "no"),
             ", ".join(f"{k}={v:.5g}" for k, v in result.items() if isinstance(v, float)))
  return result


def translation_eval(method: Translates, state: TrainState, mesh, config: Any
                     ) -> dict[str, float]:
  """`jgen.metrics.translation.translation_metrics` of the translations of the whole held-out
  split (or the first ``config.eval.num_samples`` examples). Domain FID uses
  ``config.eval.features`` when it names a domain classifier (``domain:digits``), else none
  (Inception features of a few hundred translations would mean little)."""
  held_out = translations.held_out_inputs(method, config, config.eval.get("num_samples"))
  images = translations.translate_all(method, state, mesh, held_out["source"],
                                      batch_size=config.sample.batch_size, seed=config.eval.seed,
                                      labels=held_out.get("label"))
  features = config.eval.get("features", "auto")
  net = networks.load(features) if str(features).startswith("domain:") else None
  if net is None:
    log.info("translation eval: no domain FID (eval.features=%r is not a domain:<dataset> "
             "classifier)", features)
  return translation_metrics.translation_metrics(
      held_out["source"], images, held_out.get("target"), held_out.get("label"),
      feature_net=net, seed=config.eval.seed)


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Evaluates the latest checkpoint (or ``eval.checkpoint_step``; EMA params): the method's
  `evaluate` on config.data.eval_split, and the sample metrics of ``config.eval``
  (FID/KID/IS/P&R/D&C of EMA samples, `jgen.metrics.evaluate.evaluate_config`; off unless
  ``config.eval.metrics`` is set).

  Logs the results, writes them as ``eval/...`` scalars (sample metrics as
  ``eval/<feature net>/<metric>``) and to ``workdir/eval_step<N>.json``.

  Returns:
    {"step", the method's metrics..., "sample_metrics": {...} when computed}.

  Raises:
    ValueError: the method has no evaluate() and no sample metrics are configured.
  """
  method, mesh, state = restore_for_inference(config, workdir, _checkpoint_step(config))
  step = int(state.step)
  wants_samples = bool(metrics_lib.parse_metrics(config.get("eval", {}).get("metrics")))
  translates = isinstance(method, Translates)
  eval_fn = sampling.jit_evaluator(method, mesh)
  if eval_fn is None and not wants_samples and not translates:
    raise ValueError(f"method {config.method} has no evaluate(); set --config.eval.metrics="
                     "fid,is,pr for sample metrics")
  result: dict[str, Any] = {"step": step}
  if eval_fn is not None:
    dataset = inputs.make_dataset(config, inputs.load_data(config, split=config.data.eval_split),
                                  seed=config.seed + 1)
    scalars = sampling.evaluate_loss(eval_fn, state, dataset, mesh_lib.batch_sharding(mesh),
                                     num_batches=config.train.eval_batches, seed=config.seed)
    log.info("eval at step %d: %s", step, scalars)
    result.update(scalars)
  if translates:
    metrics = translation_eval(method, state, mesh, config)
    log.info("translation metrics at step %d: %s", step,
             ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
    result.update({f"translation/{k}": v for k, v in metrics.items()})
  if wants_samples and translates:
    raise ValueError("eval.metrics (sample metrics from noise) do not apply to a translation "
                     "method; its --mode=eval reports the translation metrics on its own")
  if wants_samples:
    sample_metrics = _sample_metrics(method, state, mesh, config)
    if sample_metrics is not None:
      result["sample_metrics"] = sample_metrics
    psi = _truncation(method)
    if psi is not None and psi != 1.0 and sample_metrics:
      psi1 = _sample_metrics(method.with_truncation(1.0), state, mesh, config)
      if psi1 is not None:
        result["sample_metrics_psi1"] = psi1
  if _is_main():
    writer = MetricWriter(workdir)
    scalars = {f"eval/{k}": v for k, v in result.items() if k != "step" and
               isinstance(v, (int, float))}
    samples = result.get("sample_metrics", {})
    scalars.update({f"eval/{samples['features']}/{k}": v for k, v in samples.items()
                    if isinstance(v, float)})
    psi1 = result.get("sample_metrics_psi1", {})
    scalars.update({f"eval/{psi1['features']}/psi1/{k}": v for k, v in psi1.items()
                    if isinstance(v, float)})
    writer.write_scalars(step, scalars)
    writer.close()
    path = save_json(os.path.join(workdir, f"eval_step{step}.json"), result)
    log.info("wrote %s", path)
  return result
