"""Fashion-MNIST: DCGAN, WGAN-GP, VAE, Glow and PixelCNN, each trained for a CPU budget and scored.

  python benchmarks/fashion_mnist.py --root /tmp/fmnist                 # train, eval, table
  python benchmarks/fashion_mnist.py --root /tmp/fmnist --models glow --stage eval
  python benchmarks/fashion_mnist.py --root /tmp/fmnist --stage table   # re-print the table
  python benchmarks/fashion_mnist.py --root /tmp/fmnist_full --full --num_samples 10000  # GPU

Reads the full Fashion-MNIST (60,000 train + 10,000 test idx files) from Debian's
`dataset-fashion-mnist` package (`apt install dataset-fashion-mnist`:
/usr/share/datasets/fashion-mnist, or `--data DIR`). Each model is its MNIST config
(`experiments/.../mnist.py`, `pixelcnn_mnist.py`) with `data.source=idx:DIR` and a number of
steps that fits the budget of the issue (at most 15 minutes of training on 2 CPU cores, compile
included; `--steps model=N` overrides). Then `--mode=eval` of each run (`jgen.train.inference`):

* FID of `--num_samples` EMA samples with the FID Inception (TF-2015 weights, pool3; grey
  images repeated to 3 channels and resized to 299x299 by the Inception's own bilinear resize)
  against the statistics of the 10,000 Fashion-MNIST test images (`--reference_split`,
  `--num_reference`; computed once and cached by `jgen.metrics.fid.reference_stats`): the
  reference set of Lucic et al. 2018, "Are GANs Created Equal?", whose Table 2 gives the best
  Fashion-MNIST FID over a large hyperparameter search (10,000 samples). 2,000 samples
  bias FID upward against their 10,000: compare rows of this table with each
  other, and with theirs loosely.
* Test bits/dim of the likelihood models on the 10,000 test images: Glow (exact, 8-bit
  dequantized), PixelCNN (exact, discretized logistic mixture, class-conditional and with the
  label summed out), the VAE's importance-weighted bound (`iwae_bpd`; its decoder is the
  discretized logistic over 256 levels, `vae.likelihood=logistic`, so the bound is on the same
  8-bit likelihood; `bpd` is the ELBO's).

Writes `ROOT/<model>` work directories and `ROOT/results.json`, prints a markdown table with
each model's steps, training wall time and the figures, and with `--images DIR` copies each
run's newest sample grid there (`--mode=sample` of the evaluated checkpoint; the grids of
docs/results.md: `--images docs/images`).
"""

from __future__ import annotations

import os

from absl import app, flags

import budget_runs

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/fmnist", "Parent of the work directories.")
flags.DEFINE_string("data", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST idx files.")
flags.DEFINE_list("models", None, "Models to run (default: all).")
flags.DEFINE_enum("stage", "all", ["all", "train", "eval", "table"], "What to do.")
flags.DEFINE_list("steps", [], "model=N overrides of the training steps.")
flags.DEFINE_bool("retrain", False, "Train again a model that results.json records as trained, "
                  "from scratch (its old work directory is renamed, not resumed; default: "
                  "skip what it records, so an interrupted table resumes; --stage eval always "
                  "evaluates).")
flags.DEFINE_integer("num_samples", 2000, "Samples per FID.")
flags.DEFINE_enum("reference_split", "test", ["test", "train"], "Split of the FID statistics "
                  "(test: the 10,000 test images, the reference set of Lucic et al. 2018).")
flags.DEFINE_integer("num_reference", None, "Images of the FID statistics: a seeded random "
                     "subset of the split (default: all of it).")
flags.DEFINE_float("budget_min", 15.0, "Training wall-time budget per model, in minutes.")
flags.DEFINE_bool("full", False, "Each config's own network size and steps, no time budget "
                  "(a GPU run; with --num_samples 10000 the protocol of Lucic et al.).")
flags.DEFINE_string("images", None, "If set, copy each run's final sample grid (EMA samples the "
                    "loop writes at its last step) to DIR/fashion_mnist_<model>.png.")

# (config, CPU steps, CPU-only overrides, overrides). CPU steps: about what the budget allows on
# 2 cores (1.25 s/step for DCGAN, about 1.1 s/step for the VAE, 0.23 s/step for Glow in its
# 1,600-step run, 0.8 s/step for the PixelCNN's 3x5 kernels in its run); --budget_min stops a slower
# run, and the table reports the step it reached. With --full the CPU-only overrides and steps
# are dropped: each config's own size and steps.
MODELS: dict[str, tuple[str, int, tuple[str, ...], tuple[str, ...]]] = {
    "dcgan": ("experiments/gan/mnist.py:method=dcgan", 700,
              ("model.g_features=32", "model.d_features=32"), ()),
    "wgan_gp": ("experiments/gan/mnist.py:method=wgan_gp", 1000,
                ("model.g_features=32", "model.d_features=32"), ()),
    "vae": ("experiments/autoencoder/mnist.py:method=vae", 650, (),
            ("vae.likelihood=logistic", "train.eval_batches=78")),
    "glow": ("experiments/flow/mnist.py:method=glow", 3500, ("model.hidden=64",),
             ("train.eval_batches=156",)),
    "pixelcnn": ("experiments/autoregressive/pixelcnn_mnist.py", 900, (),
                 ("train.eval_batches=156",)),
}
SAMPLES_CAP = {"pixelcnn": 0}
# What each model's --mode=eval reports as test bits/dim.
BPD_KEYS = {"glow": ("bpd",), "pixelcnn": ("bpd", "bpd_marginal"), "vae": ("iwae_bpd", "bpd")}


def _steps(name: str) -> int:
  for item in FLAGS.steps:
    key, _, value = item.partition("=")
    if key == name:
      return int(value)
  return MODELS[name][1]


def _num_samples(name: str) -> int:
  """Samples of a model's FID (0: none). PixelCNN draws one pixel per network call (784 calls
  per image batch): on 2 cores its FID samples would take longer than its training, so on CPU
  it is scored by its test bits/dim alone (and its grid)."""
  if FLAGS.full:
    return FLAGS.num_samples
  return min(FLAGS.num_samples, SAMPLES_CAP.get(name, FLAGS.num_samples))


def _launch(name: str, mode: str) -> float:
  """Runs launch.py for a model (`budget_runs.launch`; training is stopped at --budget_min)."""
  config, _, cpu_extra, extra = MODELS[name]
  if FLAGS.full:
    sized = []
  else:
    steps = _steps(name)
    sized = [f"train.num_steps={steps}", f"train.checkpoint_every={steps}", *cpu_extra]
  num = _num_samples(name)
  subset = [] if FLAGS.num_reference is None else [
      f"eval.reference_max_images={FLAGS.num_reference}"]
  fid = ["eval.metrics=fid", "eval.features=inception", f"eval.num_samples={num}",
         f"eval.reference_split={FLAGS.reference_split}", *subset] if num else []
  overrides = [f"data.source=idx:{FLAGS.data}", *sized, "train.eval_every=0",
               "train.sample_every=0", "train.log_every=10", *fid, *extra]
  budget = FLAGS.budget_min * 60 if mode == "train" and not FLAGS.full else None
  return budget_runs.launch(config, os.path.join(FLAGS.root, name), mode, overrides,
                            budget_s=budget)


def table(results: dict) -> str:
  rows = ["| model | config | steps | train wall (min) | FID (samples) | test bits/dim "
          "| eval wall (min) |",
          "|---|---|---|---|---|---|---|"]
  for name in MODELS:
    r = results.get(name)
    if not r:
      continue
    ev = r.get("eval", {})
    fid = ev.get("sample_metrics", {}).get("fid")
    bpd = ", ".join(f"{k} {ev[k]:.3f}" for k in BPD_KEYS.get(name, ()) if k in ev) or "-"
    train_min = r.get("train_s", 0) / 60 if "train_s" in r else None
    eval_min = r.get("eval_s", 0) / 60 if "eval_s" in r else None
    fmt = budget_runs.fmt
    rows.append(f"| {name} | `{MODELS[name][0]}` | {r.get('steps', '-')} | {fmt(train_min, 1)} "
                f"| {fmt(fid, 1)} ({r.get('num_samples', '-')}) | {bpd} | {fmt(eval_min, 1)} |")
  return "\n".join(rows)


def main(argv):
  del argv
  try:
    names = budget_runs.selected(FLAGS.models, list(MODELS))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.stage != "table" and not os.path.isdir(FLAGS.data):
    raise app.UsageError(f"no Fashion-MNIST at {FLAGS.data}: `apt install dataset-fashion-mnist` "
                         "(Debian) or pass --data DIR with the four idx .gz files")
  results = budget_runs.Results(os.path.join(FLAGS.root, "results.json"))
  for name in names:
    r = results.record(name)
    workdir = os.path.join(FLAGS.root, name)
    trained = False
    if FLAGS.stage in ("all", "train") and ("train_s" not in r or FLAGS.retrain):
      if FLAGS.retrain:
        budget_runs.set_aside(workdir)  # else launch.py would resume its last checkpoint
      r["train_s"] = _launch(name, "train")
      r["steps"] = budget_runs.checkpoint_steps(workdir)[-1]
      results.save()
      trained = True
    if FLAGS.stage == "eval" or (FLAGS.stage == "all" and ("eval" not in r or trained)):
      r["eval_s"] = _launch(name, "eval")
      _launch(name, "sample")  # the grid of the evaluated checkpoint (a stopped run wrote none)
      r["eval"] = budget_runs.eval_record(workdir)
      r["num_samples"], r["num_reference"] = _num_samples(name), FLAGS.num_reference
      results.save()
  print(f"\nFashion-MNIST, FID of {FLAGS.num_samples} EMA samples vs the "
        f"{FLAGS.num_reference or 'all'} {FLAGS.reference_split} images (FID Inception; "
        "PixelCNN: none on CPU)\n")
  print(table(results.data))
  if FLAGS.images:
    os.makedirs(FLAGS.images, exist_ok=True)
    for name in names:
      budget_runs.copy_newest_grid(os.path.join(FLAGS.root, name),
                                   os.path.join(FLAGS.images, f"fashion_mnist_{name}.png"))


if __name__ == "__main__":
  app.run(main)
