"""Alias of experiments/ldm/digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ldm/digits", __file__)
