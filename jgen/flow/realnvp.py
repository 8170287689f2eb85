"""RealNVP (Dinh et al. 2017) as a method of the loop: `config.method = "flow.realnvp"`.

Reads `config.model.{num_levels, hidden, num_blocks, actnorm}` (scales, feature maps and
residual blocks of the coupling networks, an ActNorm after each coupling),
`config.data.{image_size, channels}`, `config.flow.{n_bits, preprocessing, logit_alpha}` and
`config.sample.temperature`; see `jgen.flow.method.FlowMethod`.
"""

from __future__ import annotations

from typing import Any

from jgen.flow.method import FlowMethod, flow_method
from jgen.nn.flow_models import RealNVP

__all__ = ["make_method"]


def make_method(config: Any) -> FlowMethod:
  """Translates an experiment config into a RealNVP `FlowMethod`."""
  m, d = config.model, config.data
  model = RealNVP(image_shape=(d.image_size, d.image_size, d.channels),
                  num_levels=m.num_levels, hidden=m.hidden, num_blocks=m.num_blocks,
                  actnorm=m.actnorm)
  return flow_method(config, model)
