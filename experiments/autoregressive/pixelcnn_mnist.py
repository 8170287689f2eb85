"""Class-conditional gated PixelCNN on MNIST-format data at its native 28x28x1: exact bits/dim.

  python -c "import numpy as np; from jgen.data import read_idx; \
x = read_idx('../shared/data/mnist-test/t10k-images-idx3-ubyte.gz'); \
y = read_idx('../shared/data/mnist-test/t10k-labels-idx1-ubyte.gz'); \
np.savez('/tmp/mnist_split.npz', x_train=x[:9000], y_train=y[:9000], x_test=x[9000:], \
y_test=y[9000:])"
  python launch.py --config experiments/autoregressive/pixelcnn_mnist.py \
      --workdir /tmp/pixelcnn_mnist \
      --config.data.source=npz:/tmp/mnist_split.npz
  python launch.py --config experiments/autoregressive/pixelcnn_mnist.py \
      --workdir /tmp/pixelcnn_mnist \
      --config.data.source=npz:/tmp/mnist_split.npz --mode=eval

The data default to tensorflow-datasets' MNIST (prepared offline); the real MNIST test set in
../shared (10,000 images, no training set) serves split into 9,000 training and 1,000 held-out
images as above (the flows' `flow_mnist.py` split). pixelcnn_digits' network (32 features, 6
gated layers with 3x5 vertical kernels, 5 logistic components); `--mode=eval` prints `bpd` of
p(x | label) and `bpd_marginal` of p(x) (the label summed out), the figure next to the flows'.
Variants: `:uncond` (no labels), `:smoke` (a tiny model for the tests).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_pixelcnn", beside=__file__)

ARGS = dict(smoke=False, uncond=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.get_config()
  c.data.source = "tfds:mnist"
  c.data.image_size = 28
  c.data.channels = 1
  c.data.resize = False
  c.data.batch_size = 64
  c.model.num_classes = 0 if a.uncond else 10
  c.model.features = 32
  c.model.num_layers = 6
  c.model.kernel_size = 5        # receptive_rows 16 (k = 3: 9); see pixelcnn_digits
  c.train.num_steps = 600
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.train.eval_batches = 15      # 960 of the 1,000 held-out images
  c.sample.num = 100
  c.sample.batch_size = 100
  if a.smoke:
    c.data.batch_size = 4
    c.model.features = 8
    c.model.num_layers = 1
    c.model.num_mixtures = 2
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 2
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
