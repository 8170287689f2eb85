"""Alias of experiments/autoencoder/ae_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoencoder/ae_digits", __file__)
