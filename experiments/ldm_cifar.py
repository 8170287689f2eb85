"""Alias of experiments/ldm/cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ldm/cifar", __file__)
