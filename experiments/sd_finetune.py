"""Alias of experiments/sd/finetune.py, kept for one release (until 0.2)."""
from jgen.train.config import alias


def _legacy(arg: str) -> str:
  kind, _, arch = arg.rpartition("_")  # KIND[_ARCH]
  return f"kind={kind},arch={arch}" if arch in ("sd15", "sd21", "tiny") else f"kind={arg}"


get_config = alias("sd/finetune", __file__, _legacy)
