"""Prints the throughput of FID Inception feature extraction (images/s) per dtype and batch size.

  python benchmarks/fid_features.py                                   # 32x32 inputs, 200 images
  python benchmarks/fid_features.py --dtypes float32,bfloat16 --batch_sizes 50,100 \
      --num_images 400 --image_size 64

Times `jgen.metrics.inception.load_feature_net(...)` end to end on random uint8 images (host ->
device transfer, the resize to 299x299, the network, device -> host), after one warm-up call
that compiles (its time is reported as "first call s"). Needs the Inception weights (see
`jgen.metrics.weights.find_inception_weights`); with ``--random_weights`` it times a randomly
initialized network instead (same cost).
"""

import time

import jax
import numpy as np
from absl import app, flags

from jgen.metrics import inception

FLAGS = flags.FLAGS
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes to time.")
flags.DEFINE_list("batch_sizes", ["50", "100"], "Images per jitted call.")
flags.DEFINE_integer("num_images", 200, "Images per timed run.")
flags.DEFINE_integer("image_size", 32, "Side of the square input images (resized to 299).")
flags.DEFINE_string("weights", None, "Inception weights file (default: the search order).")
flags.DEFINE_bool("random_weights", False, "Time a randomly initialized network.")


def _variables():
  if FLAGS.random_weights:
    model = inception.InceptionV3(num_classes=inception.NUM_CLASSES)
    x = np.zeros((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3), np.float32)
    return jax.jit(model.init)(jax.random.key(0), x), "random init"
  from jgen.metrics import weights  # pylint: disable=import-outside-toplevel
  return weights.inception_variables(FLAGS.weights)


def main(argv):
  del argv
  variables, source = _variables()
  rng = np.random.default_rng(0)
  size = FLAGS.image_size
  images = rng.integers(0, 256, (FLAGS.num_images, size, size, 3), dtype=np.uint8)
  print(f"weights: {source}; devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"{FLAGS.num_images} images {size}x{size}x3 -> 299x299")
  print("| dtype | batch | images/s | s/batch | first call s |")
  print("|---|---|---|---|---|")
  for dtype in FLAGS.dtypes:
    for batch_size in (int(b) for b in FLAGS.batch_sizes):
      net = inception.InceptionFeatureNet(variables, batch_size=batch_size, dtype=dtype)
      t0 = time.perf_counter()
      net(images[:net.batch_size])
      first = time.perf_counter() - t0
      t0 = time.perf_counter()
      net(images)
      seconds = time.perf_counter() - t0
      batches = -(-FLAGS.num_images // net.batch_size)
      print(f"| {dtype} | {net.batch_size} | {FLAGS.num_images / seconds:.2f} | "
            f"{seconds / batches:.3f} | {first:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
