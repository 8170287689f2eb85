"""Alias of experiments/flow/realnvp_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("flow/realnvp_digits", __file__)
