"""Alias of experiments/autoencoder/mnist.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoencoder/mnist", __file__, lambda a: "method=" + a)
