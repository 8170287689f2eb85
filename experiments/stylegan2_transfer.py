"""Alias of experiments/gan/stylegan2_transfer.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("gan/stylegan2_transfer", __file__)
