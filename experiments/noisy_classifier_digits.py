"""Alias of experiments/ddpm/noisy_classifier_digits.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("ddpm/noisy_classifier_digits", __file__)
