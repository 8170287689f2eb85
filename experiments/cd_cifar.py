"""Alias of experiments/distill/cd_cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("distill/cd_cifar", __file__)
