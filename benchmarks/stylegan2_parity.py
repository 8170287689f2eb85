"""Prints jgen's StyleGAN2 against NVlabs' reference on the parity fixture, option by option.

    python benchmarks/stylegan2_parity.py

Reads ``tests/convert/fixtures/stylegan2.npz`` (written by ``benchmarks/stylegan2_reference.py``
from NVlabs' code), builds the NVlabs-layout pickle of each variant (`tests/convert/
nvlabs_pickle.py`), converts it (`jgen.convert.stylegan2`) and prints the largest absolute
difference of each output with every reference option on, then with one option at a time back
at today's default (``resample="fir"``, no ``conv_clamp``, ``flatten="nhwc"``), and the largest
magnitude of each output for scale.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile

import jax
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from jgen.convert import stylegan2 as sg2_convert  # noqa: E402
from jgen.gan.stylegan2 import make_method  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402
from tests.convert import nvlabs_pickle  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "convert", "fixtures", "stylegan2.npz")


def _config(values):
  c = experiment_module("stylegan2_transfer", beside=os.path.join(
      ROOT, "experiments", "gan", "x.py")).get_config(None)
  for key, value in {**values, "data.batch_size": 4}.items():
    *parents, last = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[last] = value
  return c


def outputs(method, converted, fx, v):
  g, d = converted["ema"], converted["params"]["discriminator"]
  labels = fx[f"{v}/labels"] if method.num_classes else None
  img = method.render(g, converted["w_avg"], fx[f"{v}/z"], labels, jax.random.key(0), psi=0.7,
                      noise_mode="const")
  scores, _ = method.discriminate(d, {}, fx[f"{v}/images"].transpose(0, 2, 3, 1), labels)
  return {"image (psi 0.7, const noise)": (img, fx[f"{v}/img_const"].transpose(0, 2, 3, 1)),
          "D score": (scores, fx[f"{v}/scores"])}


def main() -> None:
  with np.load(FIXTURE) as f:
    fx = {k: f[k] for k in f.files}
  print("| variant | networks | output | max abs diff | max abs ref |")
  print("|---|---|---|---|---|")
  for v in ("uncond", "cond"):
    part = lambda net: {k.split("/", 2)[2]: a for k, a in fx.items()  # noqa: E731
                        if k.startswith(f"{v}/{net}/")}
    kw = lambda net: json.loads(str(fx[f"{v}/{net}_kwargs"]))  # noqa: E731
    data = nvlabs_pickle.network_pickle({
        "G_ema": ("Generator", part("G"), kw("G")),
        "D": ("Discriminator", part("D"), kw("D"))})
    with tempfile.NamedTemporaryFile(suffix=".pkl") as tmp:
      tmp.write(data)
      tmp.flush()
      converted = sg2_convert.read(tmp.name)
    method = make_method(_config(converted["values"]))
    variants = {
        "reference options": method,
        "resample='fir' (today's default)": dataclasses.replace(
            method, generator=method.generator.clone(resample="fir"),
            discriminator=method.discriminator.clone(resample="fir")),
        "no conv_clamp": dataclasses.replace(
            method, generator=method.generator.clone(conv_clamp=None),
            discriminator=method.discriminator.clone(conv_clamp=None)),
        "flatten='nhwc'": dataclasses.replace(
            method, discriminator=method.discriminator.clone(flatten="nhwc")),
    }
    for name, m in variants.items():
      for what, (got, want) in outputs(m, converted, fx, v).items():
        if name == "flatten='nhwc'" and what != "D score":
          continue
        err = float(np.abs(np.asarray(got) - want).max())
        print(f"| {v} | {name} | {what} | {err:.2g} | {float(np.abs(want).max()):.3g} |")


if __name__ == "__main__":
  main()
