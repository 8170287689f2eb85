"""Alias of experiments/gan/cgan_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/cgan_digits", __file__)
