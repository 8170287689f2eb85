"""Digests of existing configs' parameter trees and fixed-seed samples, to compare two commits.

  python benchmarks/config_digests.py OUT.json        # at each commit (PYTHONPATH=<checkout>)
  python benchmarks/config_digests.py OUT.json --configs dcgan_digits,glow_digits
  python benchmarks/config_digests.py --compare A.json B.json

For each config: the method's ``init`` at key 0 on a zero batch (the parameter tree's paths and
values hashed together, and its size), and, where the method samples from noise, 2 samples at
key 1 (rounded to 1e-5, hashed). Equal digests at two commits mean the change kept every
parameter tree, count (35,746,307 for ddpm_cifar) and fixed-seed output of these configs.
Configs that need another run's work directory (latent diffusion on a first stage) are left out.
Names are the flat ``experiments/<name>.py`` ones, which every commit until 0.2 has (aliases of
``experiments/<family>/<name>.py`` since the configs moved into family folders).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

CONFIGS = ("ddpm_cifar", "ddpm_digits", "ddpm_cond_digits", "vqgan_digits", "klae_digits",
           "controlnet_digits", "ddgan_digits", "noisy_classifier_digits")
NO_NOISE_SAMPLES = ("controlnet_digits", "noisy_classifier_digits", "pix2pix_digits",
                    "cyclegan_digits", "stargan_digits")  # translate / classify


def _digest(tree) -> tuple[str, int]:
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, x in leaves:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.asarray(x, np.float32).tobytes())
  return h.hexdigest()[:16], sum(int(np.size(x)) for _, x in leaves)


def digests(root: str, names: tuple[str, ...] = CONFIGS) -> dict[str, dict]:
  from jgen.train.config import experiment_module  # pylint: disable=import-outside-toplevel
  from jgen.train.method import load_method  # pylint: disable=import-outside-toplevel
  out = {}
  for name in names:
    config = experiment_module(name, os.path.join(root, "experiments", f"{name}.py")).get_config()
    method = load_method(config)
    size, channels = config.data.image_size, config.data.channels
    image = jnp.zeros((2, size, size, channels))
    batch = {"image": image, "label": jnp.zeros((2,), jnp.int32), "source": image,
             "target": image}
    state = method.init(jax.random.key(0), batch)
    params, count = _digest(state.params)
    row = {"params": params, "count": count}
    if name not in NO_NOISE_SAMPLES:
      # An autoencoder's grids: `sample` before the `Samples`/`Reconstructs` split (issue 33),
      # `reconstructions` after it; the same function, so the digests compare across it.
      draw = method.sample if hasattr(method, "sample") else method.reconstructions
      images = jax.jit(draw, static_argnums=2)(state, jax.random.key(1), 2)
      row["samples"] = hashlib.sha256(np.asarray(images, np.float32).round(5).tobytes()
                                      ).hexdigest()[:16]
    out[name] = row
    print(name, row, flush=True)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out", nargs="?", help="where to write this commit's digests")
  parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
  parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
  args = parser.parse_args()
  if args.compare:
    a, b = (json.load(open(p)) for p in args.compare)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    print("identical" if not changed else f"changed: {changed}")
    sys.exit(1 if changed else 0)
  import jgen  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(jgen.__file__)))
  print("jgen from", root)
  result = digests(root, tuple(args.configs.split(",")))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
