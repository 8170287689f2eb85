"""Alias of experiments/gan/ddgan_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/ddgan_digits", __file__)
