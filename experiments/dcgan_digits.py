"""Alias of experiments/gan/dcgan_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/dcgan_digits", __file__, lambda a: a if a == "smoke" else "loss=" + a)
