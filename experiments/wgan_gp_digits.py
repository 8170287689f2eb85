"""WGAN-GP on 16x16 digits: 5 critic steps per generator step, gradient penalty lambda = 10,
Adam(1e-4, b1=0, b2=0.9), a critic with layer norm instead of batch norm (Gulrajani et al. 2017).

  python launch.py --config experiments/wgan_gp_digits.py --workdir /tmp/wgan_gp_digits

The loop's batch is 5 x 64 real images (one 64-image chunk per critic step). Variant `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module

_dcgan = experiment_module("dcgan_digits", __file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of wgan_gp_digits; use 'smoke'")
  c = _dcgan.gan_base(smoke=arg == "smoke", n_critic=5)
  c.method = "gan.wgan_gp"
  c.gan.loss = "wasserstein"
  c.gan.gp_weight = 10.0
  c.model.d_norm = "layer"
  c.optim.lr = 1e-4
  c.optim.b1 = 0.0
  c.optim.b2 = 0.9
  c.optim_d = c.optim.copy_and_resolve_references()
  return c
