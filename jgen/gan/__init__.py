"""GANs: adversarial losses and penalties (`jgen.gan.losses`), one module per GAN family."""

from jgen.gan.losses import (
    LOSSES,
    clip_weights,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)

__all__ = [
    "LOSSES", "clip_weights", "discriminator_loss", "generator_loss", "gradient_penalty",
    "r1_penalty",
]
