"""Glow or RealNVP on CIFAR-10 (32x32x3): the papers' CIFAR-10 setups.

  python launch.py --config experiments/flow/cifar.py:method=glow --workdir /tmp/glow_cifar
  python launch.py --config experiments/flow/cifar.py:method=glow --workdir /tmp/glow_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  python launch.py --config experiments/flow/cifar.py:method=glow --workdir /tmp/glow_cifar \
      --mode=eval

`:method=glow` (the default) is the Glow paper's CIFAR-10 model (Kingma & Dhariwal 2018, section 5
and the `--problem cifar10 --n_level 3 --depth 32 --flow_permutation 2 --flow_coupling 1 --learntop
--lr 0.001 --n_bits_x 8` run of openai/glow): L = 3 levels of K = 32 steps, coupling networks
of 512 channels, affine couplings, invertible 1x1 convolutions (plain, as in that run; `lu` True
for the LU-decomposed ones), a learned top prior, 8-bit data centred to [-0.5, 0.5], batch 512
(64 on each of 8 GPUs), Adam at 1e-3 with a linear warm-up over 10 epochs (about 1,000 steps),
parameters averaged for evaluation (EMA). The paper reports 3.35 bits/dim. Differences: the
paper's data augmentation is random translation by up to 10%, which jgen.data does not offer
(no augmentation here), and openai/glow's default optimizer is Adamax.
`:glow,additive` swaps in additive couplings.

`:method=realnvp` is RealNVP's CIFAR-10 model (Dinh et al. 2017, section 4.1): the logit transform
(a = 0.05), one downscaling (2 levels), coupling networks of 8 residual blocks with 64 feature
maps, batch 64, Adam at 1e-3, random horizontal flips; the paper reports 3.49 bits/dim. ActNorm
stands in for the paper's batch normalization (see jgen.nn.flow_models.RealNVP), and its small L2
penalty on weight-normalization scales has no counterpart here.

`,smoke` (`:glow,smoke`, `:realnvp,smoke`) is a tiny model on the same data shape, for tests.
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
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"
  c.optim.grad_clip_norm = 0.0
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.eval_every = 5_000
  c.train.eval_batches = 20
  c.train.sample_every = 10_000
  if method == "glow":
    c.flow.preprocessing = "center"
    c.model.num_levels = 3
    c.model.num_steps = 32
    c.model.hidden = 512
    c.model.lu = False
    c.model.learn_top = True
    c.data.batch_size = 512
    c.data.random_flip = False
    c.optim.warmup_steps = 1_000
    c.train.num_steps = 200_000
  else:
    c.flow.preprocessing = "logit"
    c.flow.logit_alpha = 0.05
    c.model.num_levels = 2
    c.model.hidden = 64
    c.model.num_blocks = 8
    c.model.actnorm = True
    c.data.batch_size = 64
    c.data.random_flip = True
    c.optim.warmup_steps = 0
    c.train.num_steps = 500_000
  if a.smoke:
    _base.smoke(c, method)
  return c
