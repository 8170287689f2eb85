"""Alias of experiments/translation/stargan_celeba.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/stargan_celeba", __file__)
