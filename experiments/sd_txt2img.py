"""Alias of experiments/sd/txt2img.py, kept for one release (until 0.2)."""
from jgen.train.config import alias

get_config = alias("sd/txt2img", __file__, lambda a: "arch=" + a)
