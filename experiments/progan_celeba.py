"""Alias of experiments/gan/progan_celeba.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/progan_celeba", __file__)
