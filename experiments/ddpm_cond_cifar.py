"""Alias of experiments/ddpm/cond_cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/cond_cifar", __file__)
