"""Alias of experiments/translation/cyclegan_horse2zebra.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("translation/cyclegan_horse2zebra", __file__)
