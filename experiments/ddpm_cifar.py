"""Alias of experiments/ddpm/cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/cifar", __file__)
