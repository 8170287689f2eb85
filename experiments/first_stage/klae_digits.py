"""KL autoencoder first stage (LDM's AutoencoderKL) on digits (16x16, f = 4: 4x4x4 latents).

  python launch.py --config experiments/first_stage/klae_digits.py --workdir /tmp/klae
  python launch.py --config experiments/first_stage/klae_digits.py --workdir /tmp/klae --mode=eval

Diagonal-Gaussian posterior, KL weight 1e-6 (on per-image sums, as LDM), L1 + perceptual
('domain': jgen's digits-classifier features, logged; LPIPS needs weight files) + hinge
PatchGAN with the adaptive weight (disc weight 0.5) from step 500. `:noadv` drops the
adversarial term; `:smoke` / `:smoke,noadv` are the tests' runs. `--mode=eval` prints held-out
L1/PSNR/KL and reconstruction FID (domain features, decoded from the posterior mean).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, noadv=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke, adversarial = a.smoke, not a.noadv
  return _base.get_config("kl", smoke=smoke, adversarial=adversarial)
