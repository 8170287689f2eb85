"""Alias of experiments/gan/cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/cifar", __file__, lambda a: "method=" + a)
