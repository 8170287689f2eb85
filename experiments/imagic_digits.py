"""Alias of experiments/personalize/imagic_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("personalize/imagic_digits", __file__)
