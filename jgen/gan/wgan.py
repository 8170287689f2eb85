"""Wasserstein GAN with weight clipping (Arjovsky et al. 2017). `method = "gan.wgan"`.

The critic minimizes E[D(G(z))] - E[D(x)] and every critic weight is clipped to
[-gan.clip, gan.clip] (0.01) after each of its `gan.n_critic` (5) steps; RMSProp with learning
rate 5e-5 for both networks in the configs (the paper's Algorithm 1). The paper's extra critic
iterations (100 for the first 25 generator steps and every 500th) are left out: every step
runs `n_critic` critic steps. `wasserstein` in the logs is the critic's estimate of W1 (up to
the Lipschitz constant the clipping implies).
"""

from __future__ import annotations

from typing import Any

from jgen.gan.adversarial import GAN, gan_from_config

__all__ = ["make_method"]


def make_method(config: Any) -> GAN:
  if not config.gan.clip > 0:
    raise ValueError(f"gan.wgan needs gan.clip > 0 (0.01 in the paper), got {config.gan.clip}")
  return gan_from_config(config, loss="wasserstein", gp_weight=0.0, r1_gamma=0.0, num_classes=0,
                         name="wgan")
