"""jgen: a JAX/Flax functional suite of image generative models.

Subpackages (lower layers first; a module imports only its own layer or lower ones):
`jgen.nn` (networks and building blocks), `jgen.data` (sources and the sharded batching
pipeline), `jgen.train` (train state, rules, optimizers, checkpoints, the loop),
`jgen.autoencoder` (AE, DAE, VAE, VQ-VAE, first stages), `jgen.flow` (RealNVP, Glow),
`jgen.autoregressive` (PixelCNN, transformer priors), `jgen.diffusion` (schedules, losses,
samplers, DDPM and the methods built on it), `jgen.gan` (adversarial updates and GAN families),
`jgen.metrics` (FID, KID, IS, precision/recall, PPL), `jgen.convert` (published checkpoints in)
and `jgen.export` (out).
"""

from jgen import autoencoder, data, diffusion, nn, train

__version__ = "0.1.0"
__all__ = ["autoencoder", "data", "diffusion", "nn", "train"]
