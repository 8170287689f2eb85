"""Neural-network building blocks and backbones."""

from jgen.nn.layers import (
    AttnBlock,
    Downsample,
    GroupNorm32,
    ResnetBlock,
    Upsample,
    ddpm_conv,
    ddpm_dense,
    default_init,
    timestep_embedding,
)
from jgen.nn.unet import UNet

__all__ = [
    "AttnBlock",
    "Downsample",
    "GroupNorm32",
    "ResnetBlock",
    "UNet",
    "Upsample",
    "ddpm_conv",
    "ddpm_dense",
    "default_init",
    "timestep_embedding",
]
