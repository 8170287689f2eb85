"""jgen: a JAX/Flax functional suite of image generative models.

Subpackages: `jgen.nn` (networks), `jgen.diffusion` (schedules, losses, samplers, DDPM),
`jgen.autoencoder` (AE, DAE, VAE, VQ-VAE),
`jgen.data` (sources and the sharded batching pipeline), `jgen.train` (the one loop).
"""

from jgen import autoencoder, data, diffusion, nn, train

__version__ = "0.1.0"
__all__ = ["autoencoder", "data", "diffusion", "nn", "train"]
