"""Latent-diffusion inpainting of digits on the 4x4x8 latents of a frozen vqgan_digits run.

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/ldm/inpaint_digits.py --workdir /tmp/ldm_inpaint \
      --config.init_from.workdir=/tmp/vqgan_digits
  python launch.py --config experiments/ldm/inpaint_digits.py --workdir /tmp/ldm_inpaint \
      --mode=sample     # held-out masked digit | inpainted | original, one row each
  python launch.py --config experiments/ldm/inpaint_digits.py --workdir /tmp/ldm_inpaint \
      --mode=sample --config.sample.source=/path/to/pngs   # centre-masked own images
  python benchmarks/inpaint_digits.py --workdir /tmp/ldm_inpaint   # masked-region PSNR

`diffusion.ldm_image` with ``ldm.task = "inpaint"`` (LDM's inpainting model): the U-Net input is
the noisy latent concatenated with the frozen VQ-GAN's scaled encoding of the masked image
(unknown pixels 0) and the mask area-averaged to 4x4 (8 + 1 condition channels). Masks are
`jgen.data.derived`'s ``mask:box`` (a rectangle of H/4..H/2 per side, redrawn every epoch).
The U-Net is ldm_digits's (ch 32, ch_mult (1, 2), self-attention at 4x4, 2x2 and the middle)
without the label tokens: the masked image is the only condition (LDM's inpainting model is
unconditional otherwise); no classifier-free guidance (``diffusion.cond_drop_prob = 0``; set it
to 0.1 and ``sample.guidance_scale`` to guide). Final images paste the known pixels back
(``ldm.paste``). 2500 steps of batch 64 with 50-step DDIM sampling, within 10 minutes on 2 CPU
cores. ``:smoke`` is the tests' seconds-long run on an 8x8 vqgan_digits:smoke first stage.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.get_config("diffusion.ldm_image", smoke=smoke)
  c.data.source = "derived:mask:box:digits"
  c.ldm.task = "inpaint"
  c.ldm.paste = True              # final image = m * D(z) + (1 - m) * known pixels
  c.model.num_classes = 0
  c.diffusion.cond_drop_prob = 0.0
  c.sample.guidance_scale = 1.0
  if not smoke:
    c.sample.num, c.sample.batch_size = 32, 64
  c.eval.features = "domain:digits"  # translation eval: domain FID of the inpainted digits
  c.eval.num_samples = 16 if smoke else 297  # the whole digits test split
  return c
