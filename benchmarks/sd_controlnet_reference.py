"""Writes the end-to-end Stable Diffusion + ControlNet fixture that
tests/diffusion/test_sd_controlnet.py checks.

  pip install -e ".[reference]"; pip install --no-deps open_clip_torch
  python benchmarks/sd_pipeline_reference.py      # first, if tests/convert/fixtures/sd_pipeline
  python benchmarks/sd_controlnet_reference.py    # is not there yet

Reads the tiny random ``StableDiffusionPipeline`` of `sd_pipeline_reference` (8 x 8 images, a
VAE of two levels: 4 x 4 latents) and builds ``ControlNetModel.from_unet`` of its U-Net with
``conditioning_embedding_out_channels=(8, 16)``: one stride-2 conv, so the control image is
2x the latent's size, the image's 8 x 8 (as SD's (16, 32, 96, 256) put the 512 x 512 control
image on a 64 x 64 latent). Its parameters are perturbed as `controlnet_reference.randomize`
does (N(0, 0.05^2) added; the zero-initialised convs drawn from N(0, 1), `ZERO_SCALE`), so the
control branch changes the images: by ~2e-3 at scale 1 and ~1e-3 at 0.5, 100 and 50 times the
tests' tolerance of 2e-5 (the change saturates: zero convs of N(0, 5^2) give ~2.4e-3).
Written to `--out`:

* ``sd_controlnet/``: the ControlNet's ``save_pretrained`` folder;
* ``sd_controlnet.npz``: the inputs ``latents`` [2, 4, 4, 4] (NCHW, the sd_pipeline fixture's:
  ``RandomState(0)``), ``control`` [2, 8, 8, 3] (NHWC, in [0, 1], what the pipeline is handed
  and the ControlNet reads), the prompt and negative prompt ``ids`` [4, 77]; and the images of
  ``StableDiffusionControlNetPipeline`` (``output_type="np"``, [2, 8, 8, 3] in [0, 1]) after 2
  DDIM steps with guidance 5 at ``controlnet_conditioning_scale`` 1.0 and 0.5 (``images_10``,
  ``images_05``) and 0.0 (``images_00``: the plain pipeline's images), on the scheduler of
  `sd_pipeline_reference` (scaled_linear, trailing spacing, ``set_alpha_to_one``, no
  clipping, ``steps_offset`` 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controlnet_reference import randomize  # noqa: E402  pylint: disable=C0413

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "convert",
                        "fixtures")
PROMPTS = ["a photo of a cat", "an astronaut riding a horse, oil painting"]
NEGATIVE = ["", "blurry"]
HINT_CHANNELS = (8, 16)
SCALES = {"10": 1.0, "05": 0.5, "00": 0.0}
ZERO_SCALE = 1.0  # the zero convs' N(0, 1): a visible change through the tiny VAE decoder


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=FIXTURES)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import (  # pylint: disable=import-outside-toplevel
      ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline,
      StableDiffusionPipeline)

  base = StableDiffusionPipeline.from_pretrained(os.path.join(args.out, "sd_pipeline"),
                                                 safety_checker=None,
                                                 requires_safety_checker=False)
  torch.manual_seed(args.seed)
  controlnet = ControlNetModel.from_unet(
      base.unet, conditioning_embedding_out_channels=HINT_CHANNELS).eval()
  randomize(controlnet, args.seed + 2, zero_scale=ZERO_SCALE)
  scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                            timestep_spacing="trailing")
  pipe = StableDiffusionControlNetPipeline(
      vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
      controlnet=controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)
  latents = np.random.RandomState(0).randn(2, 4, 4, 4).astype(np.float32)
  rng = np.random.default_rng(args.seed)
  control = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
  control[:, 2:6, 2:6] = 1.0  # a bright square: something for the hint encoder to see
  out = {"latents": latents, "control": control}
  with torch.no_grad():
    for tag, scale in SCALES.items():
      out[f"images_{tag}"] = pipe(
          PROMPTS, negative_prompt=NEGATIVE, image=torch.from_numpy(
              np.ascontiguousarray(control.transpose(0, 3, 1, 2))),
          num_inference_steps=2, guidance_scale=5.0, controlnet_conditioning_scale=scale,
          latents=torch.from_numpy(latents), output_type="np").images.astype(np.float32)
    out["ids"] = base.tokenizer(PROMPTS + NEGATIVE, padding="max_length", max_length=77,
                                return_tensors="pt").input_ids.numpy().astype(np.int32)
  folder = os.path.join(args.out, "sd_controlnet")
  controlnet.save_pretrained(folder)
  np.savez_compressed(os.path.join(args.out, "sd_controlnet.npz"), **out)
  print(json.dumps({
      "control_effect_10": float(np.abs(out["images_10"] - out["images_00"]).max()),
      "control_effect_05": float(np.abs(out["images_05"] - out["images_00"]).max()),
      "range": [float(out["images_10"].min()), float(out["images_10"].max())]}))
  for path in sorted(os.path.join(folder, f) for f in os.listdir(folder)):
    print(f"{os.path.getsize(path):8d}  {path}")
  path = os.path.join(args.out, "sd_controlnet.npz")
  print(f"{os.path.getsize(path):8d}  {path}")


if __name__ == "__main__":
  main()
