"""The one train loop: data, mesh, the jitted donated step, EMA, checkpoints, resume, logging,
sample grids.

`train` is the train mode of `launch.py` (`jgen.train.inference` holds the sample and eval
modes); it takes the experiment config and a work directory. Everything method-specific comes
through the abilities of `jgen.train.method`.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import tqdm
from etils import epath

from jgen import data as jdata
from jgen.train import adapters
from jgen.train import inputs
from jgen.train import mesh as mesh_lib
from jgen.train import parallel
from jgen.train import preemption
from jgen.train import run_record
from jgen.train import sampling
from jgen.train import translations
from jgen.train.checkpoint import Checkpointer
from jgen.train.method import Prepares, Translates, load_method
from jgen.train.sharding import restore_or_init
from jgen.train.state import TrainState
from jgen.train.stepper import (NonFiniteLossError, Stepper, all_finite, raise_if_watched,
                                watch_init)
from jgen.train.writers import MetricWriter, save_image_grid

log = logging.getLogger("jgen")

__all__ = ["check_writable", "train"]


def _is_main() -> bool:
  return jax.process_index() == 0


def check_writable(workdir: str) -> None:
  """Creates `workdir` and writes and removes a probe file in it, before any data or compile.

  Raises:
    ValueError: the directory cannot be created or written (read-only, no permission).
  """
  path = epath.Path(workdir)
  probe = path / f".jgen_write_probe_{jax.process_index()}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise ValueError(f"the work directory {workdir} is not writable ({type(e).__name__}: {e}); "
                     "pass a --workdir you can write to (checkpoints, samples and logs go "
                     "there)") from e


def train(config, workdir: str) -> TrainState:
  """Trains `config.method` on `config.data`, resuming from `workdir` if it holds a run.

  SIGTERM/SIGINT are caught from the start (`preemption.StopRequest`): one that arrives while
  the data loads or the step compiles stops the run after its first step, with a checkpoint.

  Returns:
    The final train state (on the mesh: replicated, or split over `config.mesh.fsdp`).
  """
  with preemption.StopRequest() as stop:
    return _train(config, workdir, stop)


def _train(config, workdir: str, stop: preemption.StopRequest) -> TrainState:
  mode = parallel.mode_from_config(config)
  method = load_method(config)
  mesh = mesh_lib.make_mesh(fsdp=mesh_lib.fsdp_from_config(config))
  jdata.check_batch_size(config.data.batch_size, num_devices=mesh.size,
                         process_count=jax.process_count())
  check_writable(workdir)
  if isinstance(method, Prepares):
    method = method.prepare(workdir)
  dataset = inputs.make_dataset(config, inputs.load_data(config, split=config.data.split),
                                seed=config.seed)
  eval_fn = sampling.jit_evaluator(method, mesh) if config.train.eval_every else None
  eval_dataset = None
  if eval_fn is not None:
    eval_dataset = inputs.make_dataset(
        config, inputs.load_data(config, split=config.data.eval_split), seed=config.seed + 1)

  sharding = mesh_lib.batch_sharding(mesh)
  first_batch = jdata.shard_batch(dataset[0], sharding)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      max_to_keep=config.train.keep_checkpoints,
                      async_save=config.train.async_checkpoints)
  lora = adapters.lora_from_config(config)
  adapter_ckpt = None if lora is None else adapters.AdapterCheckpoints(
      workdir, lora, max_to_keep=config.train.keep_checkpoints,
      async_save=config.train.async_checkpoints)
  if ckpt.latest_step() is not None:  # before anything compiles
    run_record.check_resume(workdir, config, log=log)
  state = restore_or_init(method, config, mesh, ckpt, first_batch, workdir=workdir)
  start = int(state.step)
  total = config.train.num_steps
  if _is_main():
    run_record.append_start(workdir, config, step=start)

  # The first non-finite step is found on device every step (a carried flag, no host sync);
  # the host reads it where it syncs anyway: at log steps and before each save.
  watch = watch_init(jax.eval_shape(
      lambda s, b: method.train_step(s, b, s.step_rng()), state, first_batch)[1])
  run = Stepper(method, mode, mesh, state, watch)
  del state  # from here on run.state (pmap: stacked copies); run.view() is the mesh form
  translates = isinstance(method, Translates)
  sample_fn = None if translates else sampling.jit_sampler(method, mesh)
  sample_labels = sampling.labels_for_samples(method, config, config.sample.num)
  writer = MetricWriter(workdir, enabled=_is_main())
  sample_dir = os.path.join(workdir, "samples")
  log.info("training %s on %d device(s), %d process(es) (%s): steps %d..%d, global batch %d",
           config.method, mesh.size, jax.process_count(), mode, start, total,
           config.data.batch_size)

  def check_watch():
    raise_if_watched(run.host(run.watch), ckpt)

  def save_checkpoint(step_now: int):
    check_watch()
    items = run.view().checkpoint_items()
    bad = [k for k, tree in items.items() if not bool(all_finite(tree))]
    if bad:
      raise NonFiniteLossError(
          f"non-finite {', '.join(bad)} in the state at step {step_now}; not saving. The last "
          f"good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept. Lower "
          "--config.optim.lr, set --config.optim.grad_clip_norm, or check the data.")
    ckpt.save(step_now, items)
    if adapter_ckpt is not None:
      adapter_ckpt.save(step_now, run.view())

  def write_samples(step_now: int):
    if translates:  # held-out sources | translations | targets
      translations.write_translations(method, run.view(), mesh, config, sample_dir,
                                      f"step_{step_now:07d}", upscale=sampling.upscale(config))
      return
    images = sampling.sample_images(sample_fn, run.view(), config, num=config.sample.num,
                                    seed=config.sample.seed, labels=sample_labels)
    if _is_main():
      path = save_image_grid(images, os.path.join(sample_dir, f"step_{step_now:07d}.png"),
                             ncol=sampling.grid_cols(len(images)),
                             upscale=sampling.upscale(config))
      writer.write_images(step_now, "samples", images)
      log.info("wrote samples %s", path)

  tick, tick_step = time.time(), start
  bar = tqdm.tqdm(total=total, initial=start, disable=not _is_main(), dynamic_ncols=True,
                  desc="train", unit="step")
  batches = jdata.iterate(dataset, start, prefetch=config.data.prefetch)
  saved = None  # the step of the last checkpoint this start wrote
  try:
    for step_now in range(start + 1, total + 1):
      metrics = run.step(next(batches), sharding)
      bar.update(1)
      last = step_now == total
      if step_now % config.train.log_every == 0 or last:
        check_watch()
        host = {k: float(v) for k, v in run.host(metrics).items()}
        now = time.time()
        host["steps_per_sec"] = (step_now - tick_step) / max(now - tick, 1e-9)
        tick, tick_step = now, step_now
        bar.set_postfix(loss=f"{host.get('loss', float('nan')):.4f}")
        writer.write_scalars(step_now, {f"train/{k}": v for k, v in host.items()})
      if eval_fn is not None and (step_now % config.train.eval_every == 0 or last):
        scalars = sampling.evaluate_loss(eval_fn, run.view(), eval_dataset, sharding,
                                         num_batches=config.train.eval_batches, seed=config.seed)
        writer.write_scalars(step_now, {f"eval/{k}": v for k, v in scalars.items()}, echo=True)
      if step_now % config.train.checkpoint_every == 0 or last:
        save_checkpoint(step_now)
        saved = step_now
      if (config.train.sample_every and step_now % config.train.sample_every == 0) or last:
        write_samples(step_now)
      if stop.requested(step_now) and not last:
        if saved != step_now:
          save_checkpoint(step_now)
        ckpt.wait()
        if adapter_ckpt is not None:
          adapter_ckpt.wait()
        stopped = preemption.Preempted(step_now, stop.reason)
        log.warning("%s (%s)", stopped, ckpt.directory)
        raise stopped
  finally:
    bar.close()
    ckpt.close()
    if adapter_ckpt is not None:
      adapter_ckpt.close()
    writer.close()
  return run.view()
