"""CycleGAN horse <-> zebra with the paper's settings (Zhu et al. 2017, section 7.2).

  python launch.py --config experiments/translation/cyclegan_horse2zebra.py --workdir /tmp/h2z
  # the CycleGAN folder layout (trainA/ trainB/ testA/ testB/, a directory or .zip) instead
  # of tensorflow-datasets:
  python launch.py --config experiments/translation/cyclegan_horse2zebra.py --workdir /tmp/h2z \
      --config.data.source=unpaired:/data/horse2zebra.zip
  python launch.py --config experiments/translation/cyclegan_horse2zebra.py --workdir /tmp/h2z \
      --mode=sample

Data: `unpaired:tfds:cycle_gan/horse2zebra` (the splits trainA / trainB, testA / testB of a
copy prepared offline under --config.data.data_dir; never downloaded), 1,067 horses and 1,334
zebras at 256 x 256 RGB; random horizontal flips (each domain its own coin). The paper resizes
to 286 and crops 256 at random; the pipeline here has no random crop, so images are used at 256
as they are (the jitter is left out).

Settings (experiments/translation/base_cyclegan.py): 9-block ResNet generators (ngf 64),
70 x 70 PatchGAN discriminators (ndf 64, 3 layers), instance norm, LSGAN, cycle weight 10, identity
0.5 x 10, history buffers of 50, Adam 2e-4 (0.5, 0.999), batch 1 and 200 epochs of the 1,067 horses
(domain A): 213,400 steps, 106,700 at 2e-4 and then linear to 0. (The reference's epoch is
max(nA, nB) = 1,334 images, the zebras; `--config.train.num_steps=266800` counts epochs
that way; the decay is the second half either way.) `:smoke` is a seconds-long run on
8 x 8 digits (it needs no data files).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_cyclegan", beside=__file__)

HORSES = 1067
EPOCHS = 200

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.cyclegan_base(smoke=smoke)
  c.data.source = "unpaired:tfds:cycle_gan/horse2zebra"
  c.data.image_size = 256
  c.data.channels = 3
  c.data.resize = True
  c.data.random_flip = True
  c.data.batch_size = 1
  c.train.num_steps = EPOCHS * HORSES
  c.train.checkpoint_every = 10 * HORSES
  c.train.sample_every = 10 * HORSES
  c.model.dtype = "float32"      # bfloat16 on GPU/TPU: --config.model.dtype=bfloat16
  if smoke:
    c.data.source = "unpaired:digits|digits"
    c.data.channels = 1
  return c
