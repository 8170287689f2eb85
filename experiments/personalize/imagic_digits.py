"""Imagic on the text-conditioned digits latent diffusion model (`diffusion.imagic`): edit the
first held-out "3" toward "a handwritten eight".

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/personalize/imagic_digits.py --workdir /tmp/imagic_digits \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits
  python launch.py --config experiments/personalize/imagic_digits.py --workdir /tmp/imagic_digits \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits --mode=sample   # eta 0 .. 1
  python -m jgen.cli.personalization --imagic /tmp/imagic_digits     # class, distance

Stage 1: 300 steps of the embedding offset (Adam 1e-2), stage 2: 300 steps of the U-Net
(Adam 1e-4), 8 noise draws of the image per step; the sweep has 11 etas. `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.imagic import IMAGIC_RULES
from jgen.train.config import experiment_module, parse_arg

_text = experiment_module("../ldm/text_digits", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _text.get_config("smoke" if a.smoke else None)
  smoke = a.smoke
  c.method = "diffusion.imagic"
  c.data.split = "test"           # a held-out image: the first test "3"
  c.data.train_labels = "3"
  c.data.train_examples = 1
  c.data.batch_size = 1
  c.data.random_flip = False
  c.init_from.base = ml_collections.ConfigDict()
  c.init_from.base.workdir = ""
  c.init_from.base.into = "params"
  c.init_from.base.source = "ema"
  c.imagic = ml_collections.ConfigDict()
  c.imagic.target = "a handwritten eight"
  c.imagic.embed_steps = 2 if smoke else 300
  c.imagic.embed_lr = 1e-2
  c.imagic.noise_draws = 4 if smoke else 8
  c.optim.rules = IMAGIC_RULES
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.train.num_steps = 4 if smoke else 600
  c.train.checkpoint_every = c.train.num_steps
  c.train.sample_every = 0
  c.train.eval_every = 0
  c.sample.num = 11
  c.sample.batch_size = 11
  return c
