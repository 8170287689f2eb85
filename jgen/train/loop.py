"""The one loop: data, mesh, jitted donated steps, EMA, checkpoints, resume, logging, grids.

`train`, `sample` and `evaluate` are the three modes of `launch.py`; each takes the experiment
config and a work directory. Everything method-specific comes through `jgen.train.method`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath
from jax.experimental import multihost_utils

from jgen import data as jdata
from jgen.nn import conditioning
from jgen.nn.clip_tokenizer import CLIPTokenizer
from jgen.train import mesh as mesh_lib
from jgen.train.checkpoint import Checkpointer
from jgen.train import adapters
from jgen.train import init_from as init_from_lib
from jgen.train import parallel
from jgen.data.unpaired_derived import IndexSubset
from jgen.train import preemption
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train import translations
from jgen.train.method import (Conditional, Evaluates, Method, PathLengths, Prepares,
                               Reconstructs, SampleFigures, SamplesWithFrozen, SamplesWithoutData,
                               Translates, Truncates, load_method, sample_tag)
from jgen.train.state import TrainState
from jgen.train.writers import MetricWriter, save_image_grid, save_json, save_npz, to_uint8

log = logging.getLogger("jgen")


class NonFiniteLossError(FloatingPointError):
  """The loss or the parameters became NaN/inf; the last good checkpoint is kept."""


def _is_main() -> bool:
  return jax.process_index() == 0


def load_data(config, *, split: str):
  """The source named by `config.data` for `split`, checked against the model's shape."""
  d = config.data
  tokenizer = None
  if "captioned:" in str(d.source) and "text" in config:  # also inside derived:T:captioned:
    tokenizer = CLIPTokenizer.from_spec(str(config.text.get("tokenizer", "open_clip")),
                                        pad_token=config.text.get("pad_token", "<|endoftext|>"))
  source = jdata.load_source(d.source, split=split, data_dir=d.data_dir,
                             image_size=d.image_size, channels=d.channels, resize=d.resize,
                             seed=config.seed, cache=d.get("cache", False),
                             skip_corrupt=d.get("skip_corrupt", False), tokenizer=tokenizer)
  if len(source) == 0:  # sources that index lazily (tfds) are checked here
    raise jdata.EmptySourceError(f"data source {d.source!r} split {split!r}")
  keep = {int(v) for v in str(d.get("train_labels", "") or "").replace(" ", "").split(",") if v}
  if keep and split == d.split:  # one class's images (DreamBooth's subject); evals see all
    if source.num_classes is None:
      raise ValueError(f"data.train_labels={d.train_labels!r} needs labels, and {d.source!r} "
                       "has none")
    index = [i for i in range(len(source)) if int(source[i]["label"]) in keep]
    if not index:
      raise ValueError(f"no example of {d.source!r} split {split!r} has a label in "
                       f"data.train_labels={d.train_labels!r}")
    source = IndexSubset(source, index)
  limit = int(d.get("train_examples", 0) or 0)
  if limit and split == d.split:  # small-data training (ADA's setting); evals see all
    if limit > len(source):
      raise ValueError(f"data.train_examples={limit} exceeds the {len(source)} examples of "
                       f"{d.source!r} split {split!r}: lower it, or 0 for all")
    source = IndexSubset(source, range(limit))
  return source


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


def _make_dataset(config, source, *, seed: int):
  return jdata.make_dataset(source, global_batch_size=config.data.batch_size, seed=seed,
                            random_flip=config.data.random_flip,
                            process_index=jax.process_index(),
                            process_count=jax.process_count())


def abstract_batch(config, mesh, source) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a global batch, from the source's element spec (no data read)."""
  sharding = mesh_lib.batch_sharding(mesh)
  spec = jdata.batch_spec(source.element_spec, config.data.batch_size)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in spec.items()}


def _rules(config) -> tuple:
  return adapters.rules(rules_lib.parse_rules(config.optim.get("rules", ())),
                        adapters.lora_from_config(config))


def _method_init(method: Method, config):
  """`method.init`, with LoRA adapters attached when ``config.lora.rank > 0``
  (`jgen.train.adapters.attach`; A drawn from a key folded from the init key)."""
  lora = adapters.lora_from_config(config)
  if lora is None:
    return method.init

  def init(rng, batch):
    return adapters.attach(method.init(rng, batch), lora, jax.random.fold_in(rng, 0x10BA))
  return init


def _init_fn(method: Method, config):
  """`_method_init` followed by the config's trainable-parameter rules."""
  rules, init = _rules(config), _method_init(method, config)
  return lambda rng, batch: init(rng, batch).with_rules(rules)


def _with_shardings(abstract: Any, mesh) -> Any:
  """ShapeDtypeStructs of `abstract` carrying their `mesh_lib.state_shardings`."""
  shardings = mesh_lib.state_shardings(mesh, abstract)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def jit_onto(fn, abstract: Any, mesh, *, rest: int = 0, donate_argnums=()):
  """`jax.jit(fn)` whose output -- a tree like `abstract` (ShapeDtypeStructs with shardings),
  or with `rest > 0` a tuple of that tree and `rest` more outputs -- lands on `abstract`'s
  shardings (the `rest` outputs replicated).

  The jitted function returns the tree's leaves and the tree is rebuilt from `abstract`'s
  structure: out_shardings given as a tree would have to equal the output's static metadata,
  and a TrainState's optimizer closures (`per_network`) are new objects on every `init` call.
  """
  treedef = jax.tree.structure(abstract)
  leaves = [x.sharding for x in jax.tree.leaves(abstract)]
  repl = mesh_lib.replicated(mesh)

  def flat(*args):
    out = fn(*args)
    return (jax.tree.leaves(out[0]), *out[1:]) if rest else jax.tree.leaves(out)

  jitted = jax.jit(flat, donate_argnums=donate_argnums,
                   out_shardings=(leaves, *[repl] * rest) if rest else leaves)

  def call(*args):
    out = jitted(*args)
    if rest:
      return (jax.tree.unflatten(treedef, out[0]), *out[1:])
    return jax.tree.unflatten(treedef, out)

  return call


def _abstract_state(method: Method, config, rng, batch, mesh) -> TrainState:
  """The train state's shapes (via eval_shape, no compute) with their shardings (replicated,
  or split over `fsdp`: `jgen.train.mesh`)."""
  return _with_shardings(jax.eval_shape(_init_fn(method, config), rng, batch), mesh)


def restore_or_init(method: Method, config, mesh, ckpt: Checkpointer, first_batch, *,
                    workdir: str) -> TrainState:
  """The latest checkpoint of the run if there is one, else a fresh state.

  A fresh state is `init` jitted onto the state's shardings (big_vision's pattern), then the
  `config.init_from` loads put in (checked against the state's shapes first; passed to a jitted
  function as arguments, so never compile-time constants), then the rules applied (optimizer
  state and EMAs start from the loaded parameters). Restoring builds no state at all, only its
  shapes, and checks restored frozen arrays against the fingerprints the run recorded.
  """
  rng = jax.random.key(config.seed)
  abstract = _abstract_state(method, config, rng, first_batch, mesh)
  if ckpt.latest_step() is not None:
    items = ckpt.restore(abstract.checkpoint_items())
    log.info("resumed from checkpoint step %d in %s", int(items["step"]), ckpt.directory)
    state = abstract.from_checkpoint_items(items)
    init_from_lib.verify_frozen(workdir, state.frozen)
    return state
  loads, steps = [], []
  for spec in init_from_lib.parse_init_from(config):
    tree, step = init_from_lib.load(spec)
    loads.append((spec, tree))
    steps.append(step)
    log.info("init_from %s: %s step %d (%s/%s) -> %s", spec.name, spec.workdir, step,
             spec.source, spec.subtree, spec.into)
  init_from_lib.check_loads(abstract, loads)
  rules = _rules(config)
  init = _method_init(method, config)
  fresh = _with_shardings(jax.eval_shape(init, rng, first_batch), mesh)
  state = jit_onto(init, fresh, mesh)(rng, first_batch)

  def put(state, trees):
    placed = [(spec, tree) for (spec, _), tree in zip(loads, trees)]
    return init_from_lib.apply_loads(state, placed).with_rules(rules)

  trees = jax.device_put([tree for _, tree in loads], mesh_lib.replicated(mesh))
  state = jit_onto(put, abstract, mesh, donate_argnums=0)(state, trees)
  if loads and _is_main():
    init_from_lib.write_record(workdir, loads, steps)
  return state


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


_all_finite_jit = jax.jit(_all_finite)


def _watch_init(metric_shapes) -> dict[str, Any]:
  """The non-finite watch: the first step whose metrics were non-finite (-1: none yet) and
  those metrics' values."""
  return {"step": jnp.int32(-1),
          "metrics": {k: jnp.zeros(v.shape, jnp.float32) for k, v in metric_shapes.items()}}


def _watch_update(watch, metrics, step) -> dict[str, Any]:
  """`watch` with this step recorded if its metrics (loss, grad norm ...) are the first
  non-finite ones (on device, inside the step)."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
  first = (watch["step"] < 0) & ~finite
  return {"step": jnp.where(first, jnp.asarray(step, jnp.int32), watch["step"]),
          "metrics": {k: jnp.where(first, metrics[k].astype(jnp.float32), v)
                      for k, v in watch["metrics"].items()}}


def _raise_if_watched(watch, ckpt: Checkpointer) -> None:
  step = int(watch["step"])
  if step < 0:
    return
  values = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in watch["metrics"].items()}
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  raise NonFiniteLossError(
      f"training became non-finite at step {step}: {bad} (that step's metrics: {values}); "
      f"nothing after it is saved. The last good checkpoint (step {ckpt.latest_step()}) in "
      f"{ckpt.directory} is kept. Lower --config.optim.lr, set --config.optim.grad_clip_norm, "
      "or check the data.")


def jit_sampler(method: Method, mesh):
  """The method's sampler under one jit (the whole sampling chain is one compiled program):
  `fn(state, rng, n)`, or `fn(state, rng, labels)` for a `Conditional` method, returning host
  images.

  The samples are spread over every device of every process: when the mesh size divides `n`
  the output is split along its batch axis (XLA partitions the whole chain: each device draws
  and denoises n / devices samples; `threefry` keys make the draws independent of the split),
  then gathered to every process's host (`process_allgather`); otherwise it runs replicated.
  A `SamplesWithFrozen` method's `sample_frozen` arrays are put on the mesh once and passed to
  the jitted function as `state.frozen` entries on every call.
  """
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

  if isinstance(method, Conditional):
    def conditional(state, rng, labels):
      return method.sample_conditional(state, rng, {"label": labels}, labels.shape[0])
    fns = {k: jax.jit(conditional, out_shardings=v) for k, v in outs.items()}
    return lambda state, rng, labels: to_host(
        fns[len(labels) % mesh.size == 0](with_extra(state), rng, labels))
  fns = {k: jax.jit(method.sample, static_argnums=2, out_shardings=v) for k, v in outs.items()}
  return lambda state, rng, n: to_host(fns[n % mesh.size == 0](with_extra(state), rng, n))


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-process) array as one host array on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def labels_for_samples(method: Method, config, num: int) -> np.ndarray | None:
  """Labels of a conditional method's samples (`config.sample.labels`), else None."""
  if not isinstance(method, Conditional):
    return None
  return conditioning.sample_labels(config.sample.get("labels", ""), num, method.num_classes)


def _draw(sample_fn, state: TrainState, rng: jax.Array, n: int, labels: np.ndarray | None
          ) -> jax.Array:
  return sample_fn(state, rng, n) if labels is None else sample_fn(state, rng, labels[:n])


def sample_images(sample_fn, state: TrainState, config, *, num: int, seed: int,
                  labels: np.ndarray | None = None) -> np.ndarray:
  """`num` samples in [-1, 1] as a host array, in jitted chunks of config.sample.batch_size
  (conditioned on `labels` [num] when given)."""
  chunk = min(config.sample.batch_size, num)
  base = jax.random.key(seed)
  out = []
  for i in range(math.ceil(num / chunk)):
    part = None if labels is None else np.resize(labels[i * chunk:(i + 1) * chunk], chunk)
    out.append(np.asarray(_draw(sample_fn, state, jax.random.fold_in(base, i), chunk, part)))
  return np.concatenate(out)[:num]


def _grid_cols(n: int) -> int:
  return int(math.ceil(math.sqrt(n)))


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
  source = load_data(config, split=config.data.split)
  dataset = _make_dataset(config, source, seed=config.seed)
  eval_dataset = None
  if config.train.eval_every and isinstance(method, Evaluates):
    eval_dataset = _make_dataset(config, load_data(config, split=config.data.eval_split),
                                 seed=config.seed + 1)

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
  watch = _watch_init(jax.eval_shape(
      lambda s, b: method.train_step(s, b, s.step_rng()), state, first_batch)[1])
  run = _Stepper(method, mode, mesh, state, watch)
  del state  # from here on run.state (pmap: stacked copies); run.view() is the mesh form
  eval_fn = (jax.jit(method.evaluate, out_shardings=mesh_lib.replicated(mesh))
             if eval_dataset is not None else None)
  translates = isinstance(method, Translates)
  sample_fn = None if translates else jit_sampler(method, mesh)
  sample_labels = labels_for_samples(method, config, config.sample.num)
  writer = MetricWriter(workdir, enabled=_is_main())
  sample_dir = os.path.join(workdir, "samples")
  log.info("training %s on %d device(s), %d process(es) (%s): steps %d..%d, global batch %d",
           config.method, mesh.size, jax.process_count(), mode, start, total,
           config.data.batch_size)

  def check_watch():
    _raise_if_watched(run.host(run.watch), ckpt)

  def save_checkpoint(step_now: int):
    check_watch()
    items = run.view().checkpoint_items()
    bad = [k for k, tree in items.items() if not bool(_all_finite_jit(tree))]
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
                                      f"step_{step_now:07d}", upscale=_upscale(config))
      return
    images = sample_images(sample_fn, run.view(), config, num=config.sample.num,
                            seed=config.sample.seed, labels=sample_labels)
    if _is_main():
      path = save_image_grid(images, os.path.join(sample_dir, f"step_{step_now:07d}.png"),
                             ncol=_grid_cols(len(images)), upscale=_upscale(config))
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
        scalars = evaluate_loss(eval_fn, run.view(), eval_dataset, sharding,
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


class _Stepper:
  """The train step of `config.parallel` and the state it carries (`jgen.train.parallel`).

  ``jit``: one program over the mesh (`jit_onto`, state and watch donated). ``pmap``: the same
  step under `jax.pmap` over the local devices, with the step key folded by replica, the
  gradients averaged in `TrainState.apply_gradients`, and metrics and float model state
  averaged after the step; `view` gives the mesh form (first replica) for checkpoints,
  evaluation and samples.
  """

  def __init__(self, method: Method, mode: str, mesh, state: TrainState, watch):
    self.mode = mode
    self._like = _with_shardings(state, mesh)
    if mode == "jit":
      def step(state, batch, watch):
        state, metrics = method.train_step(state, batch, state.step_rng())
        return state, metrics, _watch_update(watch, metrics, state.step)

      self._fn = jit_onto(step, self._like, mesh, rest=2, donate_argnums=(0, 2))
      self.state = state
      self.watch = jax.device_put(watch, mesh_lib.replicated(mesh))
      return

    def pstep(state, batch, watch):
      rng = jax.random.fold_in(state.step_rng(), jax.lax.axis_index(parallel.AXIS))
      with parallel.replica_axis():
        state, metrics = method.train_step(state, batch, rng)
      metrics = jax.lax.pmean(metrics, parallel.AXIS)
      state = state.replace(model_state=parallel.mean_inexact(state.model_state))
      return state, metrics, _watch_update(watch, metrics, state.step)

    self._fn = jax.pmap(pstep, axis_name=parallel.AXIS, donate_argnums=(0, 2))
    self.state = parallel.replicate(state)
    self.watch = parallel.replicate(jax.device_get(watch))

  def step(self, batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """One step on this process's `batch`; returns its metrics (on device)."""
    placed = (jdata.shard_batch(batch, sharding) if self.mode == "jit"
              else parallel.split_batch(batch))
    self.state, metrics, self.watch = self._fn(self.state, placed, self.watch)
    return metrics

  def view(self) -> TrainState:
    """The state in mesh form (pmap: the first replica's copy)."""
    return self.state if self.mode == "jit" else parallel.unreplicate(self.state, self._like)

  def host(self, tree: Any) -> Any:
    """`tree` (metrics, the watch) on the host (pmap: the first replica's copy)."""
    if self.mode == "jit":
      return jax.device_get(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


def evaluate_loss(eval_fn, state, dataset, sharding, *, num_batches: int, seed: int
                  ) -> dict[str, float]:
  """Averages `eval_fn(state, batch, rng)` metrics over the first `num_batches` batches."""
  totals: dict[str, float] = {}
  for i in range(num_batches):
    batch = jdata.shard_batch(dataset[i], sharding)
    m = jax.device_get(eval_fn(state, batch, jax.random.fold_in(jax.random.key(seed), i)))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v) / num_batches
  return totals


def _upscale(config) -> int:
  """Grid upscaling so that small images (8-16 px) are visible in a PNG viewer."""
  return max(1, 64 // config.data.image_size)


def restore_for_inference(config, workdir: str) -> tuple[Method, Any, TrainState]:
  """(method, mesh, state) of the latest checkpoint in `workdir`, without building a fresh state."""
  method = load_method(config)
  mesh = mesh_lib.make_mesh(fsdp=mesh_lib.fsdp_from_config(config))
  jdata.check_batch_size(config.data.batch_size, num_devices=mesh.size,
                         process_count=jax.process_count())  # eval batches, state shapes
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  if isinstance(method, SamplesWithoutData):
    sharding = mesh_lib.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
             for k, v in method.example_batch(config.data.batch_size).items()}
  else:
    batch = abstract_batch(config, mesh, load_data(config, split=config.data.split))
  abstract = _abstract_state(method, config, jax.random.key(config.seed), batch, mesh)
  items = ckpt.restore(abstract.checkpoint_items())
  ckpt.close()
  return method, mesh, abstract.from_checkpoint_items(items)


def sample(config, workdir: str) -> dict[str, str]:
  """Loads the latest checkpoint and writes config.sample.num samples (EMA params).

  Writes `samples/<tag>.png` (a grid) and `samples/<tag>.npz` (uint8 images [N, H, W, C]),
  where the tag names the step and the method's sampler settings. A `Translates` method
  translates held-out (or ``config.sample.source``) images instead (`jgen.train.translations`).

  Returns:
    Paths of the written files.
  """
  method, mesh, state = restore_for_inference(config, workdir)
  if isinstance(method, Translates):
    tag = f"step{int(state.step)}_{sample_tag(method)}"
    if config.sample.get("source", ""):
      tag += "_user"
    return translations.write_translations(method, state, mesh, config,
                                           os.path.join(workdir, "samples"), tag,
                                           upscale=_upscale(config))
  t0 = time.time()
  labels = labels_for_samples(method, config, config.sample.num)
  images = sample_images(jit_sampler(method, mesh), state, config, num=config.sample.num,
                          seed=config.sample.seed, labels=labels)
  seconds = time.time() - t0
  bad = int(np.sum(~np.isfinite(np.asarray(images)).reshape(len(images), -1).all(axis=1)))
  if bad:
    log.warning("%d of %d samples have non-finite pixels (written black): the model's sampler "
                "overflowed; train longer or sample more conservatively (e.g. a lower "
                "sample.temperature for flows)", bad, len(images))
  tag = f"step{int(state.step)}_{sample_tag(method)}"
  out_dir = os.path.join(workdir, "samples")
  paths = {"png": os.path.join(out_dir, f"{tag}.png"),
           "npz": os.path.join(out_dir, f"{tag}.npz")}
  if _is_main():
    save_image_grid(images, paths["png"], ncol=_grid_cols(len(images)), upscale=_upscale(config))
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
        save_image_grid(np.asarray(grid), paths[name], ncol=ncol, upscale=_upscale(config))
        log.info("wrote %s", paths[name])
  return paths


def _sample_metrics(method: Method, state: TrainState, mesh, config) -> dict[str, Any] | None:
  """``config.eval``'s sample metrics of the method's EMA samples (and its latent paths for
  "ppl"); logged."""
  from jgen.metrics import evaluate as metrics_lib  # pylint: disable=import-outside-toplevel

  sampler = jit_sampler(method, mesh)
  base = jax.random.key(config.eval.seed)
  labels = labels_for_samples(method, config, config.sample.batch_size)

  def draw(i, n):
    return _draw(sampler, state, jax.random.fold_in(base, i), n,
                 None if labels is None else np.resize(labels, n))

  reconstruct_fn = None
  if isinstance(method, Reconstructs):
    recon = jax.jit(method.reconstruct_images, out_shardings=mesh_lib.replicated(mesh))
    reconstruct_fn = lambda images: recon(state, images)
  paths = method.path_length_fns(state) if isinstance(method, PathLengths) else None
  result = metrics_lib.evaluate_config(config, draw, method=method,
                                       reconstruct_fn=reconstruct_fn, path_length_fns=paths)
  if result is not None:
    psi = f" at psi {method.truncation:g}" if isinstance(method, Truncates) else ""
    log.info("sample metrics at step %d%s (%s features): %s", int(state.step), psi,
             result["features"], ", ".join(f"{k}={v:.5g}" for k, v in result.items()
                                           if isinstance(v, float)))
  return result


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Evaluates the latest checkpoint (EMA params): the method's `evaluate` on
  config.data.eval_split, and the sample metrics of ``config.eval`` (FID/KID/IS/P&R/D&C of EMA
  samples, `jgen.metrics.evaluate.evaluate_config`; off unless ``config.eval.metrics`` is set).

  Logs the results, writes them as ``eval/...`` scalars (sample metrics as
  ``eval/<feature net>/<metric>``) and to ``workdir/eval_step<N>.json``.

  Returns:
    {"step", the method's metrics..., "sample_metrics": {...} when computed}.

  Raises:
    ValueError: the method has no evaluate() and no sample metrics are configured.
  """
  from jgen.metrics import evaluate as metrics_lib  # pylint: disable=import-outside-toplevel

  method, mesh, state = restore_for_inference(config, workdir)
  step = int(state.step)
  wants_samples = bool(metrics_lib.parse_metrics(config.get("eval", {}).get("metrics")))
  translates = isinstance(method, Translates)
  if not isinstance(method, Evaluates) and not wants_samples and not translates:
    raise ValueError(f"method {config.method} has no evaluate(); set --config.eval.metrics="
                     "fid,is,pr for sample metrics")
  result: dict[str, Any] = {"step": step}
  if isinstance(method, Evaluates):
    dataset = _make_dataset(config, load_data(config, split=config.data.eval_split),
                            seed=config.seed + 1)
    eval_fn = jax.jit(method.evaluate, out_shardings=mesh_lib.replicated(mesh))
    scalars = evaluate_loss(eval_fn, state, dataset, mesh_lib.batch_sharding(mesh),
                            num_batches=config.train.eval_batches, seed=config.seed)
    log.info("eval at step %d: %s", step, scalars)
    result.update(scalars)
  if translates:
    metrics = translations.translation_eval(method, state, mesh, config)
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
    if isinstance(method, Truncates) and method.truncation != 1.0 and sample_metrics:
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
