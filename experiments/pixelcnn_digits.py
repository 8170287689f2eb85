"""Alias of experiments/autoregressive/pixelcnn_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("autoregressive/pixelcnn_digits", __file__)
