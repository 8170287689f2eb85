"""Alias of experiments/personalize/ip_adapter_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("personalize/ip_adapter_digits", __file__)
