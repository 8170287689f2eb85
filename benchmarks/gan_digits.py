"""Prints the evidence table of trained digits generators, judged by the digits domain classifier.

  python benchmarks/gan_digits.py \
      --run experiments/gan/dcgan_digits.py=/tmp/dcgan_digits \
      --run experiments/gan/cgan_digits.py=/tmp/cgan_digits \
      --run experiments/gan/wgan_digits.py=/tmp/wgan_digits \
      --run experiments/gan/wgan_gp_digits.py=/tmp/wgan_gp_digits

Each `--run CONFIG[:VARIANT]=WORKDIR[@KEY=VALUE;...]` restores the latest checkpoint of a run
(GANs, DDPMs: any method of the loop) and draws `--num` samples with its EMA parameters
(`--weights=trained`: with the trained ones, to see what the EMA adds or costs); a
`Conditional` method is asked for the classes 0..9 in turn. `@...` overrides config fields for
sampling, e.g. a classifier-free guidance sweep of a conditional DDPM, with a plot:

  python benchmarks/gan_digits.py --plot /tmp/cfg.png --plot_key sample.guidance_scale \
      --run experiments/ddpm/cond_digits.py=/tmp/cond@sample.guidance_scale=0 \
      --run experiments/ddpm/cond_digits.py=/tmp/cond@sample.guidance_scale=3

or classifier guidance of an unconditional one by a `noisy_classifier_digits` run:

  python benchmarks/gan_digits.py --plot /tmp/clf.png --plot_key sample.classifier_scale \
      --run \
      "experiments/ddpm/digits.py=/tmp/ddpm@sample.classifier.workdir='/tmp/clf';sample.classifier_scale=3"

The samples go through `jgen.metrics.domain`'s digits classifier (a small conv net jgen trains
on the digits train split; its held-out accuracy is printed), which gives:

* confidence: the mean top-class softmax probability (a recognisable digit scores near 1);
* classes covered: classes that receive at least half their uniform share (5%) of the
  classifier's predictions, and the largest share any one class gets (mode collapse shows up
  as few classes and a large share);
* accuracy (conditional generators only): the share of samples classified as the asked class;
* precision and recall (Kynkaanniemi et al. 2019, k = 3): the share of samples inside the
  k-NN manifold of the train digits' features (fidelity), and of train digits inside the
  samples' manifold (diversity);
* domain FID: the Frechet distance between the classifier's features of the samples and of the
  digits train split (1,500 images). **Not Inception FID**: comparable only to other figures of
  the same classifier.

`--plot PATH --plot_key KEY` draws precision, recall and accuracy against the value each run
sets for KEY (matplotlib: `pip install -e ".[plot]"`).

With `--reconstruct`, an autoencoder run (VQ-VAE, VQ-GAN) is scored on its reconstructions of
the held-out digits instead (asked class: the true label): the ceiling of any prior over its
codes, e.g. `--reconstruct --run experiments/autoencoder/vqvae_digits.py=/tmp/vqvae_digits`.

`--ppl N` adds perceptual path length (`jgen.metrics.ppl`, end sampling, N latent pairs) of
methods with latent paths (`PathLengths`: W space for StyleGAN2, z for the other GANs), with
the classifier's squared feature distance in place of LPIPS. `--reference=held_out` scores
FID and precision/recall against the held-out digits (for runs trained on a subset of the
train split, `data.train_examples`; the real row then compares the held-out digits with
themselves).

The first row scores the 297 real held-out digits the same way. FID is biased upward by small
samples, so the last column computes every run's FID from its first 297 samples too: that
column compares generators with real data at the same sample size.
"""

from __future__ import annotations

import ast
import time

import jax
import numpy as np
from absl import app, flags

from jgen.metrics import domain
from jgen.metrics import feature_net as fnet
from jgen.metrics import fid as fid_lib
from jgen.metrics import precision_recall as pr_lib
from jgen.train.inference import restore_for_inference
from jgen.train.inputs import load_data
from jgen.train.sampling import jit_sampler
from jgen.metrics import ppl as ppl_lib
from jgen.train.method import Conditional, PathLengths, Reconstructs
from run_specs import load_config, parse_run

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "CONFIG[:VARIANT]=WORKDIR of a trained run.")
flags.DEFINE_integer("num", 1000, "Samples per run.")
flags.DEFINE_integer("batch", 100, "Samples per jitted generator call.")
flags.DEFINE_integer("seed", 0, "Seed of the latent noise.")
flags.DEFINE_float("covered_share", 0.05, "Share of predictions that makes a class covered.")
flags.DEFINE_integer("pr_k", 3, "k of the k-NN manifolds of precision and recall.")
flags.DEFINE_bool("reconstruct", False, "Score autoencoders' (Reconstructs methods') "
                  "reconstructions of the held-out digits instead of samples: the ceiling of a "
                  "prior over their latents (asked class = the true label).")
flags.DEFINE_integer("ppl", 0, "Latent pairs of a perceptual path length column (0: none) for "
                     "methods with latent paths (GANs: W space for StyleGAN2, z otherwise), "
                     "the domain classifier's squared feature distance (not LPIPS).")
flags.DEFINE_enum("reference", "train", ["train", "held_out"], "The real digits of FID and "
                  "precision/recall: the train split, or the held-out split (small-data runs "
                  "trained on a subset of train: `data.train_examples`).")
flags.DEFINE_enum("weights", "ema", ["ema", "trained"], "Sample with the run's EMA parameters "
                  "(what sampling uses) or with the trained ones (the EMA left out): a lagging "
                  "EMA shows up as the trained weights scoring better.")
flags.DEFINE_string("plot", "", "Write a PNG of precision / recall / accuracy against "
                    "--plot_key to this path (needs the plot extra: matplotlib).")
flags.DEFINE_string("plot_key", "", "The swept override of the plot's x axis, e.g. "
                    "sample.guidance_scale.")


def split_images(config, split: str) -> np.ndarray:
  """uint8 images of a split of the run's data source."""
  source = load_data(config, split=split)
  return np.stack([source[i]["image"] for i in range(len(source))]).astype(np.uint8)


def class_scores(outputs: dict, asked: np.ndarray | None, covered_share: float) -> dict:
  """Confidence, class coverage and (with `asked` labels) accuracy of classifier outputs."""
  logits = outputs["logits"].astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  predicted = probs.argmax(-1)
  shares = np.bincount(predicted, minlength=probs.shape[-1]) / len(predicted)
  row = {"confidence": float(probs.max(-1).mean()),
         "classes": int(np.sum(shares >= covered_share)),
         "max_share": float(shares.max())}
  if asked is not None:
    row["accuracy"] = float(np.mean(predicted == asked))
  return row


def generate(method, mesh, state, num: int, batch: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray, float]:
  """uint8 samples (EMA parameters), the labels asked for (None if unconditional) and the
  sampling rate in images/s, through the loop's jitted sampler (which also hands a guiding
  classifier to the sampler). The rate times every call after one warm-up call of each batch
  shape (compiles excluded), images decoded and on the host."""
  conditional = isinstance(method, Conditional)
  labels = (np.arange(num) % method.num_classes).astype(np.int32) if conditional else None
  fn = jit_sampler(method, mesh)

  def call(i, n):
    rng = jax.random.fold_in(jax.random.key(seed), i)
    return np.asarray(fn(state, rng, labels[i:i + n] if conditional else n))

  starts = list(range(0, num, batch))
  for n in sorted({min(batch, num - i) for i in starts}):
    call(0, n)  # compiles
  t0 = time.perf_counter()
  images = [call(i, min(batch, num - i)) for i in starts]
  rate = num / (time.perf_counter() - t0)
  return fnet.to_uint8(np.concatenate(images)), labels, rate


def override_value(overrides: str, key: str) -> float | None:
  """The number that `KEY=VALUE;...` sets for `key` (None if it does not set it)."""
  for item in filter(None, overrides.split(";")):
    k, _, v = item.partition("=")
    if k == key:
      return float(ast.literal_eval(v))
  return None


def plot_rows(rows: list[dict], key: str, path: str) -> str:
  """Writes precision, recall and asked-class accuracy against `key` (one PNG) and returns
  `path`. Needs matplotlib (`pip install -e ".[plot]"`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  points = sorted((r["x"], r) for r in rows if r.get("x") is not None)
  if not points:
    raise app.UsageError(f"no --run sets {key}=...; --plot_key must be a swept override")
  xs = [x for x, _ in points]
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
  for name, label in (("precision", "precision"), ("recall", "recall"),
                      ("accuracy", "accuracy (asked class)")):
    if all(name in r for _, r in points):
      ax.plot(xs, [r[name] for _, r in points], marker="o", label=label)
  ax.set_xlabel(key)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  ax.set_title(f"digits: {points[0][1]['spec']}, {FLAGS.num} samples", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def score(runs: list[str]) -> tuple[dict, list[dict], int, int]:
  """`(reference, rows, num_train, num_real)`: the real held-out digits' scores and one row of
  scores per `CONFIG[:VARIANT]=WORKDIR[@OVERRIDES]` run (the module docstring's columns)."""
  net = domain.load_feature_net("digits")
  rows, train, train_stats, reference, num_real = [], None, None, None, 0
  for run in runs:
    spec, workdir, overrides = parse_run(run)
    config = load_config(spec, overrides)
    if train_stats is None:
      ref_split = config.data.split if FLAGS.reference == "train" else config.data.eval_split
      train = net(split_images(config, ref_split))["features"]
      train_stats = fid_lib.GaussianStats(net.feature_dim).update(train)
      real = net(split_images(config, config.data.eval_split))
      test_labels = np.asarray([load_data(config, split=config.data.eval_split)[i]["label"]
                                for i in range(len(real["features"]))])
      num_real = len(real["features"])
      reference = {"run": "real held-out digits", "steps": "-",
                   **class_scores(real, test_labels, FLAGS.covered_share),
                   **pr_lib.prdc(train, real["features"], k=FLAGS.pr_k),
                   "fid": float("nan"),
                   "fid_small": fid_lib.fid_from_stats(
                       fid_lib.GaussianStats(net.feature_dim).update(real["features"]),
                       train_stats)}
    method, mesh, state = restore_for_inference(config, workdir)
    if FLAGS.weights == "trained":
      state = state.replace(emas={})  # `ema_params` is then the trained parameters
    rate = float("nan")
    if FLAGS.reconstruct:
      if not isinstance(method, Reconstructs):
        raise app.UsageError(f"--reconstruct: {spec} ({config.method}) is not an autoencoder")
      held_out = split_images(config, config.data.eval_split).astype(np.float32) / 127.5 - 1
      recon = jax.jit(method.reconstruct_images)(state, held_out)
      images, asked = fnet.to_uint8(np.asarray(recon)), test_labels
      overrides = "reconstructions of the held-out split" + (f"; {overrides}" if overrides else "")
    else:
      images, asked, rate = generate(method, mesh, state, FLAGS.num, FLAGS.batch, FLAGS.seed)
    path_length = float("nan")
    if FLAGS.ppl and isinstance(method, PathLengths):
      distance = ppl_lib.feature_distance(ppl_lib.float_features_fn(net))
      path_length = ppl_lib.perceptual_path_length(
          distance_fn=distance, rng=jax.random.key(FLAGS.seed), num_samples=FLAGS.ppl,
          sampling="end", batch_size=FLAGS.batch, **method.path_length_fns(state))["ppl"]
    out = net(images)
    stats = fid_lib.GaussianStats(net.feature_dim).update(out["features"])
    small = fid_lib.GaussianStats(net.feature_dim).update(out["features"][:num_real])
    rows.append({"run": spec + (f" ({overrides})" if overrides else ""), "spec": spec,
                 "x": override_value(overrides, FLAGS.plot_key) if FLAGS.plot_key else None,
                 "steps": int(jax.device_get(state.step)),
                 **class_scores(out, asked, FLAGS.covered_share),
                 **pr_lib.prdc(train, out["features"], k=FLAGS.pr_k),
                 "fid": fid_lib.fid_from_stats(stats, train_stats),
                 "fid_small": fid_lib.fid_from_stats(small, train_stats), "rate": rate,
                 "ppl": path_length})
  return reference, rows, len(train), num_real


def main(argv):
  del argv
  if not FLAGS.run:
    raise app.UsageError("give at least one --run CONFIG=WORKDIR")
  reference, rows, num_train, num_real = score(FLAGS.run)
  net = domain.load_feature_net("digits")
  print(f"domain classifier: {net!r}; {FLAGS.num} samples per run, seed {FLAGS.seed}; "
        f"a class is covered at >= {100 * FLAGS.covered_share:.0f}% of predictions; "
        f"precision / recall (k = {FLAGS.pr_k}) and FID against the {num_train} "
        f"{FLAGS.reference.replace('_', '-')} digits" + (
            f"; PPL (end sampling) of {FLAGS.ppl} pairs" if FLAGS.ppl else ""))
  ppl_head, ppl_rule = (" PPL |", "---|") if FLAGS.ppl else ("", "")
  print(f"| run | steps | confidence | classes covered | max class share | accuracy (asked class)"
        f" | precision | recall | domain FID ({FLAGS.num}) | domain FID ({num_real}) |{ppl_head}"
        f" samples/s |")
  print("|---|---|---|---|---|---|---|---|---|---|" + ppl_rule + "---|")
  for r in [reference, *rows]:
    acc = f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "-"
    print(f"| {r['run']} | {r['steps']} | {r['confidence']:.3f} | {r['classes']}/10 | "
          f"{100 * r['max_share']:.1f}% | {acc} | {r['precision']:.3f} | {r['recall']:.3f} | "
          f"{r['fid']:.2f} | {r['fid_small']:.2f} |"
          + (f" {r.get('ppl', float('nan')):.1f} |" if FLAGS.ppl else "")
          + f" {r.get('rate', float('nan')):.1f} |")
  if FLAGS.plot:
    print(f"wrote {plot_rows(rows, FLAGS.plot_key, FLAGS.plot)}")


if __name__ == "__main__":
  app.run(main)
