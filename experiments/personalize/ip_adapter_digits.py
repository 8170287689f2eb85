"""IP-Adapter on the text-conditioned digits latent diffusion model (`diffusion.ip_adapter`).

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/personalize/ip_adapter_digits.py --workdir /tmp/ip_digits \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits
  python launch.py --config experiments/personalize/ip_adapter_digits.py --workdir /tmp/ip_digits \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits --mode=sample  # reference | sample
  python -m jgen.cli.personalization --image_prompt /tmp/ip_digits  # the reference's digit?

ldm_text_digits' model, first stage and sampler (50-step DDIM, w = 3); the image prompt is the
frozen VQ-GAN latent of the reference (4x4x8 = 128 numbers) projected to 4 tokens of the
U-Net's context size (32), attended through new K / V layers in the 5 cross-attention blocks
(lambda = 1). Adam 1e-3 for 1,000 steps of batch 64, drops of text / image / both 5% each; the
sampling prompt beside the image is ip.prompt ("" = none). `:smoke` is seconds.
"""

import ml_collections

from jgen.diffusion.ip_adapter import IP_RULES
from jgen.train.config import experiment_module, parse_arg

_text = experiment_module("../ldm/text_digits", beside=__file__)
_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _text.get_config("smoke" if a.smoke else None)
  c.method = "diffusion.ip_adapter"
  _base.text_base(c, lr=1e-3, rules=IP_RULES)
  c.ip = ml_collections.ConfigDict()
  c.ip.num_tokens = 4
  c.ip.scale = 1.0
  c.ip.drop_text = 0.05
  c.ip.drop_image = 0.05
  c.ip.drop_both = 0.05
  c.ip.prompt = ""
  c.sample.num = 4 if a.smoke else 16
  c.sample.batch_size = c.sample.num
  if not a.smoke:
    c.train.num_steps = 1000
    c.train.checkpoint_every = 1000
    c.train.sample_every = 1000
    c.train.eval_every = 0
  return c
