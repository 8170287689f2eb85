"""Alias of experiments/flow/cifar.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("flow/cifar", __file__, lambda a: "method=" + a)
