"""Glow (Kingma & Dhariwal 2018) as a method of the loop: `config.method = "flow.glow"`.

Reads `config.model.{num_levels, num_steps, hidden, coupling, lu, learn_top}` (L, K, coupling
network width, 'affine' or 'additive', LU-decomposed 1x1 convolutions, learned top prior),
`config.data.{image_size, channels}`, `config.flow.{n_bits, preprocessing, logit_alpha}` and
`config.sample.temperature`; see `jgen.flow.method.FlowMethod`.
"""

from __future__ import annotations

from typing import Any

from jgen.flow.method import FlowMethod, flow_method
from jgen.nn.flow_models import Glow

__all__ = ["make_method"]


def make_method(config: Any) -> FlowMethod:
  """Translates an experiment config into a Glow `FlowMethod`."""
  m, d = config.model, config.data
  model = Glow(image_shape=(d.image_size, d.image_size, d.channels), num_levels=m.num_levels,
               num_steps=m.num_steps, hidden=m.hidden, coupling=m.coupling, lu=m.lu,
               learn_top_prior=m.learn_top)
  return flow_method(config, model)
