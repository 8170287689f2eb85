"""Alias of experiments/gan/stylegan2_cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/stylegan2_cifar", __file__)
