"""Writes the diffusers ControlNet references that tests/convert/test_controlnet.py checks.

  pip install -e ".[bench]"     # torch + diffusers; jgen itself never imports them
  python benchmarks/controlnet_reference.py --out tests/convert/fixtures

Builds a tiny random Stable-Diffusion-style ``UNet2DConditionModel`` from a config dict (no
network): block_out_channels (8, 16), one ResNet per level, cross-attention on level 0 only
(``CrossAttnDownBlock2D, DownBlock2D``) and in the middle, 2 heads, a 12-wide context, 4 groups;
and ``ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))``, whose
condition embedding downsamples once, so the hint is 2x the latent's size (SD's (16, 32, 96,
256) downsample 3 times: 8x). Every parameter is perturbed by N(0, 0.05^2) (GroupNorm scales
and biases off 1 and 0, the ControlNet's copy off the U-Net's), and the zero-initialised convs
(``controlnet_cond_embedding.conv_out``, ``controlnet_down_blocks``, ``controlnet_mid_block``)
are drawn from N(0, 0.2^2), so that the residuals are not zero and the test is not trivial.
Written to `--out`:

* ``controlnet_unet/``, ``controlnet/``: the two models' ``save_pretrained`` folders;
* ``controlnet.npz``, NHWC: the inputs ``latents`` [2, 8, 12, 4] (not square, so H and W
  cannot be swapped unnoticed), ``hint`` [2, 16, 24, 3] in [0, 1] (what diffusers' pipelines
  pass), ``context`` [2, 5, 12], ``timesteps`` [2]; the residuals ``down_{i}_{s}`` (i = 0..3)
  and ``mid_{s}`` at ``conditioning_scale`` s = 1.0 and 0.5 (tag ``10`` / ``05``) and with
  ``guess_mode=True`` at 1.0 (tag ``guess``); the controlled U-Net's output ``out_{s}`` (its
  ``down_block_additional_residuals`` / ``mid_block_additional_residual`` set to them) and the
  uncontrolled ``out_base``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=[8, 16], layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=12,
    attention_head_dim=2, norm_num_groups=4)
HINT_CHANNELS = (8, 16)
ZERO_INIT = ("controlnet_cond_embedding.conv_out.", "controlnet_down_blocks.",
             "controlnet_mid_block.")
SCALES = {"10": 1.0, "05": 0.5}


def randomize(model, seed: int, scale: float = 0.05, zero_scale: float = 0.2) -> None:
  """Adds N(0, scale^2) to every parameter; draws the zero-initialised ones (`ZERO_INIT`) from
  N(0, zero_scale^2)."""
  import torch  # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if name.startswith(ZERO_INIT):
        p.copy_(zero_scale * noise)
      else:
        p.add_(scale * noise)


def nchw(x: np.ndarray):
  import torch  # pylint: disable=import-outside-toplevel
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t) -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1)).astype(np.float32)


def build(unet_config: dict, hint_channels: tuple[int, ...], seed: int, **controlnet_kw):
  """A randomized U-Net and its ControlNet (`randomize`), both in eval mode."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import (  # pylint: disable=import-outside-toplevel
      ControlNetModel, UNet2DConditionModel)
  torch.manual_seed(seed)
  unet = UNet2DConditionModel(**unet_config).eval()
  controlnet = ControlNetModel.from_unet(
      unet, conditioning_embedding_out_channels=hint_channels, **controlnet_kw).eval()
  randomize(unet, seed + 1)
  randomize(controlnet, seed + 2)
  return unet, controlnet


def reference(unet, controlnet, latents, hint, context, timesteps, *, scale: float,
              guess_mode: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
  """diffusers' residuals (down..., mid) and the controlled U-Net's output, NHWC."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    args = (nchw(latents), torch.from_numpy(timesteps), torch.from_numpy(context))
    down, mid = controlnet(*args, controlnet_cond=nchw(hint), conditioning_scale=scale,
                           guess_mode=guess_mode, return_dict=False)
    out = unet(*args, down_block_additional_residuals=down,
               mid_block_additional_residual=mid).sample
  return [nhwc(r) for r in (*down, mid)], nhwc(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="tests/convert/fixtures")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  import torch  # pylint: disable=import-outside-toplevel

  unet, controlnet = build(UNET_CONFIG, HINT_CHANNELS, args.seed)
  rng = np.random.default_rng(args.seed)
  out = {"latents": rng.standard_normal((2, 8, 12, 4)).astype(np.float32),
         "hint": rng.uniform(0, 1, (2, 16, 24, 3)).astype(np.float32),
         "context": rng.standard_normal((2, 5, 12)).astype(np.float32),
         "timesteps": np.array([10, 700], np.int64)}
  inputs = (out["latents"], out["hint"], out["context"], out["timesteps"])
  for tag, scale in (*SCALES.items(), ("guess", 1.0)):
    residuals, result = reference(unet, controlnet, *inputs, scale=scale,
                                  guess_mode=tag == "guess")
    for i, r in enumerate(residuals[:-1]):
      out[f"down_{i}_{tag}"] = r
    out[f"mid_{tag}"] = residuals[-1]
    out[f"out_{tag}"] = result
  with torch.no_grad():
    out["out_base"] = nhwc(unet(nchw(out["latents"]), torch.from_numpy(out["timesteps"]),
                                torch.from_numpy(out["context"])).sample)

  os.makedirs(args.out, exist_ok=True)
  unet.save_pretrained(os.path.join(args.out, "controlnet_unet"))
  controlnet.save_pretrained(os.path.join(args.out, "controlnet"))
  np.savez_compressed(os.path.join(args.out, "controlnet.npz"), **out)
  print(json.dumps({
      "out": args.out,
      "residual_abs_max": float(max(np.abs(out[k]).max() for k in out if k.endswith("_10"))),
      "out_abs_max": float(np.abs(out["out_10"]).max()),
      "control_effect": float(np.abs(out["out_10"] - out["out_base"]).max())}))
  for name in ("controlnet_unet", "controlnet", "controlnet.npz"):
    path = os.path.join(args.out, name)
    files = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
    for f in sorted(files):
      print(f"{os.path.getsize(f):8d}  {f}")


if __name__ == "__main__":
  main()
