"""pix2pix on scikit-learn's digits at 16x16: Sobel edge maps -> the digit (`derived:edges:digits`).

  python launch.py --config experiments/translation/pix2pix_digits.py --workdir /tmp/pix2pix_digits
  python launch.py --config experiments/translation/pix2pix_digits.py \
      --workdir /tmp/pix2pix_digits --mode=eval
  python launch.py --config experiments/translation/pix2pix_digits.py \
      --workdir /tmp/pix2pix_digits --mode=sample

Training writes grids of held-out `edges | translation | digit` rows to samples/ every 1,000
steps; `--mode=eval` reports L1, PSNR and the digits judge's content/domain figures. 3,000 steps
of batch 32 train in about 3 CPU minutes on 2 shared cores (40-55 ms a step, 3 to 6 minutes of
wall time measured while other jobs ran); held-out PSNR 22.7 dB and L1 0.047 at the end, against
11.0 dB and 0.20 for the untranslated edge maps. U-Net 4 downs (ngf 16), PatchGAN n_layers 2
(ndf 16, a 34x34 receptive field); see experiments/translation/base.py. Variant: `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  return _base.pix2pix_base(smoke=a.smoke)
