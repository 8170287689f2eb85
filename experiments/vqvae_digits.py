"""Alias of experiments/autoencoder/vqvae_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoencoder/vqvae_digits", __file__)
