"""Alias of experiments/first_stage/vqgan_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("first_stage/vqgan_digits", __file__, lambda a: a.replace("_", ","))
