"""GANs: adversarial losses and penalties (`jgen.gan.losses`), the pure adversarial updates
(`jgen.gan.updates`) and one module per GAN family composing them: dcgan, cgan, wgan,
wgan_gp (`jgen.gan.adversarial`), and the image-to-image translators pix2pix, cyclegan (with
its image history buffer, `jgen.gan.history`) and stargan (domains of `jgen.gan.domains`)."""

from jgen.gan.losses import (
    LOSSES,
    clip_weights,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from jgen.gan.updates import (
    Regularizer,
    clip_projection,
    discriminator_update,
    generator_update,
    module_apply,
    path_length,
    r1,
    update,
)

__all__ = [
    "LOSSES", "Regularizer", "clip_projection", "clip_weights", "discriminator_loss",
    "discriminator_update", "generator_loss", "generator_update", "gradient_penalty",
    "module_apply", "path_length", "r1", "r1_penalty", "update",
]
