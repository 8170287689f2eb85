"""Glow or RealNVP on MNIST-format data at its native 28x28x1: exact log-likelihood in bits/dim.

  python launch.py --config experiments/flow/mnist.py:method=glow --workdir /tmp/glow_mnist
  python launch.py --config experiments/flow/mnist.py:method=glow --workdir /tmp/glow_mnist \
      --mode=eval
  python launch.py --config experiments/flow/mnist.py:method=glow --workdir /tmp/glow_mnist \
      --mode=sample

The data default to tensorflow-datasets' MNIST (prepared offline). The real MNIST test set in
../shared (10,000 images, no training set) serves when split into 9,000 training and 1,000
held-out images as an .npz (`x_train`/`x_test` arrays are the 'train'/'test' splits):

  python -c "import numpy as np; from jgen.data import read_idx; \
x = read_idx('../shared/data/mnist-test/t10k-images-idx3-ubyte.gz'); \
np.savez('/tmp/mnist_split.npz', x_train=x[:9000], x_test=x[9000:])"
  python launch.py --config experiments/flow/mnist.py:method=glow --workdir /tmp/glow_mnist \
      --config.data.source=npz:/tmp/mnist_split.npz

On 2 CPU cores a 10-minute Glow run is 1,200 steps of a 155k-parameter model (64 channels,
0.43 s/step): add `--config.model.hidden=64 --config.train.num_steps=1200
--config.train.eval_every=600 --config.train.checkpoint_every=600` (the default, 128 channels
and 20,000 steps, is 439k parameters at 1.1 s/step there).

Full MNIST-format idx files work too (`--config.data.source=idx:/usr/share/datasets/fashion-mnist`
for Debian's Fashion-MNIST). The flows run on the 28x28 images themselves (two squeezes:
28 -> 14 -> 7), so the bits/dim are those of the 28x28 images (published flows reach about
1.0-1.1 after long training), not of a padded or resized copy.

The argument is `method=glow` (the default) or `method=realnvp`, optionally with `,additive` (Glow
with additive couplings) and/or `,smoke` (a tiny model for the tests): `flow/mnist.py:smoke`.
"""

import ml_collections

from jgen.errors import ConfigError
from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)


ARGS = dict(method=_base.METHODS, additive=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  method = a.method
  if a.additive and method != "glow":
    raise ConfigError(f"additive is an option of method=glow only (got {arg!r})")
  c = _base.get_config(method, additive=a.additive)
  c.data.source = "tfds:mnist"
  c.data.image_size = 28
  c.data.channels = 1
  c.data.resize = False
  c.data.batch_size = 64
  c.model.num_levels = 2
  if method == "glow":
    c.model.num_steps = 8
    c.model.hidden = 128
  else:
    c.model.hidden = 64
    c.model.num_blocks = 4
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 200
  c.train.num_steps = 20_000
  c.train.log_every = 100
  c.train.checkpoint_every = 1_000
  c.train.eval_every = 1_000
  c.train.eval_batches = 15      # 960 images: nearly all of a 1,000-image holdout
  if a.smoke:
    _base.smoke(c, method)
  return c
