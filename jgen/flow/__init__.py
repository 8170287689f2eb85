"""Normalizing flows: invertible layers, RealNVP and Glow, exact log-likelihood in bits/dim.

Methods of the loop (`config.method`): `flow.realnvp`, `flow.glow`. The pieces are pure and
usable without the loop: the invertible layers (`layers`: ActNorm, 1x1 convolutions, couplings,
squeeze, split), the multi-scale models (`models`) and the dequantization arithmetic
(`likelihood`; the standard normal and bits/dim are `jgen.ops.likelihoods`, shared with the VAE).
"""

from jgen.flow import likelihood
from jgen.nn import flow_layers as layers
from jgen.nn import flow_models as models
from jgen.nn.flow_layers import (ActNorm, AdditiveCoupling, AffineCoupling, CouplingNet,
                              InvConv1x1, LearnedPrior, Split, Squeeze, ZeroConv,
                              checkerboard_mask, squeeze, unsqueeze)
from jgen.flow.likelihood import dequantize, postprocess, preprocess, quantize, to_levels
from jgen.flow.method import FlowMethod, flow_method
from jgen.nn.flow_models import Glow, MultiScaleFlow, RealNVP

__all__ = [
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "CouplingNet", "FlowMethod", "Glow",
    "InvConv1x1", "LearnedPrior", "MultiScaleFlow", "RealNVP", "Split", "Squeeze", "ZeroConv",
    "checkerboard_mask", "dequantize", "flow_method", "layers", "likelihood",
    "models", "postprocess", "preprocess", "quantize", "squeeze",
    "to_levels", "unsqueeze",
]
