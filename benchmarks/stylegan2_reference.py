"""Writes the StyleGAN2-ADA parity fixture: tiny random NVlabs networks, their weights and outputs.

    git --git-dir=$(fetched NVlabs/stylegan2-ada-pytorch) archive HEAD | tar -x -C /tmp/sg2ada
    python benchmarks/stylegan2_reference.py --nvlabs /tmp/sg2ada

Imports ``training.networks`` from the given checkout (NVlabs' licence is non-commercial: none of
its files is in this repository) and runs on CPU through the reference's own fallbacks
(``upfirdn2d`` / ``bias_act`` take their ``impl='ref'`` paths off CUDA). Two variants:

* ``uncond``: 16x16 RGB, z/w 16, a 2-layer mapping, channels 32/16/8 (channel_base 128,
  channel_max 32), a residual discriminator, mbstd group 4, ``conv_clamp=256`` (the pretrained
  configs' value);
* ``cond``: 8x8, 3 classes (the mapping embed and the projection discriminator, whose label
  mapping has 2 layers), the 'orig' discriminator, ``conv_clamp=0.5`` (small, so the clamp acts).

Every parameter and buffer is redrawn (noise strengths, biases, w_avg, the noise_const maps:
nothing hides behind a zero; the mapping layers' stored weights at the reference's own scale,
N(0, 1) / lr_multiplier), ``num_fp16_res=0`` (float32 throughout). The ``.npz`` holds, per
variant, each network's state dict (``<v>/G/<torch name>``, ``<v>/D/...``), its init kwargs as
JSON (``<v>/G_kwargs``), the inputs (z, one-hot c, images NCHW) and the reference outputs: w
(psi 1), the truncated ws (psi 0.7), images with noise_mode 'const' and 'none' and the
discriminator's scores. ``tests/convert/test_stylegan2.py`` rebuilds an NVlabs-layout pickle from
it, converts it and compares; with ``$JGEN_NVLABS_STYLEGAN2`` and torch it also runs the
reference live (``build`` below).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "convert", "fixtures",
                   "stylegan2.npz")

VARIANTS: dict[str, dict[str, Any]] = {
    "uncond": dict(
        G=dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
               mapping_kwargs=dict(num_layers=2),
               synthesis_kwargs=dict(channel_base=128, channel_max=32, num_fp16_res=0,
                                     conv_clamp=256)),
        D=dict(c_dim=0, img_resolution=16, img_channels=3, architecture="resnet",
               channel_base=128, channel_max=32, num_fp16_res=0, conv_clamp=256,
               epilogue_kwargs=dict(mbstd_group_size=4)),
        batch=4),
    "cond": dict(
        G=dict(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
               mapping_kwargs=dict(num_layers=2),
               synthesis_kwargs=dict(channel_base=64, channel_max=16, num_fp16_res=0,
                                     conv_clamp=0.5)),
        D=dict(c_dim=3, img_resolution=8, img_channels=3, architecture="orig",
               channel_base=64, channel_max=16, num_fp16_res=0, conv_clamp=0.5,
               mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_group_size=2)),
        batch=4),
}
PSI = 0.7


def networks(nvlabs: str, variant: str, seed: int = 0) -> tuple[Any, Any, Any]:
  """The reference G and D of `variant` with every tensor redrawn, and the torch generator
  that drew them (it draws the inputs next)."""
  import torch  # pylint: disable=import-outside-toplevel
  if nvlabs not in sys.path:
    sys.path.insert(0, nvlabs)
  from training import networks as nv  # pylint: disable=import-outside-toplevel
  spec = VARIANTS[variant]
  torch.manual_seed(seed)
  G = nv.Generator(**spec["G"]).eval()
  D = nv.Discriminator(**spec["D"]).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for net in (G, D):
      for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        if name.endswith("resample_filter"):
          continue
        scale = 0.3 if name.endswith(("bias", "noise_strength")) else 1.0
        if name.startswith("mapping.") and name.endswith(".weight") and ".fc" in name:
          scale = 100.0  # the stored weight is randn / lr_multiplier, as the reference draws it
        t.copy_(torch.randn(t.shape, generator=gen) * scale)
  return G, D, gen


def build(nvlabs: str, variant: str, seed: int = 0) -> dict[str, Any]:
  """Weights, inputs and reference outputs of `variant` (module docstring)."""
  import torch  # pylint: disable=import-outside-toplevel
  spec = VARIANTS[variant]
  G, D, gen = networks(nvlabs, variant, seed)
  b, c_dim = spec["batch"], spec["G"]["c_dim"]
  z = torch.randn([b, spec["G"]["z_dim"]], generator=gen)
  labels = torch.arange(b) % max(c_dim, 1)
  c = (torch.nn.functional.one_hot(labels, c_dim).float() if c_dim
       else torch.zeros([b, 0]))
  res, ch = spec["D"]["img_resolution"], spec["D"]["img_channels"]
  images = torch.randn([b, ch, res, res], generator=gen)
  with torch.no_grad():
    ws = G.mapping(z, c)
    ws_trunc = G.mapping(z, c, truncation_psi=PSI)
    img_const = G.synthesis(ws_trunc, noise_mode="const")
    img_none = G.synthesis(ws, noise_mode="none")
    img_unfused = G.synthesis(ws_trunc, noise_mode="const", fused_modconv=False)
    scores = D(images, c)
  npy = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
  out = {"G_kwargs": json.dumps(spec["G"]), "D_kwargs": json.dumps(spec["D"]),
         "z": npy(z), "c": npy(c), "labels": labels.numpy().astype(np.int32),
         "images": npy(images), "w": npy(ws[:, 0]), "ws_trunc": npy(ws_trunc),
         "img_const": npy(img_const), "img_none": npy(img_none),
         "img_unfused": npy(img_unfused), "scores": npy(scores[:, 0])}
  for key, net in (("G", G), ("D", D)):
    for name, t in net.state_dict().items():
      out[f"{key}/{name}"] = npy(t)
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nvlabs", required=True,
                      help="a checkout of NVlabs/stylegan2-ada-pytorch (its training/ folder)")
  parser.add_argument("--out", default=OUT)
  args = parser.parse_args(argv)
  arrays = {}
  for variant in VARIANTS:
    for key, value in build(os.path.abspath(args.nvlabs), variant).items():
      arrays[f"{variant}/{key}"] = np.asarray(value)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out}: {len(arrays)} arrays, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
  main()
