"""Face0 on the text-conditioned digits latent diffusion model (`diffusion.face0`): the
identity of a digit image (a noisy-classifier run's features, the stand-in for a face
recognizer) as 4 tokens beside the prompt.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ddpm/noisy_classifier_digits.py --workdir /tmp/clf
  python launch.py --config experiments/personalize/face0_digits.py --workdir /tmp/face0 \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits \
      --config.init_from.identity.workdir=/tmp/clf
  python launch.py --config experiments/personalize/face0_digits.py --workdir /tmp/face0 \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits \
      --config.init_from.identity.workdir=/tmp/clf --mode=sample   # reference | sample
  python -m jgen.cli.personalization --identity /tmp/face0 --identity /tmp/ip   # across prompts

The identity encoder (the classifier's pooled 64 features at t = 0, L2-normalised) and the text
encoder are frozen; the U-Net and the projection (64 -> 4 tokens of 32) fine-tune with Adam 2e-4
for 1,000 steps of batch 64, dropping text / identity / both 5% each. Sampling: separable
guidance, s_id = s_txt = 3 (``face0.id_scale``, ``face0.text_scale``), prompt ``face0.prompt``
("" = none). `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.face0 import FACE0_RULES
from jgen.train.config import experiment_module, parse_arg

_text = experiment_module("../ldm/text_digits", beside=__file__)
_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _text.get_config("smoke" if a.smoke else None)
  c.method = "diffusion.face0"
  _base.text_base(c, lr=2e-4, rules=FACE0_RULES)
  c.init_from.identity = ml_collections.ConfigDict()
  c.init_from.identity.workdir = ""
  c.init_from.identity.into = "frozen/identity"
  c.init_from.identity.source = "ema"
  c.face0 = ml_collections.ConfigDict()
  c.face0.num_tokens = 4
  c.face0.drop_text = 0.05
  c.face0.drop_id = 0.05
  c.face0.drop_both = 0.05
  c.face0.id_scale = 3.0
  c.face0.text_scale = 3.0
  c.face0.prompt = ""
  c.sample.num = 4 if a.smoke else 16
  c.sample.batch_size = c.sample.num
  if not a.smoke:
    c.train.num_steps = 1000
    c.train.checkpoint_every = 1000
    c.train.sample_every = 0
    c.train.eval_every = 0
  return c
