"""Neural-network building blocks and backbones."""

from jgen.nn.layers import (
    DDPM_NAMES,
    NORMS,
    RESAMPLES,
    AttnBlock,
    CrossAttnBlock,
    Downsample,
    Norm,
    ResBlock,
    ResBlockNames,
    Upsample,
    ddpm_conv,
    ddpm_dense,
    ddpm_res_block,
    default_init,
    mean_pool,
    timestep_embedding,
    upsample_nearest,
)
from jgen.nn import conditioning
from jgen.nn.classifier import NoisyClassifier
from jgen.nn.unet import UNet

__all__ = [
    "AttnBlock",
    "CrossAttnBlock",
    "DDPM_NAMES",
    "Downsample",
    "NORMS",
    "Norm",
    "NoisyClassifier",
    "RESAMPLES",
    "ResBlock",
    "ResBlockNames",
    "UNet",
    "conditioning",
    "Upsample",
    "ddpm_conv",
    "ddpm_dense",
    "ddpm_res_block",
    "default_init",
    "mean_pool",
    "timestep_embedding",
    "upsample_nearest",
]
