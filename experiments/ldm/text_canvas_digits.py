"""Text latent diffusion on canvases of two digits side by side ("a seven and a three"): the
two-object base on which several Perfusion concepts are combined in one image.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_canvas_digits.py --workdir /tmp/ldm_canvas \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_canvas_digits.py --workdir /tmp/ldm_canvas \
      --mode=sample --config.sample.prompts="a seven and a three,3 and 7"

`text_digits` with ``data.canvas = 2`` (`jgen.data.canvas`: every training digit beside a
partner drawn anew each epoch, 16x32, label 10 k_left + k_right) and `PAIR_TEMPLATES` captions
("a seven and a three", "7 and 3", "7 3", "seven three", "a handwritten seven and a three"):
the frozen 16x16 first stage encodes a 16x32 canvas into 4x8 latents (it is convolutional), the
same U-Net and text encoder learn 100 captioned classes. 4,000 steps (the canvas has twice the
latent positions of a digit). `:smoke` is the tests' seconds-long run.
"""

import ml_collections

from jgen.nn import text as text_lib
from jgen.train.config import experiment_module, parse_arg

_text = experiment_module("text_digits", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _text.get_config("smoke" if smoke else None)
  c.data.canvas = 2
  c.data.random_flip = False      # a flip would swap the digits the caption names
  c.model.num_classes = 100       # label 10 k_left + k_right
  c.ldm.text.templates = text_lib.PAIR_TEMPLATES
  c.sample.prompts = ("a seven and a three,a three and a seven,a one and a four,"
                      "a zero and a zero,a two and a nine,an eight and a five")
  if smoke:
    c.sample.num = c.sample.batch_size = 6
  else:
    c.train.num_steps = 4000
    c.sample.num = c.sample.batch_size = 60
  return c
