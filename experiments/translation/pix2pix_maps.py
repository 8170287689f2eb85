"""pix2pix on Google Maps (aerial photo -> map), the paper's settings: 256x256, batch 1, 200
epochs.

The data is not on this machine: get the pix2pix `maps` folder (train/ val/ of 1200x600
`A|B` images; 1,096 training pairs, A the aerial photo, B the map) and point the config at it.
The paper's maps row translates aerial -> map, A -> B, hence `paired:`:

  python launch.py --config experiments/translation/pix2pix_maps.py --workdir /tmp/pix2pix_maps \
      --config.data.source=paired:$DATA/maps

1,096 pairs x 200 epochs = 219,200 steps of batch 1 (images resized to 256x256, as the paper's
loader does before cropping). Networks and objective as experiments/translation/pix2pix_facades.py.
Variant: `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

DATA = "~/data/pix2pix/maps"  # override with --config.data.source=paired:PATH

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.paper_pix2pix(_base.pix2pix_base(), source=f"paired:{DATA}", train_images=1096)
  c.data.eval_split = "val"
  if a.smoke:
    _base.shrink_paper_config(c)
  return c
