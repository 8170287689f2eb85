"""Alias of experiments/distill/ct_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("distill/ct_digits", __file__)
