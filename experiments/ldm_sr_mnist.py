"""Alias of experiments/ldm/sr_mnist.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ldm/sr_mnist", __file__)
