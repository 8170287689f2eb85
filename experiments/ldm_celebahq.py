"""Alias of experiments/ldm/celebahq.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ldm/celebahq", __file__)
