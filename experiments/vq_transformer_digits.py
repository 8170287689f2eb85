"""Alias of experiments/autoregressive/vq_transformer_digits.py,
kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoregressive/vq_transformer_digits", __file__)
