"""Autoencoders: AE, denoising AE, VAE and VQ-VAE over one conv encoder/decoder family.

Methods of the loop (`config.method`): `autoencoder.ae`, `autoencoder.dae`, `autoencoder.vae`,
`autoencoder.vqvae`. The pieces are pure and usable without the loop: the networks, the VAE
densities (`likelihoods`, which is `jgen.ops.likelihoods`), and the vector quantizer
(`quantizer`), which latent models reuse.
"""

from jgen.ops import quantizer
from jgen.autoencoder.ae import Autoencoder, corrupt
from jgen.autoencoder.common import reconstruction_error
from jgen.nn.autoencoder import Decoder, Encoder, init_encoder_decoder
from jgen.ops.quantizer import (QuantizerOutput, codebook_perplexity,
                                        ema_codebook_update, nearest_code, quantize,
                                        restart_dead_codes)
from jgen.autoencoder.vae import VAE, iwae_bound, kl_weight, lerp
from jgen.autoencoder.vqvae import VQVAE, masked_optimizer
from jgen.ops import likelihoods
from jgen.ops.image import psnr
from jgen.ops.likelihoods import (bernoulli_log_prob, binarize, diag_gaussian_log_prob,
                                  discretized_logistic_log_prob, gaussian_kl, gaussian_log_prob,
                                  reparameterize, standard_normal_log_prob)

__all__ = [
    "Autoencoder", "Decoder", "Encoder", "QuantizerOutput", "VAE", "VQVAE",
    "bernoulli_log_prob", "binarize", "codebook_perplexity", "corrupt", "diag_gaussian_log_prob",
    "discretized_logistic_log_prob", "ema_codebook_update", "gaussian_kl", "gaussian_log_prob",
    "init_encoder_decoder", "iwae_bound", "kl_weight", "lerp", "likelihoods", "masked_optimizer",
    "nearest_code", "psnr", "quantize", "quantizer", "reconstruction_error", "reparameterize",
    "restart_dead_codes", "standard_normal_log_prob",
]
