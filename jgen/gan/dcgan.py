"""GAN (Goodfellow et al. 2014) with DCGAN networks (Radford et al. 2016). `method = "gan.dcgan"`.

One discriminator step per generator step (`gan.n_critic`, 1 by default); the loss is
`gan.loss`: 'non_saturating' (the paper's practical choice, default), 'minimax' (the original
objective), or 'hinge' / 'least_squares' (LSGAN). Adam(2e-4, b1=0.5) for both networks in the
configs (the DCGAN paper). The architecture is `model.arch` ('dcgan' or 'resnet').
"""

from __future__ import annotations

from typing import Any

from jgen.gan.adversarial import GAN, gan_from_config

__all__ = ["make_method"]

LOSSES = ("non_saturating", "minimax", "hinge", "least_squares")


def make_method(config: Any) -> GAN:
  if config.gan.loss not in LOSSES:
    raise ValueError(f"gan.dcgan takes gan.loss in {LOSSES}, got {config.gan.loss!r} (the "
                     "Wasserstein loss is gan.wgan / gan.wgan_gp)")
  return gan_from_config(config, num_classes=0, name=f"dcgan_{config.gan.loss}")
