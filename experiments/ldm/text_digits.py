"""Text-conditioned latent diffusion on the 4x4x8 latents of a frozen vqgan_digits run.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --mode=sample --config.sample.prompts="a handwritten three,the digit 7"

`diffusion.ldm` with ``ldm.conditioning = "text"``: the first stage, scale factor, U-Net,
schedule, optimizer and sampler are ldm_digits' (0.78M-parameter U-Net, ch 32, ch_mult (1, 2),
cross-attention with 4 heads at 4x4, 2x2 and in the middle), but the U-Net cross-attends to
the 10 outputs of a text encoder (a 2-block bidirectional transformer of width 64, 4 heads,
projected to context_dim 32; 0.11M parameters, trained jointly) over the caption of each
training image, drawn per example from 5 templates of its digit ("a handwritten seven", "the
digit 7", "7", "seven", "a picture of a seven"; `jgen.nn.text.TEMPLATES`). The empty prompt is
the null condition (dropout 0.1); samples use 50-step DDIM at w = 3 over "a handwritten zero"
.. "a handwritten nine" unless ``sample.prompts`` says otherwise.

``init_from.text_encoder.workdir=<another ldm_text_digits run>`` freezes that run's EMA text
encoder (``state.frozen["text_encoder"]``) and trains the U-Net alone. `:smoke` is the tests'
seconds-long run on an 8x8 vqgan_digits:smoke run (4x4x4 latents).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.cross_attention(_base.get_config("diffusion.ldm", smoke=smoke), smoke=smoke)
  # A frozen text encoder from another text run ("" = train one jointly).
  c.init_from.text_encoder = ml_collections.ConfigDict()
  c.init_from.text_encoder.workdir = ""
  c.init_from.text_encoder.subtree = "text_encoder"
  c.init_from.text_encoder.into = "frozen/text_encoder"
  c.init_from.text_encoder.source = "ema"

  c.ldm.conditioning = "text"
  c.ldm.text = ml_collections.ConfigDict()
  c.ldm.text.max_len = 10         # <bos> + up to 8 words + <eos>
  c.ldm.text.width = 16 if smoke else 64
  c.ldm.text.depth = 1 if smoke else 2
  c.ldm.text.num_heads = 2 if smoke else 4
  c.ldm.text.mlp_ratio = 4
  c.ldm.text.dropout = 0.0
  c.ldm.text.templates = ("a handwritten {word}", "the digit {digit}", "{digit}", "{word}",
                          "a picture of {a} {word}")
  # model.num_classes = 10: the digit labels the captions are drawn from;
  # diffusion.cond_drop_prob = 0.1: P(caption -> the empty prompt) in training (CFG).
  c.sample.prompts = ""           # "" = "a handwritten zero" .. "nine"; or "p1,p2,..."
  if smoke:
    c.sample.num = c.sample.batch_size = 10
  else:
    c.train.num_steps = 3000
  return c
