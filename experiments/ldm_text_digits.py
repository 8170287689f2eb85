"""Alias of experiments/ldm/text_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ldm/text_digits", __file__)
