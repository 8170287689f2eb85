"""Alias of experiments/personalize/textual_inversion_digits.py,
kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("personalize/textual_inversion_digits", __file__)
