"""Alias of experiments/sd/controlnet.py, kept for one release (until 0.2)."""
from jgen.train.config import alias


def _legacy(arg: str) -> str:
  return ",".join(("arch=" if p in ("sd15", "sd21", "tiny") else "kind=") + p
                  for p in arg.split("_"))  # [KIND_]ARCH or KIND


get_config = alias("sd/controlnet", __file__, _legacy)
