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
from jgen.nn import conditioning, lora
from jgen.nn.classifier import NoisyClassifier
from jgen.nn.translation import (PatchDiscriminator, ResnetGenerator, UNetGenerator,
                                 patch_receptive_field)
from jgen.nn.unet import UNet

__all__ = [
    "AttnBlock",
    "CrossAttnBlock",
    "DDPM_NAMES",
    "Downsample",
    "NORMS",
    "Norm",
    "NoisyClassifier",
    "PatchDiscriminator",
    "RESAMPLES",
    "ResBlock",
    "ResBlockNames",
    "ResnetGenerator",
    "UNet",
    "UNetGenerator",
    "conditioning",
    "Upsample",
    "ddpm_conv",
    "patch_receptive_field",
    "ddpm_dense",
    "ddpm_res_block",
    "default_init",
    "lora",
    "mean_pool",
    "timestep_embedding",
    "upsample_nearest",
]
