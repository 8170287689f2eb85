"""How much a class-conditional PixelCNN knows about the classes: its own Bayes classifier.

  python benchmarks/pixelcnn_classes.py \
      --run experiments/autoregressive/pixelcnn_digits.py=/tmp/pixelcnn_digits
  python benchmarks/pixelcnn_classes.py --num 200 --run \
      "experiments/autoregressive/pixelcnn_digits.py=/tmp/pixelcnn_digits@sample.guidance_scale=1.0"

A model of p(x | y) is also a classifier, p(y | x) = p(x | y) / sum_y' p(x | y') under a uniform
prior. For each `--run CONFIG[:VARIANT]=WORKDIR[@KEY=VALUE;...]` (EMA parameters) this prints,
on the held-out split of the run's data:

* the accuracy of argmax_y log p(x | y), and of argmax_y log p(x_{rows < r} | y), the
  likelihood of the first r rows only (how early in raster order the image tells the class);
* the label's information, log2 N + E log2 p(y_true | x), in bits per image (log2 10 = 3.32 at
  most): the gap between `bpd_marginal` and `bpd` of `--mode=eval` times H W C.

With `--num N` it also draws N samples of the classes 0..9 in turn (the run's sampler and its
`sample.*` settings) and prints the bits/dim the model gives its own samples next to the
held-out bits/dim: a model whose samples score worse than real data (the sample figure
larger) draws from regions it does not fit (over-dispersed). Judge the samples' classes with
`benchmarks/gan_digits.py`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jgen.ops.likelihoods import logistic_mixture_log_prob, split_mixture_params
from jgen.train.inference import restore_for_inference
from jgen.train.inputs import load_data
from run_specs import load_config, parse_run

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "CONFIG[:VARIANT]=WORKDIR[@KEY=VALUE;...] of a trained "
                          "class-conditional PixelCNN.")
flags.DEFINE_list("rows", ["2", "4", "8", "12"], "Prefix lengths (image rows) of the prefix "
                  "classifier columns.")
flags.DEFINE_integer("num", 0, "Samples whose bits/dim to score (0: none).")
flags.DEFINE_integer("seed", 0, "Seed of the samples.")


def pixel_log_probs(method, params, x: jax.Array, label: int) -> jax.Array:
  """log p(x_i | x_{<i}, y = label) of every pixel: [B, H, W] in nats."""
  labels = jnp.full((x.shape[0],), label, jnp.int32)
  out = method.model.apply({"params": params}, x, {"label": labels}, train=False)
  mix = split_mixture_params(out, method.model.channels, method.model.num_mixtures)
  return logistic_mixture_log_prob(x, mix, method.num_bins)


def main(argv):
  del argv
  if not FLAGS.run:
    raise app.UsageError("give at least one --run CONFIG=WORKDIR")
  rows = [int(r) for r in FLAGS.rows]
  print("| run | steps | Bayes accuracy | "
        + " | ".join(f"first {r} rows" for r in rows)
        + " | label bits/image | held-out bpd | own samples' bpd |")
  print("|---" * (len(rows) + 6) + "|")
  for run in FLAGS.run:
    spec, workdir, overrides = parse_run(run)
    config = load_config(spec, overrides)
    if config.model.num_classes < 1:
      raise app.UsageError(f"{spec} is not class-conditional (model.num_classes = 0)")
    method, _, state = restore_for_inference(config, workdir)
    params = state.ema_params
    source = load_data(config, split=config.data.eval_split)
    x = jnp.asarray(np.stack([source[i]["image"] for i in range(len(source))]), jnp.float32)
    x = x / 127.5 - 1.0
    y = np.asarray([source[i]["label"] for i in range(len(source))])
    per_pixel = jax.jit(lambda p, x, k: pixel_log_probs(method, p, x, k), static_argnums=2)
    n, h, w = x.shape[0], x.shape[1], x.shape[2]
    k = config.model.num_classes
    log_px = np.stack([np.asarray(per_pixel(params, x, c)).reshape(n, h, -1).sum(-1)
                       for c in range(k)], axis=1)                               # [N, K, H]
    full = log_px.sum(-1)
    accuracy = lambda scores: float(np.mean(scores.argmax(1) == y))
    posterior = full - np.logaddexp.reduce(full, axis=1, keepdims=True)
    label_bits = math.log2(k) + float(np.mean(posterior[np.arange(n), y])) / math.log(2)
    dims = h * w * config.data.channels
    held_out_bpd = float(-np.mean(full[np.arange(n), y]) / (dims * math.log(2)))
    own = float("nan")
    if FLAGS.num:
      labels = jnp.asarray(np.arange(FLAGS.num) % k, jnp.int32)
      samples = jax.jit(lambda s, r: method.sample_conditional(s, r, {"label": labels},
                                                               FLAGS.num))(
          state, jax.random.key(FLAGS.seed))
      log_p = jax.jit(lambda p, s: method.log_prob(p, s, {"label": labels}))(params, samples)
      own = float(-np.mean(np.asarray(log_p)) / (dims * math.log(2)))
    prefix = " | ".join(f"{100 * accuracy(log_px[:, :, :r].sum(-1)):.1f}%" for r in rows)
    print(f"| {spec}{f' ({overrides})' if overrides else ''} | {int(state.step)} | "
          f"{100 * accuracy(full):.1f}% | {prefix} | {label_bits:.2f} | {held_out_bpd:.3f} | "
          f"{own:.3f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
