"""Alias of experiments/ddpm/cond_fill.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/cond_fill", __file__)
