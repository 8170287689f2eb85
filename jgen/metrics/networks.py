"""The feature network named by a spec string: ``"inception"`` or ``"domain:<dataset>"``.

It sits above both networks (`jgen.metrics.inception`, `jgen.metrics.domain`), which in turn
use the interface of `jgen.metrics.feature_net`, so no module imports its own importer.
"""

from __future__ import annotations

from typing import Any

from jgen.metrics import domain, inception
from jgen.metrics.feature_net import SPECS, FeatureNet

__all__ = ["load"]


def load(spec: str, **kwargs: Any) -> FeatureNet:
  """The feature network named by `spec`.

  Args:
    spec: ``"inception"`` (kwargs go to `jgen.metrics.inception.load_feature_net`: weights,
      batch_size, dtype, mesh) or ``"domain:<dataset>"`` with dataset one of digits, mnist,
      fashion_mnist (kwargs go to `jgen.metrics.domain.load_feature_net`).
    **kwargs: passed to the loader.

  Raises:
    ValueError: for an unknown spec.
  """
  if spec == "inception":
    return inception.load_feature_net(**kwargs)
  if spec.startswith("domain:"):
    return domain.load_feature_net(spec.split(":", 1)[1], **kwargs)
  raise ValueError(f"unknown feature network {spec!r}; expected one of {', '.join(SPECS)}")
