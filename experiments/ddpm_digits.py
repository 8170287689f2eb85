"""Alias of experiments/ddpm/digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/digits", __file__)
