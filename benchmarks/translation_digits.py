"""Prints the evidence table of trained image-to-image runs on digits, next to trivial baselines.

  python benchmarks/translation_digits.py \
      --run experiments/translation/pix2pix_digits.py=/tmp/p2p \
      --run experiments/translation/cyclegan_digits.py=/tmp/cyclegan \
      --run experiments/translation/stargan_digits.py=/tmp/stargan

Each `--run CONFIG[:VARIANT]=WORKDIR` restores the run's latest checkpoint and translates every
held-out source (`jgen.train.translations`, EMA generator), scored by
`jgen.metrics.translation.translation_metrics`: L1 and PSNR against the known targets, content
preservation and domain success judged by a (domain, digit) classifier trained on real held-out
images (cross-fitted: it never judges an output whose real counterpart it trained on; its own
accuracy on real targets is the ceiling column), and domain FID of the outputs against the real
targets (digits domain-classifier features; not Inception FID).

Two baselines per run, scored the same way:

* identity: the output is the source itself (what doing nothing scores);
* nearest training target: the output is the target of the training pair whose source is
  nearest (L2) to the held-out source. It needs paired training data: rows of runs whose
  training split has no pairs (CycleGAN) say "-".
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jgen import data as jdata
from jgen.metrics import networks
from jgen.metrics import translation as tm
from jgen.train import translations
from jgen.train.inference import restore_for_inference
from run_specs import load_config, parse_run

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "CONFIG[:VARIANT]=WORKDIR[@KEY=VALUE;...] of a trained run "
                          "(overrides as in gan_digits.py).")
flags.DEFINE_integer("judge_steps", 600, "Adam steps of each half's judge.")
flags.DEFINE_bool("per_domain", False, "Also print content preserved and domain success per "
                  "target domain of every trained run (StarGAN's 2^K domains).")


def nearest_training_targets(method, config, source: np.ndarray) -> np.ndarray | None:
  """[N, D, ...] targets of the training pairs nearest to each source (None without pairs)."""
  d = config.data
  src = jdata.load_source(d.source, split=d.split, data_dir=d.data_dir, image_size=d.image_size,
                          channels=d.channels, resize=d.resize, seed=config.seed)
  train = method.translation_inputs(
      {k: jnp.asarray(v) for k, v in jdata.read_batch(src, range(len(src))).items()})
  if "target" not in train:
    return None
  a = np.asarray(train["source"]).reshape(len(train["source"]), -1)
  q = source.reshape(len(source), -1)
  dist = (q ** 2).sum(1)[:, None] - 2 * q @ a.T + (a ** 2).sum(1)[None]
  return np.asarray(train["target"])[np.argmin(dist, axis=1)]


def main(argv):
  del argv
  if not FLAGS.run:
    raise app.UsageError("give at least one --run CONFIG=WORKDIR")
  net = networks.load("domain:digits")
  rows, per_domain = [], []
  for run in FLAGS.run:
    spec, workdir, overrides = parse_run(run)
    config = load_config(spec, overrides)
    method, mesh, state = restore_for_inference(config, workdir)
    inputs = translations.held_out_inputs(method, config, None)
    source, target, labels = inputs["source"], inputs.get("target"), inputs.get("label")
    outputs = translations.translate_all(method, state, mesh, source,
                                         batch_size=config.sample.batch_size, seed=0)
    name = os.path.splitext(os.path.basename(spec))[0]
    score = lambda out: tm.translation_metrics(source, out, target, labels, feature_net=net,
                                               judge_steps=FLAGS.judge_steps)
    trained = score(outputs)
    rows.append((f"{name} (step {int(state.step)}, {len(source)} held-out)", trained))
    if FLAGS.per_domain and "content/0" in trained:
      per_domain += [(f"{name}{f' ({overrides})' if overrides else ''}", d_name,
                      trained[f"content/{d}"], trained[f"domain_success/{d}"])
                     for d, d_name in enumerate(getattr(method, "translation_names", ()))]
    d = outputs.shape[1]
    if source.shape[-1] == outputs.shape[-1]:
      rows.append((f"{name}: identity baseline", score(np.repeat(source[:, None], d, axis=1))))
    nearest = nearest_training_targets(method, config, source)
    rows.append((f"{name}: nearest training target",
                 None if nearest is None else score(nearest)))
  print("| run | L1 (0..1) | PSNR (dB) | content preserved | domain success | judge accuracy "
        "(real) | domain FID |")
  print("|---|---|---|---|---|---|---|")
  for label, m in rows:
    if m is None:
      print(f"| {label} | - | - | - | - | - | - |")
      continue
    print(f"| {label} | {m['l1']:.4f} | {m['psnr']:.2f} | {100 * m['content']:.1f}% | "
          f"{100 * m['domain_success']:.1f}% | {100 * m['judge_accuracy']:.1f}% | "
          f"{m['fid']:.2f} |")
  if per_domain:
    print("\n| run | target domain | content preserved | domain success |")
    print("|---|---|---|---|")
    for run_name, d_name, content, success in per_domain:
      print(f"| {run_name} | {d_name} | {100 * content:.1f}% | {100 * success:.1f}% |")


if __name__ == "__main__":
  app.run(main)
