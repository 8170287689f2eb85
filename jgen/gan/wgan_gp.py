"""WGAN with gradient penalty (Gulrajani et al. 2017). `method = "gan.wgan_gp"`.

The critic minimizes E[D(G(z))] - E[D(x)] + lambda E[(||grad D(x_hat)|| - 1)^2] on random
interpolates x_hat of real and fake images (`gan.gp_weight` = lambda = 10), `gan.n_critic` = 5
critic steps per generator step, no weight clipping, and a critic without batch norm ('layer' or
'none'). Adam(1e-4, b1=0, b2=0.9) in the configs (the paper's Algorithm 1); the CIFAR-10 ResNet
config decays the learning rate to 0 over the run (cosine; the paper decays linearly).
"""

from __future__ import annotations

from typing import Any

from jgen.gan.adversarial import GAN, gan_from_config

__all__ = ["make_method"]


def make_method(config: Any) -> GAN:
  if not config.gan.gp_weight > 0:
    raise ValueError(f"gan.wgan_gp needs gan.gp_weight > 0 (10 in the paper), got "
                     f"{config.gan.gp_weight}")
  return gan_from_config(config, loss="wasserstein", clip=0.0, name="wgan_gp")
