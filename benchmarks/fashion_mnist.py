"""Fashion-MNIST: trains DCGAN, WGAN-GP, VAE, Glow and PixelCNN for a CPU budget each and scores them.

  python benchmarks/fashion_mnist.py --root /tmp/fmnist                 # train, eval, table
  python benchmarks/fashion_mnist.py --root /tmp/fmnist --models glow --stage eval
  python benchmarks/fashion_mnist.py --root /tmp/fmnist --stage table   # re-print the table

Reads the full Fashion-MNIST (60,000 train + 10,000 test idx files) from Debian's
`dataset-fashion-mnist` package (`apt install dataset-fashion-mnist`:
/usr/share/datasets/fashion-mnist, or `--data DIR`). Each model is its MNIST config
(`experiments/.../mnist.py`, `pixelcnn_mnist.py`) with `data.source=idx:DIR` and a number of
steps that fits the budget of the issue (at most 15 minutes of training on 2 CPU cores, compile
included; `--steps model=N` overrides). Then `--mode=eval` of each run (`jgen.train.inference`):

* FID of `--num_samples` EMA samples with the FID Inception (TF-2015 weights, pool3; the 28x28
  or 32x32 grey images repeated to 3 channels and resized to 299x299 by the Inception's own
  bilinear resize, as for MNIST in the GAN literature) against the statistics of the first
  `--num_reference` Fashion-MNIST training images (computed once and cached by
  `jgen.metrics.fid.reference_stats`). FID from 5,000 samples against 10,000 reference images
  is biased upward against the usual 50k-vs-60k figure: compare rows of this table with each
  other, and with published figures only loosely.
* Test bits/dim of the likelihood models on the 10,000 test images: Glow (exact, 8-bit
  dequantized), PixelCNN (exact, discretized logistic mixture, class-conditional and with the
  label summed out), the VAE's IWAE bound (a continuous Bernoulli-free Gaussian decoder in jgen:
  `n_bits=0`, not comparable to the discrete figures, so printed apart).

Writes `ROOT/<model>` work directories and `ROOT/results.json`, prints a markdown table with
each model's steps, training wall time and the figures, and with `--images DIR` copies each
run's last sample grid there (the grids of docs/results.md: `--images docs/images`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags

from jgen.train.preemption import EXIT_PREEMPTED

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/fmnist", "Parent of the work directories.")
flags.DEFINE_string("data", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST idx files.")
flags.DEFINE_list("models", None, "Models to run (default: all).")
flags.DEFINE_enum("stage", "all", ["all", "train", "eval", "table"], "What to do.")
flags.DEFINE_list("steps", [], "model=N overrides of the training steps.")
flags.DEFINE_integer("num_samples", 5000, "Samples per FID.")
flags.DEFINE_integer("num_reference", 10000, "Training images of the FID statistics.")
flags.DEFINE_float("budget_min", 15.0, "Training wall-time budget per model, in minutes.")
flags.DEFINE_string("images", None, "If set, copy each run's final sample grid (EMA samples the "
                    "loop writes at its last step) to DIR/fashion_mnist_<model>.png.")

# (config, steps, overrides). Steps: about what 15 minutes of 2 CPU cores allow (1.25 s/step for
# DCGAN, about 1.1 s/step for the VAE, 0.43 s/step for Glow in short probes); --budget_min stops
# a slower run at the budget, and the table reports the step it reached.
MODELS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "dcgan": ("experiments/gan/mnist.py:method=dcgan", 700,
              ("model.g_features=32", "model.d_features=32")),
    "wgan_gp": ("experiments/gan/mnist.py:method=wgan_gp", 560,
                ("model.g_features=32", "model.d_features=32")),
    "vae": ("experiments/autoencoder/mnist.py:method=vae", 800, ("train.eval_batches=78",)),
    "glow": ("experiments/flow/mnist.py:method=glow", 2000,
             ("model.hidden=64", "train.eval_batches=156")),
    "pixelcnn": ("experiments/autoregressive/pixelcnn_mnist.py", 2500,
                 ("train.eval_batches=156",)),
}
# What each model's --mode=eval reports as test bits/dim.
BPD_KEYS = {"glow": ("bpd",), "pixelcnn": ("bpd", "bpd_marginal"), "vae": ("iwae_bpd", "bpd")}


def _steps(name: str) -> int:
  for item in FLAGS.steps:
    key, _, value = item.partition("=")
    if key == name:
      return int(value)
  return MODELS[name][1]


def _launch(name: str, mode: str) -> float:
  """Runs launch.py; a training run still going after --budget_min gets SIGTERM (the loop then
  finishes its step, saves it and exits with code 75), so no run trains longer than the budget."""
  config, _, extra = MODELS[name]
  steps = _steps(name)
  overrides = [f"data.source=idx:{FLAGS.data}", f"train.num_steps={steps}",
               f"train.checkpoint_every={steps}", "train.eval_every=0", "train.sample_every=0",
               "train.log_every=10", "eval.metrics=fid", "eval.features=inception",
               f"eval.num_samples={FLAGS.num_samples}",
               f"eval.reference_max_images={FLAGS.num_reference}", *extra]
  cmd = [sys.executable, str(REPO / "launch.py"), f"--config={REPO / config}",
         f"--workdir={os.path.join(FLAGS.root, name)}", f"--mode={mode}",
         *(f"--config.{o}" for o in overrides)]
  print("+", " ".join(cmd), flush=True)
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO)
  try:
    rc = proc.wait(timeout=FLAGS.budget_min * 60 if mode == "train" else None)
  except subprocess.TimeoutExpired:
    print(f"{name}: {FLAGS.budget_min} minutes reached: SIGTERM", flush=True)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait()
  if rc not in (0, EXIT_PREEMPTED):
    raise subprocess.CalledProcessError(rc, cmd)
  return time.perf_counter() - t0


def _results_path() -> str:
  return os.path.join(FLAGS.root, "results.json")


def _load_results() -> dict:
  path = _results_path()
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {}


def _save(results: dict) -> None:
  os.makedirs(FLAGS.root, exist_ok=True)
  with open(_results_path() + ".tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(_results_path() + ".tmp", _results_path())


def _latest_eval(workdir: str) -> dict:
  files = sorted(pathlib.Path(workdir).glob("eval_step*.json"),
                 key=lambda p: int(p.stem.removeprefix("eval_step")))
  if not files:
    raise FileNotFoundError(f"no eval_step*.json in {workdir}: run --stage eval first")
  return json.loads(files[-1].read_text())


def _checkpoint_step(workdir: str) -> int:
  """The step of the run's latest checkpoint (orbax step directories)."""
  steps = [int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir() if p.name.isdigit()]
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  return max(steps)


def _fmt(value, digits: int = 2) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> str:
  rows = ["| model | config | steps | train wall (min) | FID | test bits/dim | eval wall (min) |",
          "|---|---|---|---|---|---|---|"]
  for name in MODELS:
    r = results.get(name)
    if r is None:
      continue
    ev = r.get("eval", {})
    fid = ev.get("sample_metrics", {}).get("fid")
    bpd = ", ".join(f"{k} {ev[k]:.3f}" for k in BPD_KEYS.get(name, ()) if k in ev) or "-"
    train_min = r.get("train_s", 0) / 60 if "train_s" in r else None
    eval_min = r.get("eval_s", 0) / 60 if "eval_s" in r else None
    rows.append(f"| {name} | `{MODELS[name][0]}` | {r.get('steps', '-')} | {_fmt(train_min, 1)} "
                f"| {_fmt(fid, 1)} | {bpd} | {_fmt(eval_min, 1)} |")
  return "\n".join(rows)


def main(argv):
  del argv
  names = FLAGS.models or list(MODELS)
  unknown = sorted(set(names) - set(MODELS))
  if unknown:
    raise app.UsageError(f"unknown --models {unknown}; choose from {sorted(MODELS)}")
  if FLAGS.stage != "table" and not os.path.isdir(FLAGS.data):
    raise app.UsageError(f"no Fashion-MNIST at {FLAGS.data}: `apt install dataset-fashion-mnist` "
                         "(Debian) or pass --data DIR with the four idx .gz files")
  results = _load_results()
  for name in names:
    r = results.setdefault(name, {})
    if FLAGS.stage in ("all", "train"):
      r["train_s"] = _launch(name, "train")
      r["steps"] = _checkpoint_step(os.path.join(FLAGS.root, name))
      _save(results)
    if FLAGS.stage in ("all", "eval"):
      r["eval_s"] = _launch(name, "eval")
      r["eval"] = _latest_eval(os.path.join(FLAGS.root, name))
      r["num_samples"], r["num_reference"] = FLAGS.num_samples, FLAGS.num_reference
      _save(results)
  print(f"\nFashion-MNIST, FID of {FLAGS.num_samples} EMA samples vs the first "
        f"{FLAGS.num_reference} training images (FID Inception)\n")
  print(table(results))
  if FLAGS.images:
    os.makedirs(FLAGS.images, exist_ok=True)
    for name in names:
      grids = sorted(pathlib.Path(FLAGS.root, name, "samples").glob("step_*.png"))
      if grids:
        shutil.copyfile(grids[-1], os.path.join(FLAGS.images, f"fashion_mnist_{name}.png"))


if __name__ == "__main__":
  app.run(main)
