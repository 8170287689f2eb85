"""WGAN with weight clipping on 16x16 digits: 5 critic steps per generator step, clip 0.01,
RMSProp 5e-5 (Arjovsky et al. 2017, Algorithm 1).

  python launch.py --config experiments/wgan_digits.py --workdir /tmp/wgan_digits

The loop's batch is 5 x 64 real images (one 64-image chunk per critic step). Variant `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module

_dcgan = experiment_module("dcgan_digits", __file__)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown variant {arg!r} of wgan_digits; use 'smoke'")
  c = _dcgan.gan_base(smoke=arg == "smoke", n_critic=5)
  c.method = "gan.wgan"
  c.gan.loss = "wasserstein"
  c.gan.clip = 0.01
  c.optim = ml_collections.ConfigDict(dict(name="rmsprop", lr=5e-5, decay=0.99, eps=1e-8,
                                           grad_clip_norm=0.0))
  c.optim_d = c.optim.copy_and_resolve_references()
  if arg != "smoke":  # clipping + RMSProp 5e-5 learns slowly; 6,000 steps fit ~9 CPU minutes
    c.train.num_steps = 6000
    c.train.checkpoint_every = 2000
    c.train.sample_every = 2000
  return c
