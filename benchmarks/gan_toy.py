"""The mode-collapse check: GAN, WGAN and WGAN-GP on 8 Gaussians on a ring and a 5x5 grid.

  python benchmarks/gan_toy.py                      # all methods, both datasets, seed 0
  python benchmarks/gan_toy.py --methods wgan_gp --datasets ring --steps 3000 --seed 1

MLP generator and discriminator (3 x `--hidden` ReLU, z in R^2), batch 256, the papers' toy
optimizers (`jgen.gan.toy.TOY_METHODS`); each run is one jitted `lax.scan`. Prints, per run: modes
covered (>= min_count of 2,500 samples within 3 std of the mode), the share of high-quality samples
(within 3 std of the nearest mode) and the wall time including compilation. `--plot` writes a
scatter of samples over the modes (PNG, drawn with PIL).
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
flags.DEFINE_integer("hidden", 256, "Width of the 3 hidden layers of G and D (the authors' toy "
                     "code: 512; it did worse here at 2,000 steps).")
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
                              steps=FLAGS.steps, hidden=FLAGS.hidden)
      m = toy.mode_metrics(samples, means, std, min_count=FLAGS.min_count)
      rows.append((name, dataset, std, m, time.time() - t0))
      scatters.append((f"{name} / {dataset}", samples, means))
  print(f"steps {FLAGS.steps}, hidden {FLAGS.hidden}, seed {FLAGS.seed}, 2,500 samples, mode "
        f"covered at >= {FLAGS.min_count} samples within 3 std")
  print("| method | dataset | std | modes covered | high quality (within 3 std) | s |")
  print("|---|---|---|---|---|---|")
  for name, dataset, std, m, seconds in rows:
    print(f"| {name} | {dataset} | {std} | {m['modes']}/{m['num_modes']} | "
          f"{100 * m['high_quality']:.1f}% | {seconds:.1f} |")
  if FLAGS.plot:
    _plot(FLAGS.plot, scatters, cols=len(FLAGS.methods))
    print(f"wrote {FLAGS.plot}")


def _plot(path: str, scatters, *, cols: int, size: int = 240, extent: float = 5.5) -> None:
  """A grid of scatter panels (samples blue, mode centres red) drawn with PIL."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  rows = -(-len(scatters) // cols)
  canvas = Image.new("RGB", (cols * size, rows * size), "white")
  draw = ImageDraw.Draw(canvas)
  to_px = lambda v: (v + extent) / (2 * extent) * (size - 1)
  for i, (title, samples, means) in enumerate(scatters):
    ox, oy = (i % cols) * size, (i // cols) * size
    draw.rectangle([ox, oy, ox + size - 1, oy + size - 1], outline=(160, 160, 160))
    for x, y in np.clip(samples, -extent, extent):
      px, py = ox + to_px(x), oy + size - 1 - to_px(y)
      draw.point((px, py), fill=(40, 90, 200))
    for x, y in means:
      px, py = ox + to_px(x), oy + size - 1 - to_px(y)
      draw.line([px - 3, py - 3, px + 3, py + 3], fill=(220, 0, 0))
      draw.line([px - 3, py + 3, px + 3, py - 3], fill=(220, 0, 0))
    draw.text((ox + 4, oy + 4), title, fill=(0, 0, 0))
  canvas.save(path)


if __name__ == "__main__":
  app.run(main)
