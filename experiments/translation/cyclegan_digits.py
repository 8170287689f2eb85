"""CycleGAN between scikit-learn's digits and Sobel edge maps, at 16x16: a translation with a
known answer that trains on 2 CPU cores.

  python launch.py --config experiments/translation/cyclegan_digits.py \
      --workdir /tmp/cyclegan_digits
  python launch.py --config experiments/translation/cyclegan_digits.py \
      --workdir /tmp/cyclegan_digits \
      --mode=sample          # held-out digits | their translation | the true edge maps
  python launch.py --config experiments/translation/cyclegan_digits.py \
      --workdir /tmp/cyclegan_digits \
      --mode=eval

Data (`unpaired_derived:edges:digits`, `jgen.data.unpaired_derived`): domain A is the digits of
the first half of the 1,500 training images, domain B the edge maps of the second half, so the
generators never see a digit with its own edges. The 297 test digits come with their edges
and labels, so `evaluate` (every `train.eval_every` steps) measures A -> B against the true
edges (`l1_ab`, `psnr_ab`) and B -> A against the true digits (`l1_ba`, `psnr_ba`), beside
the cycle errors. Baselines on the 297 test pairs (images in [-1, 1]): the mean edge map
scores l1_ab 0.253 / psnr_ab 16.1 dB, a black image 0.514 / 9.6, the digit itself 0.416 /
10.5; the mean digit scores l1_ba 0.301 / psnr_ba 13.7. Measured on 2 shared CPU cores
(about 0.2 s per step, other jobs running): after 400 of 800 steps (lr decay over the last
400) l1_ab 0.237, psnr_ab 16.0, l1_ba 0.244, psnr_ba 14.7, cycle errors 0.17 / 0.22; the
2,000-step default takes about 7-8 minutes there.

Networks: ResNet generators with ngf 16 and 3 residual blocks (on 4x4 features, 64 channels),
PatchGAN discriminators with ndf 16 and 2 stride-2 layers (2 x 2 logits of 34 x 34 fields),
instance norm, 623k parameters in all; batch 16, 2,000 steps (1,000 constant + 1,000
decaying), everything else the paper's (experiments/translation/base_cyclegan.py). `:smoke` is a
seconds-long run for the tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_cyclegan", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.cyclegan_base(smoke=smoke)
  c.data.source = "unpaired_derived:edges:digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.random_flip = False     # digits have a handedness; and flips would break eval pairs
  c.data.batch_size = 16
  c.model.ngf = 16
  c.model.n_blocks = 3
  c.model.ndf = 16
  c.model.d_layers = 2
  c.train.num_steps = 2000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 1000
  c.train.eval_every = 500
  c.train.eval_batches = 4
  c.sample.num = 32
  c.sample.batch_size = 32
  if smoke:
    c.data.image_size = 8
    c.data.batch_size = 4
    c.model.ngf = 4
    c.model.n_blocks = 1
    c.model.ndf = 4
    c.model.d_layers = 1
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.train.sample_every = 0
    c.train.eval_every = 4
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
