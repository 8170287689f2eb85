"""Alias of experiments/translation/stargan_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/stargan_digits", __file__)
