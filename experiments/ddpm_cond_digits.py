"""Alias of experiments/ddpm/cond_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/cond_digits", __file__)
