"""Alias of experiments/autoencoder/vae_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoencoder/vae_digits", __file__,
                   lambda a: a if a == "smoke" else "likelihood=" + a)
