"""Alias of experiments/gan/ddgan_cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/ddgan_cifar", __file__)
