"""The mode-collapse check: GAN, WGAN and WGAN-GP on 8 Gaussians on a ring and a 5x5 grid.

  python benchmarks/gan_toy.py                      # all methods, both datasets, seed 0
  python benchmarks/gan_toy.py --methods wgan_gp --datasets ring --steps 3000 --seed 1

MLP generator and discriminator (3 x 256 ReLU, z in R^2), batch 256, the papers' toy optimizers
(`jgen.gan.toy.TOY_METHODS`); each run is one jitted `lax.scan`. Prints, per run: modes covered
(>= min_count of 2,500 samples within 3 std of the mode), the share of high-quality samples
(within 3 std of the nearest mode) and the wall time including compilation. `--plot` writes a
scatter of samples over the modes.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from jgen.gan import toy

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", list(toy.TOY_METHODS), "Methods of jgen.gan.toy.TOY_METHODS.")
flags.DEFINE_list("datasets", ["ring", "grid"], "ring and/or grid.")
flags.DEFINE_integer("steps", 2000, "Generator steps.")
flags.DEFINE_integer("seed", 0, "Seed of initialization, data and noise.")
flags.DEFINE_float("ring_std", 0.05, "Standard deviation of each ring mode.")
flags.DEFINE_float("grid_std", 0.05, "Standard deviation of each grid mode.")
flags.DEFINE_integer("min_count", 20, "High-quality samples (of 2,500) that cover a mode.")
flags.DEFINE_string("plot", None, "Write a PNG scatter of all runs' samples here.")


def main(argv):
  del argv
  rows, scatters = [], []
  for dataset in FLAGS.datasets:
    means = toy.mixture_means(dataset)
    std = FLAGS.ring_std if dataset == "ring" else FLAGS.grid_std
    for name in FLAGS.methods:
      t0 = time.time()
      samples = toy.train_toy(toy.TOY_METHODS[name], means, std, jax.random.key(FLAGS.seed),
                              steps=FLAGS.steps)
      m = toy.mode_metrics(samples, means, std, min_count=FLAGS.min_count)
      rows.append((name, dataset, std, m, time.time() - t0))
      scatters.append((f"{name} / {dataset}", samples, means))
  print(f"steps {FLAGS.steps}, seed {FLAGS.seed}, 2,500 samples, mode covered at >= "
        f"{FLAGS.min_count} samples within 3 std")
  print("| method | dataset | std | modes covered | high quality (within 3 std) | s |")
  print("|---|---|---|---|---|---|")
  for name, dataset, std, m, seconds in rows:
    print(f"| {name} | {dataset} | {std} | {m['modes']}/{m['num_modes']} | "
          f"{100 * m['high_quality']:.1f}% | {seconds:.1f} |")
  if FLAGS.plot:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    cols = len(FLAGS.methods)
    fig, axes = plt.subplots(len(FLAGS.datasets), cols, figsize=(3 * cols, 3 * len(FLAGS.datasets)),
                             squeeze=False)
    for ax, (title, samples, means) in zip(axes.ravel(), scatters):
      ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
      ax.scatter(means[:, 0], means[:, 1], s=12, c="red", marker="x")
      ax.set_title(title, fontsize=9)
      ax.set_xlim(-5.5, 5.5)
      ax.set_ylim(-5.5, 5.5)
      ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(FLAGS.plot, dpi=80)
    print(f"wrote {FLAGS.plot}")


if __name__ == "__main__":
  app.run(main)
