"""Denoising autoencoder: `config.method = "autoencoder.dae"`.

The `jgen.autoencoder.ae` method with a corruption that must not be 'none'
(`config.ae.corruption`: 'gaussian' (experiments/autoencoder/base.py) or 'dropout';
`config.ae.corruption_level`).
"""

from __future__ import annotations

from typing import Any

from jgen.autoencoder.ae import Autoencoder
from jgen.autoencoder.ae import make_method as _make_ae

__all__ = ["make_method"]


def make_method(config: Any) -> Autoencoder:
  """An `Autoencoder` trained to reconstruct clean images from corrupted ones."""
  method = _make_ae(config)
  if method.corruption == "none" or method.corruption_level <= 0:
    raise ValueError("a denoising autoencoder needs config.ae.corruption 'gaussian' or "
                     "'dropout' and config.ae.corruption_level > 0")
  return method
