"""Prompt accuracy of a text-conditioned digits model: the share of samples the digits domain
classifier reads as the digit a prompt asks for, per phrasing, for trained and held-out ones.

  python benchmarks/text_prompts.py --run \
      "experiments/ldm/text_digits.py=/tmp/ldm_text_digits@init_from.workdir='/tmp/vqgan_digits'" \
      --guidance 1 --guidance 3

Each phrasing (``--templates``, `jgen.nn.text.caption` placeholders {word}, {digit}, {a}) is
rendered for the digits 0..9; every prompt goes through ``sample.prompts`` exactly as
``--config.sample.prompts`` would (so an unknown word fails before compiling) and gets
``--per_prompt`` samples from the loop's jitted sampler (EMA parameters) at each guidance
scale. The first five default phrasings are the training templates of ldm_text_digits
(`jgen.nn.text.TEMPLATES`), the rest never occur in training (their new words, such as
"number" or "drawing", are vocabulary words whose embeddings no gradient reached).
`--run`, `--batch` and `--seed` are those of benchmarks/gan_digits.py (`@KEY=VALUE;...`
overrides too).
"""

from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

import gan_digits  # benchmarks/gan_digits.py: its --run/--batch/--seed flags and helpers
from jgen.metrics import domain
from jgen.metrics import feature_net as fnet
from jgen.nn import text
from jgen.train.inference import restore_for_inference
from jgen.train.sampling import jit_sampler

FLAGS = flags.FLAGS
HELD_OUT = ("the number {word}", "a drawing of {a} {word}", "an image of the digit {digit}",
            "a handwritten {digit}", "the numeral {word}", "this is {a} {word}")
flags.DEFINE_multi_string("templates", list(text.TEMPLATES) + list(HELD_OUT),
                          "Phrasings of the prompts ({word}, {digit}, {a}).")
flags.DEFINE_multi_float("guidance", [1.0, 3.0], "Guidance scales w.")
flags.DEFINE_integer("per_prompt", 20, "Samples per prompt (per digit and phrasing).")


def prompt_accuracy(spec: str, workdir: str, overrides: str, w: float, net
                    ) -> tuple[dict[str, float], int]:
  """({phrasing: accuracy} at guidance `w`, the run's step); every phrasing's 10 digits go
  in one prompt list."""
  prompts, asked = [], []
  for template in FLAGS.templates:
    for digit in range(10):
      prompts.append(text.caption(template, digit))
      asked.append(digit)
  config = gan_digits.load_config(spec, overrides)
  config.sample.prompts = ",".join(prompts)
  config.sample.guidance_scale = float(w)
  method, mesh, state = restore_for_inference(config, workdir)
  if list(method.prompts) != prompts:
    raise app.UsageError(f"{spec} did not take sample.prompts: is it a text-conditioned run?")
  fn = jit_sampler(method, mesh)
  labels = np.repeat(np.arange(len(prompts), dtype=np.int32), FLAGS.per_prompt)
  images = []
  for i in range(0, len(labels), FLAGS.batch):
    part = labels[i:i + FLAGS.batch]
    rng = jax.random.fold_in(jax.random.key(FLAGS.seed), i)
    images.append(np.asarray(fn(state, rng, part)))
  logits = net(fnet.to_uint8(np.concatenate(images)))["logits"]
  correct = np.asarray(logits).argmax(-1) == np.asarray(asked)[labels]
  per_template = correct.reshape(len(FLAGS.templates), 10 * FLAGS.per_prompt).mean(-1)
  return {t: float(a) for t, a in zip(FLAGS.templates, per_template)}, int(state.step)


def main(argv):
  del argv
  if len(FLAGS.run) != 1:
    raise app.UsageError("give one --run CONFIG=WORKDIR[@overrides] of a text-conditioned run")
  spec, workdir, overrides = gan_digits.parse_run(FLAGS.run[0])
  net = domain.load_feature_net("digits")
  table = {}
  for w in FLAGS.guidance:
    table[w], step = prompt_accuracy(spec, workdir, overrides, w, net)
  trained = set(text.TEMPLATES)
  print(f"{spec} at step {step}: accuracy of the asked digit ({FLAGS.per_prompt} samples per "
        f"digit and phrasing, domain classifier {net!r}, seed {FLAGS.seed})")
  print("| phrasing | in training | " + " | ".join(f"w = {w:g}" for w in FLAGS.guidance) + " |")
  print("|---|---|" + "---|" * len(FLAGS.guidance))
  for t in FLAGS.templates:
    print(f"| \"{t}\" | {'yes' if t in trained else 'no'} | "
          + " | ".join(f"{100 * table[w][t]:.1f}%" for w in FLAGS.guidance) + " |")
  for name, group in (("training phrasings", [t for t in FLAGS.templates if t in trained]),
                      ("held-out phrasings", [t for t in FLAGS.templates if t not in trained])):
    if group:
      print(f"| mean of the {name} | | " + " | ".join(
          f"{100 * np.mean([table[w][t] for t in group]):.1f}%" for w in FLAGS.guidance) + " |")


if __name__ == "__main__":
  app.run(main)
