"""Conditional GAN (Mirza & Osindero 2014) on DCGAN or ResNet networks. `method = "gan.cgan"`.

The generator concatenates a label embedding to z; the discriminator conditions by projection
(Miyato & Koyama 2018, `model.conditioning = "projection"`) or by one-hot label planes
concatenated to the image (`"concat"`). Critic steps read the real batch's labels and make
fakes of the same labels; the generator step uses the labels of the first real chunk.
`sample(state, rng, n)` makes classes 0, 1, ..., 9, 0, 1, ... (`sample_labels(n)`); any other
labels: `sample_conditional(state, rng, {"label": labels}, n)` (the loop's `Conditional`
contract, `config.sample.labels`) or `sample_with_labels(state, rng, labels, n)`.
`gan.num_classes` must be > 0; any loss of `jgen.gan.LOSSES`.
"""

from __future__ import annotations

from typing import Any

from jgen.gan.adversarial import GAN, gan_from_config

__all__ = ["make_method"]


def make_method(config: Any) -> GAN:
  if not config.gan.num_classes:
    raise ValueError("gan.cgan needs gan.num_classes > 0 (10 for digits, MNIST, CIFAR-10)")
  return gan_from_config(config, name=f"cgan_{config.gan.loss}")
