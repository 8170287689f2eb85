"""Alias of experiments/autoencoder/dae_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoencoder/dae_digits", __file__)
