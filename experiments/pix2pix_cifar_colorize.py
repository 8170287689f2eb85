"""Alias of experiments/translation/pix2pix_cifar_colorize.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/pix2pix_cifar_colorize", __file__)
