"""Alias of experiments/gan/wgan_gp_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/wgan_gp_digits", __file__)
