"""Gated PixelCNN on CIFAR-10 (32x32x3) with PixelCNN++'s CIFAR-10 settings.

  python launch.py --config experiments/autoregressive/pixelcnn_cifar.py \
      --workdir /tmp/pixelcnn_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  python launch.py --config experiments/autoregressive/pixelcnn_cifar.py \
      --workdir /tmp/pixelcnn_cifar --mode=eval

PixelCNN++ (Salimans et al. 2017, and the defaults of openai/pixel-cnn's train.py) reaches
2.92 test bits/dim on CIFAR-10 with: 6 stages of 5 gated ResNet layers (30 layers), 160
filters, a discretized logistic mixture of 10 components per pixel with linear RGB channel
coefficients, dropout 0.5 in every layer, Adam at lr 1e-3 decayed exponentially by 0.999995 per
step, batch 16 per GPU on 8 GPUs (128), Polyak averaging of the parameters with decay 0.9995
for evaluation, no data augmentation. Set here: the 30 layers (`num_layers`), 160 filters,
K = 10, dropout 0.5, Adam 1e-3, batch 128, EMA 0.9995 and a class-free model
(`--config.model.num_classes=10` for class-conditional, as in the paper's conditional run).

Differences from PixelCNN++, stated rather than hidden:
* the network is jgen's gated PixelCNN (`jgen.nn.pixelcnn`): vertical and horizontal streams at
  full resolution throughout, where PixelCNN++ downsamples twice (32 -> 16 -> 8) between its
  stages and upsamples back with skip connections, uses concat_elu and weight normalization;
  30 layers of 3x3 (vertical 2x3) kernels see every earlier pixel of a 32x32 image;
* `num_steps` 500,000 (about 1,300 epochs of the 50,000 training images; the exponential
  decay 0.999995^t halves the rate every 139k steps) is this config's choice, not a figure of
  the paper;
* data: tfds's cifar10 by default; ../shared's JPEG copy is lossy, so bits/dim on it are not
  comparable to 2.92.

`:smoke` is a tiny model on the same data shape, for the tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_pixelcnn", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.get_config()
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.batch_size = 128
  c.model.features = 160
  c.model.num_layers = 30        # 6 stages x 5 ResNet layers
  c.model.kernel_size = 3
  c.model.num_mixtures = 10
  c.model.dropout = 0.5
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 0
  c.optim.schedule = "exponential"
  c.optim.decay_rate = 0.999995
  c.optim.grad_clip_norm = 0.0
  c.train.num_steps = 500_000
  c.train.ema_decay = 0.9995
  c.train.ema_warmup = True
  c.train.log_every = 500
  c.train.checkpoint_every = 10_000
  c.train.eval_every = 10_000
  c.train.eval_batches = 78      # 78 x 128 = 9,984 of the 10,000 test images
  c.sample.num = 64
  c.sample.batch_size = 64
  if a.smoke:
    c.data.batch_size = 4
    c.model.features = 8
    c.model.num_layers = 1
    c.model.num_mixtures = 2
    c.model.dropout = 0.0
    c.train.num_steps = 2
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
