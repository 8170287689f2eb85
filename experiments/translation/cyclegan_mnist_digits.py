"""CycleGAN between scikit-learn's 8x8 digits (resized to 32x32: blurry, thick strokes) and
MNIST's handwritten digits (28x28 resized to 32x32: sharp, thin strokes), 1 channel.

  python launch.py --config experiments/translation/cyclegan_mnist_digits.py --workdir /tmp/cg_mnist
  python launch.py --config experiments/translation/cyclegan_mnist_digits.py \
      --workdir /tmp/cg_mnist \
      --mode=sample          # held-out 8x8 digits | their MNIST-style translation

Domain A is `digits` (1,500 train / 297 test images), domain B `tfds:mnist` (prepared offline
under --config.data.data_dir; never downloaded). Without a tfds copy, the real MNIST test set
in ../shared (10,000 images, no training set) serves when split into 9,000 training and 1,000
held-out images as an .npz (`x_train` / `x_test` are the 'train' / 'test' splits):

  python -c "import numpy as np; from jgen.data import read_idx; \
x = read_idx('../shared/data/mnist-test/t10k-images-idx3-ubyte.gz'); \
np.savez('/tmp/mnist_split.npz', x_train=x[:9000], x_test=x[9000:])"
  python launch.py --config experiments/translation/cyclegan_mnist_digits.py \
      --workdir /tmp/cg_mnist \
      --config.data.source='unpaired:digits|npz:/tmp/mnist_split.npz'

(any MNIST-format idx directory works too: `unpaired:digits|idx:DIR`). The domains are unpaired
(`unpaired:SPEC_A|SPEC_B`, one epoch = the larger domain, each domain in its own permutation),
and there is no true counterpart to measure against: `evaluate` reports the cycle errors, and
`--mode=eval` the translation metrics the loop computes without targets (label keeping and a
domain FID with `--config.eval.features=domain:mnist`, when the classifier is available).

Networks: the paper's 128 px setup scaled to 32 px: ResNet generators ngf 32 with 6 blocks
(on 8x8 features), PatchGAN ndf 64 with 2 stride-2 layers (6 x 6 logits of 34 x 34 fields);
batch 8, 20,000 steps (10,000 constant + 10,000 decaying). `:smoke` is a seconds-long run
(digits against digits, so it needs no MNIST).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_cyclegan", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.cyclegan_base(smoke=smoke)
  c.data.source = "unpaired:digits|tfds:mnist"
  c.data.image_size = 32
  c.data.channels = 1
  c.data.resize = True
  c.data.random_flip = False     # digits have a handedness
  c.data.batch_size = 8
  c.model.ngf = 32
  c.model.n_blocks = 6
  c.model.ndf = 64
  c.model.d_layers = 2
  c.train.num_steps = 20_000
  c.train.checkpoint_every = 2_000
  c.train.sample_every = 2_000
  c.train.eval_every = 2_000
  c.train.eval_batches = 4
  c.sample.num = 32
  c.sample.batch_size = 32
  if smoke:
    c.data.source = "unpaired:digits|digits"
    c.data.image_size = 8
    c.data.batch_size = 2
    c.model.ngf = 4
    c.model.n_blocks = 1
    c.model.ndf = 4
    c.model.d_layers = 1
    c.train.num_steps = 4
    c.train.checkpoint_every = 4
    c.train.sample_every = 0
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
