"""pix2pix on CMP Facades (labels -> photo), the paper's settings: 256x256, batch 1, 200 epochs.

The data is not on this machine: get the pix2pix `facades` folder (train/ val/ test/ of
512x256 `A|B` images; 400 training pairs, A the photo, B the label map) and point the config at
it. The paper translates labels -> photos, B -> A, hence `paired_btoa:`:

  python launch.py --config experiments/translation/pix2pix_facades.py \
      --workdir /tmp/pix2pix_facades \
      --config.data.source=paired_btoa:$DATA/facades

400 pairs x 200 epochs = 80,000 steps of batch 1. U-Net 8 downs (ngf 64), 70x70 PatchGAN,
batch norm (each test image normalized by its own statistics), lambda = 100, mirroring; see
experiments/translation/base.py. Variant: `:smoke` (8 steps of a tiny network at 32x32, for a
run on the same folder layout).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

DATA = "~/data/pix2pix/facades"  # override with --config.data.source=paired_btoa:PATH

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.paper_pix2pix(_base.pix2pix_base(), source=f"paired_btoa:{DATA}",
                          train_images=400)
  c.data.eval_split = "val"
  if a.smoke:
    _base.shrink_paper_config(c)
  return c
