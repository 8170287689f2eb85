"""DDPM training parity: jgen's loop against diffusers' unconditional recipe, step for step.

  pip install -e ".[bench]"       # torch + diffusers, for the reference side only
  python benchmarks/ddpm_parity.py --smoke --root /tmp/parity_smoke   # the pipeline, ~2 min
  # The comparison: U-Net (16, 32, 32) x 1 (0.28M parameters), batch 64, 4,000 steps each.
  python benchmarks/ddpm_parity.py --root /tmp/parity --stage ref --seed 0
  python benchmarks/ddpm_parity.py --root /tmp/parity --stage jgen --seed 0
  python benchmarks/ddpm_parity.py --root /tmp/parity --stage jgen --seed 1   # run-to-run noise
  python benchmarks/ddpm_parity.py --root /tmp/parity --stage sample_fid      # FIDs, the table
  python benchmarks/ddpm_parity.py --root /tmp/parity --stage table           # re-print it
  # A larger U-Net (1.1M): --channels 32,64,64 --groups 32 on every stage (2-3x the step time).

Time the stages on an otherwise idle machine. With another benchmark's process on one of the
2 cores, one reference step of the default U-Net took anywhere from 1.1 s to 7 s (torch's two
OpenMP threads wait on each other) while jgen's steps varied far less, so the wall-time ratio
then measures the neighbour more than either framework. Nothing resumes: a stage that finds
its run in ``--root`` stops (``--force`` redoes it); ``sample_fid`` scores only the runs it has
not scored yet.

One small DDPM U-Net in the DDPM CIFAR-10 layout (`unet_config`: downsample_padding 0,
flip_sin_to_cos False, freq_shift 1, norm_eps 1e-6, one attention head; ``--channels``,
``--layers``, ``--attention``, ``--groups`` size it) is trained on CIFAR-10's train split
(``../shared/data/cifar10-jpeg.zip``) for ``--steps`` steps twice:

* ``--stage ref``: PyTorch, a loop written here after diffusers'
  examples/unconditional_image_generation/train_unconditional.py: ``UNet2DModel``,
  ``DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")``, x_t =
  sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t ~ U{0..999}, loss mean (eps_theta(x_t, t) -
  eps)^2, ``clip_grad_norm_(1.0)``, AdamW (lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps
  1e-8), diffusers' cosine schedule with 500 warm-up steps, lr_k = lr k / w for k < w, else lr
  (1 + cos(pi (k - w) / (K - w))) / 2, and diffusers' ``EMAModel`` (warm-up, inv_gamma 1, power
  3/4, max decay 0.9999). Writes the EMA ``UNet2DModel`` with ``save_pretrained``.
* ``--stage jgen``: ``launch.py --config experiments/ddpm/cifar.py`` with the ``--config.*``
  overrides of `jgen_overrides` (printed), which set every one of the hyperparameters above
  where jgen's config has a field.

Shared by both sides: the **initial weights** (the seeded ``UNet2DModel`` is saved under
``ROOT/init_s<seed>`` and converted by `jgen.convert.unet.unet_from_diffusers` into a jgen work
directory that the jgen run starts from through ``init_from``), the **data order and flips**
(the reference reads its batches from jgen's own pipeline, ``ds[step]`` of
`jgen.train.inputs.make_dataset` with the run's seed, so step k of both runs sees the same 64
images flipped the same way; both decode the JPEGs with the same code) and ``--seed``
(init, data order, noise). ``--stage sample_fid`` then converts the reference's EMA U-Net into a
jgen work directory and treats both runs alike with what jgen's ``--mode=eval`` and
``--mode=sample`` run (`jgen.run.main` in this process): the evaluation (the
held-out eps-MSE of the EMA parameters on ``--eval_batches`` test batches, the same batches,
t and noise for every run) and DDIM-100 samples (eta 0, uniform spacing, x0
clipped; the same starting noise for every run); FID of ``--num_samples`` samples against the
Inception statistics of a seeded random ``--reference_images`` subset of the train split
(`jgen.metrics.fid`; the first N images of the class-sorted zip would be two classes only).
A second ``--seed`` of one side gives the run-to-run noise the FID difference is judged by.

Timing: "loop s" is the training loop from its start to the last step (jgen: XLA compilation
included; both: data reading included, checkpoints and jgen's final sample grid excluded),
"s/step" the median over ``--log_every`` windows after the first; jgen's come from the
``train/steps_per_sec`` scalars its loop writes, the reference's are measured the same way.

What the two recipes cannot share (everything else is set equal):

* **EMA warm-up.** diffusers: decay_k = min(0.9999, 1 - (1 + k / inv_gamma)^-power) with k the
  update count minus one (0 at the first update, so the average starts as the first updated
  weights); jgen's ``train.ema_warmup``: min(0.9999, (1 + k) / (10 + k)), k = 0, 1, ... (0.1 at
  the first). At k = 100, 1,000, 10,000: 0.969 / 0.918, 0.9944 / 0.9911, 0.99900 / 0.99910;
  the cap is reached at k = 215,443 (diffusers) and 89,991 (jgen). jgen has no field for the
  power-law warm-up.
* **Noise and timesteps** are drawn by each framework's own generator (torch's global one
  seeded with ``--seed``; jgen's keys, folded from ``key(seed)`` and the step): same
  distributions, other draws.
* **Gradient clipping**: torch scales by 1 / (norm + 1e-6), optax by 1 / norm (both only when
  the global norm exceeds 1.0).
* **The length of the cosine**: diffusers' example sets it to epochs x batches per epoch; here
  both use ``--steps`` (so the runs need not end on an epoch boundary).
* **Arithmetic**: float32 on both; torch's eager kernels and XLA's fused ones round differently,
  so even with equal inputs the weights drift apart over the steps.
* **Data** here are jgen's batches on both sides, not diffusers' ``DataLoader`` and torchvision
  transforms: at 32x32 the example's Resize and RandomCrop are the identity and
  ToTensor + Normalize(0.5, 0.5) is x / 127.5 - 1 as in jgen; its shuffle and flip coins would be
  other draws.

Equal by construction and checked by tests/diffusion/test_ddpm_parity.py: the U-Net's output
and gradients (converted initial weights), AdamW with the cosine warm-up schedule and clipping
(parameters after each of several steps), the noise schedule, dropout (0: ``UNet2DModel``'s
default; jgen's CIFAR config has 0.1), the MSE on eps and the flips.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F
from absl import app, flags, logging
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tensorboardX.proto import event_pb2

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
import jgen.run  # noqa: E402
import jgen.xla  # noqa: E402
from jgen import data as jdata  # noqa: E402
from jgen.convert import files  # noqa: E402
from jgen.convert.pipeline import write_workdir  # noqa: E402
from jgen.convert.unet import unet_from_diffusers  # noqa: E402
from jgen.metrics import evaluate, networks  # noqa: E402
from jgen.metrics import fid as fid_lib  # noqa: E402
from jgen.train import inputs  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402

CONFIG = REPO / "experiments" / "ddpm" / "cifar.py"
FLAGS = flags.FLAGS
flags.DEFINE_enum("stage", "all", ["all", "ref", "jgen", "sample_fid", "table"],
                  "ref | jgen: train that side with --seed; sample_fid: score every trained run "
                  "in --root; all: the three for --seed; table: print the results.")
flags.DEFINE_string("root", "/tmp/ddpm_parity", "Parent of the runs and results.json.")
flags.DEFINE_string("zip", str(REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"),
                    "CIFAR-10 images: a .zip or folder with train/ and test/.")
flags.DEFINE_integer("seed", 0, "Seed of the run: initial weights, data order, flips, noise.")
flags.DEFINE_bool("smoke", False, "Tiny model, 5 steps, 16 samples: the pipeline in ~2 min.")
flags.DEFINE_list("channels", ["16", "32", "32"], "block_out_channels (the first is jgen's ch).")
flags.DEFINE_integer("layers", 1, "layers_per_block (jgen: num_res_blocks).")
flags.DEFINE_integer("attention", 16, "Feature-map size with attention (AttnDownBlock2D).")
flags.DEFINE_integer("groups", 8, "norm_num_groups.")
flags.DEFINE_integer("batch_size", 64, "Train batch.")
flags.DEFINE_integer("steps", 4000, "Train steps of every run.")
flags.DEFINE_integer("warmup", 500, "Learning-rate warm-up steps (diffusers' default 500).")
flags.DEFINE_float("lr", 1e-4, "Peak learning rate (diffusers' default 1e-4).")
flags.DEFINE_integer("log_every", 50, "Steps per timing / loss window.")
flags.DEFINE_integer("num_samples", 2000, "DDIM-100 samples per FID.")
flags.DEFINE_integer("reference_images", 10000, "Train images (seeded random subset) of the "
                     "FID statistics.")
flags.DEFINE_integer("sample_steps", 100, "DDIM steps.")
flags.DEFINE_integer("eval_batches", 16, "Test batches of the held-out loss.")
flags.DEFINE_integer("inception_batch", 200, "Images per Inception call (every call is padded "
                     "to it).")
flags.DEFINE_bool("force", False, "Delete and redo a run that is already in --root.")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The reference's hyperparameters: diffusers' train_unconditional.py defaults at CPU size."""

  block_out_channels: tuple[int, ...] = (16, 32, 32)
  layers_per_block: int = 1
  attention_resolution: int = 16
  norm_num_groups: int = 8
  image_size: int = 32
  batch_size: int = 64
  steps: int = 4000
  lr: float = 1e-4
  warmup: int = 500
  adam_beta1: float = 0.95
  adam_beta2: float = 0.999
  adam_weight_decay: float = 1e-6
  adam_epsilon: float = 1e-8
  grad_clip: float = 1.0
  ema_max_decay: float = 0.9999
  ema_inv_gamma: float = 1.0
  ema_power: float = 0.75
  num_train_timesteps: int = 1000
  beta_schedule: str = "linear"
  beta_start: float = 1e-4   # DDPMScheduler's defaults
  beta_end: float = 0.02
  random_flip: bool = True


SMOKE = dict(block_out_channels=(16, 32), norm_num_groups=8, batch_size=8, steps=5, warmup=2)


def recipe_from_flags() -> Recipe:
  if FLAGS.smoke:
    return Recipe(**SMOKE)
  return Recipe(block_out_channels=tuple(int(c) for c in FLAGS.channels),
                layers_per_block=FLAGS.layers, attention_resolution=FLAGS.attention,
                norm_num_groups=FLAGS.groups, batch_size=FLAGS.batch_size, steps=FLAGS.steps,
                lr=FLAGS.lr, warmup=FLAGS.warmup)


# ------------------------------------------------------------------------------ the network


def unet_config(r: Recipe) -> dict[str, Any]:
  """``UNet2DModel`` arguments: the DDPM CIFAR-10 layout at `r`'s size (attention on the level
  whose feature maps are ``attention_resolution`` pixels wide, one head over all channels)."""
  sizes = [r.image_size // 2**level for level in range(len(r.block_out_channels))]
  attn = [s == r.attention_resolution for s in sizes]
  if not any(attn):
    raise ValueError(f"no level has {r.attention_resolution}x{r.attention_resolution} feature "
                     f"maps (levels: {sizes})")
  return dict(
      sample_size=r.image_size, in_channels=3, out_channels=3,
      block_out_channels=tuple(r.block_out_channels), layers_per_block=r.layers_per_block,
      down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
      up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
      norm_num_groups=r.norm_num_groups, attention_head_dim=None, downsample_padding=0,
      flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, dropout=0.0)


def reference_unet(r: Recipe, seed: int) -> UNet2DModel:
  """A freshly initialised ``UNet2DModel`` (torch's default init under ``manual_seed(seed)``)."""
  torch.manual_seed(seed)
  return UNet2DModel(**unet_config(r))


def noise_scheduler(r: Recipe) -> DDPMScheduler:
  return DDPMScheduler(num_train_timesteps=r.num_train_timesteps, beta_schedule=r.beta_schedule,
                       beta_start=r.beta_start, beta_end=r.beta_end, prediction_type="epsilon")


def jgen_params(config: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
  """jgen's parameter tree (``{"params": ...}``, what the DDPM method trains) of a diffusers
  U-Net's config and state dict."""
  _, variables = unet_from_diffusers(dict(config), state)
  return {"params": variables["params"]}


def read_unet_folder(folder: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
  """(config.json, state dict) of a ``save_pretrained`` folder, read without torch."""
  with open(os.path.join(folder, "config.json")) as f:
    config = json.load(f)
  return config, files.read_state_dict(files.model_weights(folder))


# ------------------------------------------------------------------------------ jgen's config


def jgen_overrides(r: Recipe, *, data: str, seed: int, init_workdir: str | None = None,
                   log_every: int = 50) -> dict[str, Any]:
  """The ``--config.*`` values (dotted keys) that make experiments/ddpm/cifar.py `r`'s recipe.

  Args:
    r: the reference's hyperparameters.
    data: a `jgen.data.load_source` spec (``folder:<zip>``).
    seed: the run's seed (data order, flips, noise; the initial weights come by init_from).
    init_workdir: the converted initial weights (None: jgen's own initialisation).
    log_every: steps per logged loss / steps-per-second window.
  """
  ch = r.block_out_channels[0]
  values: dict[str, Any] = {
      "seed": seed,
      "data.source": data, "data.image_size": r.image_size, "data.channels": 3,
      "data.batch_size": r.batch_size, "data.random_flip": r.random_flip,
      "model.ch": ch, "model.ch_mult": tuple(c // ch for c in r.block_out_channels),
      "model.num_res_blocks": r.layers_per_block,
      "model.attn_resolutions": (r.attention_resolution,),
      "model.num_groups": r.norm_num_groups, "model.dropout": 0.0, "model.dtype": "float32",
      "diffusion.schedule": r.beta_schedule, "diffusion.num_timesteps": r.num_train_timesteps,
      "diffusion.beta_start": r.beta_start, "diffusion.beta_end": r.beta_end,
      "diffusion.loss_type": "mse", "diffusion.prediction": "eps",
      "optim.name": "adamw", "optim.lr": r.lr, "optim.b1": r.adam_beta1,
      "optim.b2": r.adam_beta2, "optim.eps": r.adam_epsilon,
      "optim.weight_decay": r.adam_weight_decay, "optim.warmup_steps": r.warmup,
      "optim.schedule": "cosine", "optim.grad_clip_norm": r.grad_clip,
      "train.num_steps": r.steps, "train.ema_decay": r.ema_max_decay, "train.ema_warmup": True,
      "train.log_every": log_every, "train.checkpoint_every": r.steps,
      "train.sample_every": 0, "train.eval_every": 0,
      "sample.num": 16, "sample.batch_size": 16,
  }
  if init_workdir:
    values.update({"init_from.workdir": init_workdir, "init_from.source": "params"})
  return values


def jgen_config(overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """experiments/ddpm/cifar.py's config with `overrides` (dotted keys) set."""
  config = experiment_module("cifar", beside=str(CONFIG)).get_config()
  config.update_from_flattened_dict(dict(overrides))
  return config


def flag_args(overrides: Mapping[str, Any]) -> list[str]:
  """``--config.k=v`` arguments of launch.py for `overrides`."""
  return [f"--config.{k}={v}" for k, v in overrides.items()]


# ------------------------------------------------------------------------------ runs on disk


def run_name(side: str, seed: int) -> str:
  return f"{side}_s{seed}"


def results_path(root: str) -> str:
  return os.path.join(root, "results.json")


def load_results(root: str) -> dict[str, Any]:
  path = results_path(root)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def save_result(root: str, name: str, entry: Mapping[str, Any]) -> None:
  """Merges `entry` into ``results[name]`` in ``ROOT/results.json`` (atomically)."""
  results = load_results(root)
  results[name] = {**results.get(name, {}), **entry}
  os.makedirs(root, exist_ok=True)
  with open(results_path(root) + ".tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(results_path(root) + ".tmp", results_path(root))


def fresh_dir(path: str) -> str:
  """`path`, which must not exist yet (``--force`` deletes it first)."""
  if os.path.exists(path):
    if not FLAGS.force:
      raise FileExistsError(f"{path} exists: pass --force to redo it, or another --root")
    shutil.rmtree(path)
  return path


def initial_unet(root: str, r: Recipe, seed: int) -> str:
  """``ROOT/init_s<seed>``: the seeded initial ``UNet2DModel`` (written on first use, so both
  sides start from the very same weights whichever runs first)."""
  folder = os.path.join(root, f"init_s{seed}")
  if not os.path.isdir(folder):
    reference_unet(r, seed).save_pretrained(folder)
  config, _ = read_unet_folder(folder)
  want = json.loads(json.dumps(unet_config(r)))  # tuples as lists, as config.json has them
  stale = {k: (config.get(k), v) for k, v in want.items() if config.get(k) != v}
  if stale:
    raise ValueError(f"{folder} holds another U-Net ({stale}): use another --root")
  return folder


def convert_to_workdir(unet_folder: str, workdir: str, config: ml_collections.ConfigDict) -> str:
  """A diffusers U-Net folder as a jgen ``diffusion.ddpm`` work directory of `config`."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    write_workdir(workdir, config, jgen_params(*read_unet_folder(unet_folder)))
  return workdir


# ------------------------------------------------------------------------------ timing


def log_steps(log_every: int, total: int) -> list[int]:
  """The steps that end a timing / loss window: every `log_every`-th, and the last."""
  marks = list(range(log_every, total + 1, log_every))
  return marks if marks and marks[-1] == total else marks + [total]


def window_seconds(ends: Mapping[int, float], start: float) -> list[float]:
  """Seconds per step of each window, from the time each window's last step ended."""
  steps = sorted(ends)
  times = [ends[s] for s in steps]
  return [(b - a) / (s1 - s0) for a, b, s0, s1 in zip([start] + times[:-1], times,
                                                         [0] + steps[:-1], steps)]


def summarize(per_step: Mapping[int, float], losses: Mapping[int, float]) -> dict[str, float]:
  """From ``{window's last step: seconds per step}`` and the logged losses: the loop's seconds,
  the steady s/step (median of the windows after the first, which holds jgen's compilation)
  and the mean logged loss over the second half of the steps."""
  steps = sorted(per_step)
  sizes = [b - a for a, b in zip([0] + steps[:-1], steps)]
  windows = [per_step[s] for s in steps]
  total = steps[-1]
  late = [v for s, v in losses.items() if s > total // 2]
  return {"loop_s": float(sum(w * n for w, n in zip(windows, sizes))),
          "s_per_step": float(statistics.median(windows[1:] or windows)),
          "late_loss": float(np.mean(late)), "steps": int(total)}


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """``{step: value}`` of a scalar in the TensorBoard event files of `workdir` (records of
  <u64 length, u32 crc, Event proto, u32 crc>, read with tensorboardX's proto)."""
  out: dict[int, float] = {}
  for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        if value.tag == tag:
          out[int(event.step)] = float(value.simple_value)
  return out


# ------------------------------------------------------------------------------ the reference


def reference_step(model, scheduler, batch: torch.Tensor, r: Recipe) -> torch.Tensor:
  """The loss of one step: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, mean (eps_theta -
  eps)^2, t ~ U{0..T-1} and eps ~ N(0, I) from torch's global generator."""
  noise = torch.randn(batch.shape, dtype=batch.dtype)
  t = torch.randint(0, r.num_train_timesteps, (batch.shape[0],)).long()
  pred = model(scheduler.add_noise(batch, noise, t), t).sample
  return F.mse_loss(pred.float(), noise.float())


def reference_optimizer(parameters, r: Recipe):
  """(AdamW, diffusers' cosine schedule with linear warm-up) over `parameters`."""
  opt = torch.optim.AdamW(parameters, lr=r.lr, betas=(r.adam_beta1, r.adam_beta2),
                          weight_decay=r.adam_weight_decay, eps=r.adam_epsilon)
  return opt, get_scheduler("cosine", optimizer=opt, num_warmup_steps=r.warmup,
                            num_training_steps=r.steps)


def reference_update(parameters, opt, lr_schedule, r: Recipe) -> None:
  """One update from the gradients in ``.grad``: clip the global norm, AdamW, next lr."""
  torch.nn.utils.clip_grad_norm_(parameters, r.grad_clip)
  opt.step()
  lr_schedule.step()
  opt.zero_grad()


def train_reference(r: Recipe, *, root: str, seed: int, log_every: int) -> dict[str, Any]:
  """Trains the reference for ``r.steps`` on jgen's batches; saves ``ROOT/ref_s<seed>/ema``."""
  out = fresh_dir(os.path.join(root, run_name("ref", seed)))
  t_start = time.perf_counter()
  model = UNet2DModel.from_pretrained(initial_unet(root, r, seed)).train()
  config = jgen_config(jgen_overrides(r, data=f"folder:{FLAGS.zip}", seed=seed))
  dataset = inputs.make_dataset(config, inputs.load_data(config, split=config.data.split),
                                seed=config.seed)
  scheduler = noise_scheduler(r)
  parameters = list(model.parameters())
  opt, lr_schedule = reference_optimizer(parameters, r)
  ema = EMAModel(parameters, decay=r.ema_max_decay, use_ema_warmup=True,
                 inv_gamma=r.ema_inv_gamma, power=r.ema_power, model_cls=UNet2DModel,
                 model_config=model.config)
  torch.manual_seed(seed)
  batches = jdata.iterate(dataset, 0, prefetch=config.data.prefetch)
  losses, ends, logged = {}, {}, set(log_steps(log_every, r.steps))
  loop_start = time.perf_counter()
  for step in range(1, r.steps + 1):
    images = torch.from_numpy(next(batches)["image"]).permute(0, 3, 1, 2).contiguous()
    loss = reference_step(model, scheduler, images, r)
    loss.backward()
    reference_update(parameters, opt, lr_schedule, r)
    ema.step(parameters)
    if step in logged:
      losses[step] = loss.item()
      ends[step] = time.perf_counter()
      print(f"ref step {step}: loss {losses[step]:.4f}", flush=True)
  ema_unet = UNet2DModel.from_config(model.config)
  ema.copy_to(ema_unet.parameters())
  ema_unet.save_pretrained(os.path.join(out, "ema"))
  per_step = dict(zip(sorted(ends), window_seconds(ends, loop_start)))
  return {**summarize(per_step, losses), "process_s": time.perf_counter() - t_start,
          "torch_threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------ jgen


def train_jgen(r: Recipe, *, root: str, seed: int, log_every: int) -> dict[str, Any]:
  """Converts the initial U-Net, then trains it with ``launch.py`` (a subprocess)."""
  workdir = fresh_dir(os.path.join(root, run_name("jgen", seed)))
  data = f"folder:{FLAGS.zip}"
  init = os.path.join(root, f"init_s{seed}_jgen")
  convert_to_workdir(initial_unet(root, r, seed), init,
                     jgen_config(jgen_overrides(r, data=data, seed=seed)))
  overrides = jgen_overrides(r, data=data, seed=seed, init_workdir=init, log_every=log_every)
  cmd = [sys.executable, str(REPO / "launch.py"), f"--config={CONFIG}", f"--workdir={workdir}",
         *flag_args(overrides)]
  print("+", " ".join(cmd), flush=True)
  t0 = time.perf_counter()
  subprocess.run(cmd, cwd=REPO, check=True)
  process_s = time.perf_counter() - t0
  per_step = {s: 1.0 / v for s, v in read_scalars(workdir, "train/steps_per_sec").items()}
  return {**summarize(per_step, read_scalars(workdir, "train/loss")), "process_s": process_s,
          "command": " ".join(cmd)}


def train(side: str, r: Recipe, *, root: str, seed: int, log_every: int) -> None:
  fn = train_reference if side == "ref" else train_jgen
  entry = fn(r, root=root, seed=seed, log_every=log_every)
  save_result(root, run_name(side, seed), {**entry, "side": side, "seed": seed,
                                           "recipe": dataclasses.asdict(r)})


# ------------------------------------------------------------------------------ scoring


def reference_stats(net, *, n: int, seed: int = 0):
  """Inception statistics of a seeded random `n`-subset of the train split (cached)."""
  return fid_lib.reference_stats(net, f"folder:{FLAGS.zip}", split="train", image_size=32,
                                 channels=3, max_images=n, seed=seed,
                                 batch_size=FLAGS.inception_batch)


def eval_overrides(num_samples: int, eval_batches: int) -> dict[str, Any]:
  """jgen's DDIM-100 (eta 0, uniform spacing, x0 clipped) and the held-out-loss batches."""
  return {"sample.sampler": "ddim", "sample.steps": FLAGS.sample_steps, "sample.eta": 0.0,
          "sample.spacing": "uniform", "sample.clip_denoised": True, "sample.seed": 1,
          "sample.num": num_samples, "sample.batch_size": min(num_samples, 250),
          "train.eval_batches": eval_batches, "eval.metrics": ""}


def score(name: str, entry: Mapping[str, Any], *, root: str, net, stats) -> dict[str, Any]:
  """Held-out loss and FID of one run's EMA parameters, both through jgen's modes."""
  r = Recipe(**{**entry["recipe"],
                "block_out_channels": tuple(entry["recipe"]["block_out_channels"])})
  config = jgen_config({**jgen_overrides(r, data=f"folder:{FLAGS.zip}", seed=entry["seed"]),
                        **eval_overrides(FLAGS.num_samples, FLAGS.eval_batches)})
  workdir = os.path.join(root, name)
  if entry["side"] == "ref":
    workdir = convert_to_workdir(os.path.join(workdir, "ema"), os.path.join(workdir, "jgen"),
                                 config)
  held_out = jgen.run.main(config, workdir=workdir, mode="eval")["loss"]
  t0 = time.perf_counter()
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  sample_s = time.perf_counter() - t0
  images = np.load(paths["npz"])["images"]
  fid = evaluate.image_metrics(images, net, metrics=("fid",), reference_stats=stats,
                               batch_size=FLAGS.inception_batch)["fid"]
  return {"test_loss": float(held_out), "fid": float(fid), "fid_n": len(images),
          "fid_reference_n": int(stats["count"]), "sample_s": sample_s,
          "samples": paths["npz"]}


def sample_fid(root: str) -> None:
  results = load_results(root)
  if not results:
    raise FileNotFoundError(f"no trained runs in {results_path(root)}: run --stage ref/jgen")
  net = networks.load("inception", batch_size=FLAGS.inception_batch)
  stats = reference_stats(net, n=FLAGS.reference_images)
  for name, entry in sorted(results.items()):
    if (not FLAGS.force and entry.get("fid_n") == FLAGS.num_samples
        and entry.get("fid_reference_n") == FLAGS.reference_images):
      continue  # scored already (a new seed's run is scored alone)
    print(f"scoring {name}", flush=True)
    save_result(root, name, score(name, entry, root=root, net=net, stats=stats))


# ------------------------------------------------------------------------------ the table


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def table(results: Mapping[str, Any]) -> str:
  """The markdown table of every run, then the FID differences and the wall-time ratio."""
  order = sorted(results, key=lambda n: (results[n]["side"] != "ref", results[n]["seed"]))
  n = next((results[k].get("fid_n") for k in order if results[k].get("fid_n")), None)
  rows = [f"| run | seed | steps | loop s | s/step | loss (2nd half) | test loss (EMA) "
          f"| FID-{n or 'N'} |", "|---|---|---|---|---|---|---|---|"]
  for k in order:
    e = results[k]
    rows.append(f"| {'PyTorch (diffusers)' if e['side'] == 'ref' else 'jgen'} | {e['seed']} | "
                f"{e['steps']} | {e['loop_s']:.1f} | {e['s_per_step']:.3f} | "
                f"{e['late_loss']:.4f} | {_fmt(e.get('test_loss'), '.4f')} | "
                f"{_fmt(e.get('fid'), '.2f')} |")
  lines = ["\n".join(rows), ""]
  by = {(e["side"], e["seed"]): e for e in results.values()}
  for seed in sorted({s for _, s in by}):
    ref, ours = by.get(("ref", seed)), by.get(("jgen", seed))
    if ref and ours:
      if ref.get("fid") is not None and ours.get("fid") is not None:
        lines.append(f"seed {seed}: FID jgen - PyTorch = {ours['fid'] - ref['fid']:+.2f}")
      lines.append(f"seed {seed}: wall-time ratio PyTorch / jgen (> 1: jgen faster) = "
                   f"{ref['loop_s'] / ours['loop_s']:.2f} (loop), "
                   f"{ref['s_per_step'] / ours['s_per_step']:.2f} (steady s/step)")
  for side in ("ref", "jgen"):
    fids = {s: e["fid"] for (sd, s), e in by.items() if sd == side and e.get("fid") is not None}
    if len(fids) > 1:
      lines.append(f"run-to-run noise ({side}, seeds {sorted(fids)}): FID spread "
                   f"{max(fids.values()) - min(fids.values()):.2f}")
  return "\n".join(lines)


def main(argv):
  del argv
  jgen.xla.set_cpu_xla_flags()
  logging.set_verbosity(logging.WARNING)
  r = recipe_from_flags()
  log_every = 1 if FLAGS.smoke else FLAGS.log_every
  if FLAGS.smoke:
    FLAGS.num_samples, FLAGS.reference_images, FLAGS.eval_batches = 16, 64, 2
    FLAGS.inception_batch = 16
  root = FLAGS.root
  if FLAGS.stage in ("all", "ref"):
    train("ref", r, root=root, seed=FLAGS.seed, log_every=log_every)
  if FLAGS.stage in ("all", "jgen"):
    train("jgen", r, root=root, seed=FLAGS.seed, log_every=log_every)
  if FLAGS.stage in ("all", "sample_fid"):
    sample_fid(root)
  results = load_results(root)
  if results:
    rec = next(iter(results.values()))["recipe"]
    print(f"\nDDPM parity on CIFAR-10: U-Net {tuple(rec['block_out_channels'])} x "
          f"{rec['layers_per_block']}, attention at {rec['attention_resolution']}, batch "
          f"{rec['batch_size']}, {os.cpu_count()} CPU cores; FID of DDIM-{FLAGS.sample_steps} "
          f"EMA samples (jgen's sampler for both)\n")
    print(table(results))


if __name__ == "__main__":
  app.run(main)
