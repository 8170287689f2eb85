"""VQ-GAN first stage on digits (16x16, f = 4: a 4x4 map of codes from 128 8-d vectors).

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan
  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan --mode=eval

L1 + perceptual ('domain': jgen's digits-classifier features, logged; LPIPS needs weight files)
+ hinge PatchGAN with the adaptive weight from step 500, codebook learned by its loss, beta
0.25, dead-code restarts. `:noadv` drops the adversarial term (no critic); `:smoke` and
`:smoke,noadv` are the tests' seconds-long runs. `--mode=eval` prints held-out L1/PSNR, code
usage and reconstruction FID (domain features). Options: `--config.bottleneck.ema=True` (EMA
codebook), `--config.bottleneck.l2_codes=True` (ViT-VQGAN's normalized codes),
`--config.model.ch_mult=(1,2,2,4)` (f = 8, 2x2 latents).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, noadv=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke, adversarial = a.smoke, not a.noadv
  return _base.get_config("vq", smoke=smoke, adversarial=adversarial)
