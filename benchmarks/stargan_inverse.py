"""Does a trained StarGAN on digits translate, or only encode? G's cycle against the true domains.

  python benchmarks/stargan_inverse.py --run experiments/translation/stargan_digits.py=/tmp/stargan

For the held-out clean digits x and every target domain d (EMA generator, L1 on [0, 1]):

* `G(x, d) vs true`: |G(x, d) - T_d(x)|, the translation against the true one;
* `rec`: |G(G(x, d), clean) - x|, the reconstruction the training loss asks for;
* `rec, noise s`: the same with N(0, s^2) added to G(x, d) first (a reconstruction carried by
  low-amplitude patterns breaks here);
* `G(T_d(x), clean)`: |G(T_d(x), clean) - x|, G's way back applied to the *real* image of
  domain d.

A G that learned the domains scores low in every column. A low `rec` with a high
`G(T_d(x), clean)` means G(., d) and G(., clean) agree on a private code for domain d that
is not the domain's transform: the reconstruction is satisfied without translating.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jgen.train import translations
from jgen.train.config import experiment_module
from jgen.train.inference import restore_for_inference

FLAGS = flags.FLAGS
flags.DEFINE_string("run", "", "CONFIG[:VARIANT]=WORKDIR of a trained stargan_digits run.")
NOISE = (0.02, 0.05, 0.1)


def main(argv):
  del argv
  spec, _, workdir = FLAGS.run.partition("=")
  if not workdir:
    raise app.UsageError("give --run CONFIG[:VARIANT]=WORKDIR")
  path, _, arg = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  config = experiment_module(name, path).get_config(arg or None)
  method, _, state = restore_for_inference(config, workdir)
  if not getattr(method, "synthetic", False):
    raise app.UsageError(f"{spec} is not a StarGAN on synthetic domains (gan.domains)")
  inputs = translations.held_out_inputs(method, config, None)
  x, true = jnp.asarray(inputs["source"]), jnp.asarray(inputs["target"])
  g = state.ema_params["generator"]
  targets = np.asarray(method.targets)
  clean = jnp.zeros((x.shape[0], targets.shape[1]))
  l1 = lambda a, b: float(jnp.mean(jnp.abs(a - b))) / 2.0
  print(f"{spec} (step {int(state.step)}), {x.shape[0]} held-out digits, L1 on [0, 1]")
  print("| target d | G(x, d) vs true | rec | " + " | ".join(f"rec, noise {s}" for s in NOISE)
        + " | G(T_d(x), clean) |")
  print("|---" * (4 + len(NOISE)) + "|")
  for d, d_name in enumerate(method.translation_names):
    c = jnp.tile(jnp.asarray(targets[d])[None], (x.shape[0], 1))
    out = method.generate(g, x, c)
    cols = [l1(out, true[:, d]), l1(method.generate(g, out, clean), x)]
    for i, s in enumerate(NOISE):
      noise = s * jax.random.normal(jax.random.fold_in(jax.random.key(d), i), out.shape)
      cols.append(l1(method.generate(g, jnp.clip(out + noise, -1.0, 1.0), clean), x))
    cols.append(l1(method.generate(g, true[:, d], clean), x))
    print(f"| {d_name} | " + " | ".join(f"{v:.4f}" for v in cols) + " |")


if __name__ == "__main__":
  app.run(main)
