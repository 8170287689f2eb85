"""Alias of experiments/translation/cyclegan_mnist_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/cyclegan_mnist_digits", __file__)
