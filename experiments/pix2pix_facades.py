"""Alias of experiments/translation/pix2pix_facades.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/pix2pix_facades", __file__)
