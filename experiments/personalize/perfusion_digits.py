"""Perfusion on the text-conditioned digits latent diffusion model (`diffusion.perfusion`):
the concept "sks", a kind of 7, from the first four MNIST 7s (thin, sharp strokes).

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/text_digits.py --workdir /tmp/ldm_text_digits \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/personalize/perfusion_digits.py --workdir /tmp/perf_7 \
      --config.init_from.workdir=/tmp/vqgan_digits \
      --config.init_from.base.workdir=/tmp/ldm_text_digits
  python -m jgen.cli.perfusion export --run /tmp/perf_7 --out /tmp/sks.safetensors
                                                     # the concept file (a few KiB)

The base (U-Net and text encoder) stays frozen; the token row of "sks" (64 numbers, from the
row of "seven") and one value offset per cross-attention layer (7 layers, 352 numbers) train
with Adam 1e-2 for 400 steps of the 4 subject images, the gate at beta 0.75, tau 0.1 (the
paper's training values); sampling uses beta 0.7, tau 0.15 (``perfusion.bias``,
``perfusion.temperature``). `:word=zwx,digit=3` trains a second concept on the first four
MNIST 3s. `:noedit` trains the token row alone with the U-Net untouched
(textual inversion of the same model, the comparison); `:dreambooth` fine-tunes the U-Net
and the row (Adam 1e-4, the row at 100x, 800 steps) with the prior-preservation loss on 100
latents the base samples for the class captions (the paper's other comparison). `:canvas`
trains on the two-digit base (`experiments/ldm/text_canvas_digits.py`, its run as
``init_from.base``): the subject images side by side, captioned "a sks and a sks", ...; two
such concepts combine in "a sks and a zwx" (`python -m jgen.cli.perfusion combine`, each
scored in its half). `:smoke` is seconds (four bundled 7s, no ../shared).
"""

import ml_collections

from jgen.diffusion.perfusion import DREAMBOOTH_RULES, PERFUSION_RULES
from jgen.train.config import experiment_module, parse_arg

_text = experiment_module("../ldm/text_digits", beside=__file__)
_canvas = experiment_module("../ldm/text_canvas_digits", beside=__file__)
_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, noedit=False, dreambooth=False, canvas=False, word="sks", digit=7)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = (_canvas if a.canvas else _text).get_config("smoke" if a.smoke else None)
  c.method = "diffusion.perfusion"
  if not a.smoke:
    c.data.source = _base.MNIST_TEST
    c.data.split = "test"           # the MNIST copy in ../shared is its 10k test set
    c.data.eval_split = "test"
  c.data.train_labels = str(a.digit)
  c.data.train_examples = 4
  c.data.batch_size = 4
  c.data.random_flip = False
  _base.text_base(c, lr=1e-2, rules=PERFUSION_RULES)
  c.perfusion = ml_collections.ConfigDict()
  c.perfusion.word = a.word
  c.perfusion.subject_class = a.digit
  c.perfusion.prompts = ""          # "" = "a handwritten [V]"; or "p1,p2,..." using the word
  c.perfusion.train_bias = 0.75
  c.perfusion.train_temperature = 0.1
  c.perfusion.bias = 0.7
  c.perfusion.temperature = 0.15
  # noedit: the token row alone (textual inversion); dreambooth: the row and the U-Net.
  c.perfusion.mode = ("dreambooth" if a.dreambooth else
                      "textual_inversion" if a.noedit else "perfusion")
  c.perfusion.prior_weight = 1.0 if a.dreambooth else 0.0
  c.perfusion.num_class_images = 8 if a.smoke else 100
  c.perfusion.corpus_size = 50 if a.smoke else 500
  c.optim.grad_clip_norm = 0.0
  c.train.ema_decay = 0.99
  c.train.ema_warmup = False
  c.train.num_steps = 4 if a.smoke else 400
  if a.dreambooth:  # dreambooth_digits' recipe: Adam 1e-4, 800 steps of 4 subject + 4 class
    c.optim.rules = DREAMBOOTH_RULES
    c.optim.lr = 1e-4
    c.train.num_steps = 4 if a.smoke else 800
  c.train.checkpoint_every = c.train.num_steps
  c.train.sample_every = 0
  c.train.eval_every = 0
  c.sample.num = 6 if a.smoke else 30
  c.sample.batch_size = c.sample.num
  return c
