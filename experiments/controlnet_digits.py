"""Alias of experiments/personalize/controlnet_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("personalize/controlnet_digits", __file__)
