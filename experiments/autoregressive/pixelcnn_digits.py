"""Class-conditional gated PixelCNN on scikit-learn's digits (16x16, 1 channel): exact bits/dim.

  python launch.py --config experiments/autoregressive/pixelcnn_digits.py \
      --workdir /tmp/pixelcnn_digits
  python launch.py --config experiments/autoregressive/pixelcnn_digits.py \
      --workdir /tmp/pixelcnn_digits \
      --mode=eval
  python launch.py --config experiments/autoregressive/pixelcnn_digits.py \
      --workdir /tmp/pixelcnn_digits \
      --mode=sample --config.sample.labels=3

`--mode=eval` prints the exact held-out bits/dim of the 8-bit digits: `bpd` of p(x | label) and
`bpd_marginal` of p(x) = (1/10) sum_y p(x | y) (the label summed out; the figure comparable
with the flows' unconditional bits/dim). `--mode=sample` writes a grid (row by row the classes
0..9) and an .npz with the labels, drawn with classifier-free guidance w = 2 at temperature
0.5 (`sample.guidance_scale`, `sample.temperature`; 1 and 1 draw from the model itself).
Measured on 2 CPU cores: 2,000 steps of the network (32 features, 6 gated layers with 3x5
vertical kernels, 5 logistic components, a null class for guidance) in 10 min 40 s (a test
run shared the cores; 9 min 36 s idle without the null class, the same network); held-out
`bpd` 2.225, `bpd_marginal` 2.235 (256 held-out digits); guided sampling 1.5 images/s
(batch 100, two passes per pixel). Variants: `:uncond` (no labels), `:smoke` (a
seconds-long run for the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_pixelcnn", beside=__file__)

ARGS = dict(smoke=False, uncond=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.digits(_base.get_config(), smoke=smoke)
  c.model.num_classes = 0 if a.uncond else 10
  if smoke:
    return c
  # k = 5 (3x5 vertical kernels): the output at row i reads all 16 rows above it
  # (`receptive_rows` 16); k = 3 read 9, so the bottom of a digit never saw its top. At 2,000
  # steps k = 3 reached 2.598 held-out bits/dim and 34.0% asked-class accuracy, k = 5 2.224 and
  # 45.2% (docs/families/autoregressive.md), at 0.27 s/step on 2 idle cores.
  c.model.features = 32
  c.model.num_layers = 6
  c.model.kernel_size = 5
  # Classifier-free guidance with temperature (issue 37): the model classifies 93% of held-out
  # digits by its own likelihood, but its T = 1 samples drift off the digits (the judge names
  # the asked class in 38-45%); w = 2 at T = 0.5 reaches 83% on 300 samples
  # (docs/families/autoregressive.md).
  if not a.uncond:
    c.model.null_class = True
    c.pixelcnn.cond_drop_prob = 0.1
    c.sample.guidance_scale = 2.0
    c.sample.temperature = 0.5
  c.train.num_steps = 2000
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.sample.num = 100              # a 10x10 grid: each row 0..9
  c.sample.batch_size = 100
  return c
