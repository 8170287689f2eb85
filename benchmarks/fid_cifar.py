"""FID between the CIFAR-10 train and test splits with the FID Inception weights.

  python benchmarks/fid_cifar.py                                  # 50,000 train vs 10,000 test
  nice -n 10 python benchmarks/fid_cifar.py --num_train 2000 --num_test 2000   # a subset
  python benchmarks/fid_cifar.py --num_train 500 --num_test 500 --dtypes float32,bfloat16

Reads ``../shared/data/cifar10-jpeg.zip`` (``train/<class>/*.jpg``, ``test/<class>/*.jpg``; a
JPEG copy of CIFAR-10, so figures are close to, not equal to, those on the PNG originals).
Subsets are a fixed random permutation (``--seed``) of each split, so every class is present.
Features are computed chunk by chunk (train and test chunks alternating) and each chunk's
features are cached (``$JGEN_CACHE/fid_cifar``), so an interrupted or larger run reuses them;
after every pair of chunks a row with the FID so far is printed (a running table: with fewer
images FID is biased upward). ``--extra_num N`` adds KID and precision/recall/density/coverage
of the first N features of each split (`jgen.metrics.mmd`, `jgen.metrics.precision_recall`). The
statistics are `jgen.metrics.fid.GaussianStats` and the distance `jgen.metrics.fid.fid_from_stats`;
the final statistics are saved as .npz.

Reference: about 3.15 for the TF FID code on the original CIFAR-10, 50k train vs 10k test.
"""

import os
import pathlib
import time

import numpy as np
from absl import app, flags

from jgen.metrics import feature_net as fnet
from jgen.metrics import fid as fid_lib
from jgen.metrics import inception, mmd, precision_recall, weights

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("zip", str(REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"),
                    "CIFAR-10 images: a folder or .zip with train/ and test/.")
flags.DEFINE_integer("num_train", 50000, "Train images (a seeded random subset if < 50,000).")
flags.DEFINE_integer("num_test", 10000, "Test images (a seeded random subset if < 10,000).")
flags.DEFINE_integer("seed", 0, "Seed of the subset permutation.")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes (one FID table each).")
flags.DEFINE_integer("batch_size", 50, "Images per jitted call.")
flags.DEFINE_integer("chunk", 250, "Images per cached feature chunk.")
flags.DEFINE_string("weights", None, "Inception weights (default: the search order).")
flags.DEFINE_enum("preprocess", "tf", list(inception.PREPROCESS), "Resize/scaling reference.")
flags.DEFINE_integer("extra_num", 0, "If > 0, also KID and precision/recall/density/coverage "
                     "(k = 3) between the first N features of each split (0: FID only).")


def _subset(split: str, n: int) -> np.ndarray:
  images = fid_lib.load_images(FLAGS.zip, split=split)
  order = np.random.default_rng(FLAGS.seed).permutation(len(images))
  if n > len(images):
    raise ValueError(f"--num_{split}={n} but the {split} split has {len(images)} images")
  return images[order[:n]]


def _chunk_features(net, images, split, index, dtype) -> np.ndarray:
  """Features of chunk `index` of a split, from the cache or computed (and cached)."""
  chunk = FLAGS.chunk
  key = (f"{net.name}-{os.path.basename(net.source)}-{dtype}-{split}-seed{FLAGS.seed}"
         f"-chunk{chunk}-{index:04d}.npy")
  path = os.path.join(fnet.cache_dir("fid_cifar"), key)
  if os.path.exists(path):
    return np.load(path)
  features = net(images[index * chunk:(index + 1) * chunk])["features"]
  np.save(path + ".tmp.npy", features)
  os.replace(path + ".tmp.npy", path)
  return features


def run(dtype: str, train: np.ndarray, test: np.ndarray, variables, source) -> float:
  net = inception.InceptionFeatureNet(variables, batch_size=FLAGS.batch_size, dtype=dtype,
                                      preprocess=FLAGS.preprocess, source=source)
  stats = {"train": fid_lib.GaussianStats(net.feature_dim),
           "test": fid_lib.GaussianStats(net.feature_dim)}
  images = {"train": train, "test": test}
  chunks = {s: -(-len(images[s]) // FLAGS.chunk) for s in images}
  print(f"\n{dtype}, {net.name}, weights {source}")
  print("| train N | test N | FID | elapsed s |")
  print("|---|---|---|---|", flush=True)
  t0 = time.perf_counter()
  fid = float("nan")
  kept = {"train": [], "test": []}
  for i in range(max(chunks.values())):
    for split in ("train", "test"):
      if i < chunks[split]:
        features = _chunk_features(net, images[split], split, i, dtype)
        stats[split].update(features)
        if FLAGS.extra_num and i * FLAGS.chunk < FLAGS.extra_num:
          kept[split].append(features)
    if min(s.count for s in stats.values()) >= 2:
      fid = fid_lib.fid_from_stats(stats["train"], stats["test"])
      print(f"| {stats['train'].count} | {stats['test'].count} | {fid:.3f} | "
            f"{time.perf_counter() - t0:.0f} |", flush=True)
  if FLAGS.extra_num:
    real, fake = (np.concatenate(kept[s])[:FLAGS.extra_num] for s in ("train", "test"))
    t1 = time.perf_counter()
    kid, kid_std = mmd.kid(real, fake)
    scores = precision_recall.prdc(real, fake, k=3)
    print(f"\ntrain vs test, {len(real)} vs {len(fake)} features: KID {kid:.5f} +- {kid_std:.5f}, "
          + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
          + f" ({time.perf_counter() - t1:.1f} s)")
  for split, s in stats.items():
    path = os.path.join(fnet.cache_dir("fid_stats"),
                        f"cifar10-jpeg-{split}-{s.count}-seed{FLAGS.seed}-{net.name}-{dtype}.npz")
    fid_lib.save_stats(path, s, source=FLAGS.zip, split=split, count=s.count, dtype=dtype)
    print(f"{split} statistics: {path}")
  return fid


def main(argv):
  del argv
  variables, source = weights.inception_variables(FLAGS.weights)
  train = _subset("train", FLAGS.num_train)
  test = _subset("test", FLAGS.num_test)
  results = {d: run(d, train, test, variables, source) for d in FLAGS.dtypes}
  print("\n| dtype | train N | test N | FID |")
  print("|---|---|---|---|")
  for dtype, fid in results.items():
    print(f"| {dtype} | {len(train)} | {len(test)} | {fid:.3f} |")


if __name__ == "__main__":
  app.run(main)
