"""diffusers ``ControlNetModel`` as `jgen.nn.controlnet.ControlNet`, and joined to a U-Net.

**What is returned.** `controlnet_from_diffusers` gives the control branch alone,
``(ControlNet, {"params": control})``: ``ControlNet.apply(variables, x, t, {"context": ...},
hint, train=False)`` returns diffusers' ``down_block_res_samples + [mid_block_res_sample]``
(NHWC), already multiplied by the conditioning scale. ``control`` is the tree that
`ControlledUNet` keeps under ``params/control``, so a converted Stable Diffusion U-Net
(`jgen.convert.unet.unet_from_diffusers`) and a converted ControlNet join with no renaming:
`controlled_unet` checks that the two describe the same U-Net and returns ``(ControlledUNet,
{"params": {"unet": ..., "control": ...}})``.

**Config.** The copied encoder's settings are `jgen.convert.unet.unet_settings`' (the
``ControlNetModel`` config has the U-Net's fields, without the up path); the condition
embedding is ``hint_layout="pixel"`` with ``hint_channels = conditioning_embedding_out_channels``
(the hint at ``2^(len - 1)`` times the latent size: 8 x for SD's (16, 32, 96, 256)), and
``hint_range=(0, 1)``: diffusers' pipelines hand the ControlNet the control image in [0, 1]
(their image processor does not normalise it), while jgen's ``hint`` condition is in [-1, 1],
so the module maps one onto the other. ``controlnet_conditioning_channel_order="bgr"`` (diffusers
flips the hint's channels) is folded into the weights: the first conv's input channels are
reversed, which is exact. Refused: ``global_pool_conditions=True`` (the residuals averaged over
space, for the "shuffle" ControlNets), a ``mid_block_scale_factor`` other than 1, no
``conditioning_embedding_out_channels``, and everything `unet_settings` refuses (SDXL's added
embeddings, class embeddings, ...).

**Names** (diffusers -> jgen, inside ``control``): the embedding, ``conv_in``, ``down_blocks.*``
and ``mid_block.*`` as `jgen.convert.unet.fill_unet` maps them for a U-Net (the copy is built by
`jgen.nn.unet.encode`, so its names are the U-Net's own), and

    controlnet_cond_embedding.conv_in            hint_0
    controlnet_cond_embedding.blocks.k           hint_(k + 1)
    controlnet_cond_embedding.conv_out           hint_zero
    controlnet_down_blocks.i                     zero_i
    controlnet_mid_block                         zero_mid
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.convert.common import StateDict, Tree, conv_kernel
from jgen.convert.unet import UNetConfigError, fill_unet, unet_settings
from jgen.nn.controlnet import ControlledUNet, ControlNet
from jgen.nn.unet import UNet

__all__ = ["controlled_unet", "controlnet_from_diffusers", "controlnet_settings",
           "controlnet_shapes"]

_PREFIX = "controlnet_cond_embedding"


def controlnet_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """`ControlNet` keyword arguments (``unet`` included) equal to a ``ControlNetModel`` config.

  Raises:
    UNetConfigError: another class, or a setting jgen's ControlNet does not reproduce (named).
  """
  kind = config.get("_class_name", "ControlNetModel")
  if kind != "ControlNetModel":
    raise UNetConfigError(f"config _class_name {kind!r} is not a ControlNetModel: convert a "
                          "U-Net with jgen.convert.unet.unet_from_diffusers")
  if config.get("global_pool_conditions", False):
    raise UNetConfigError("global_pool_conditions=True (residuals averaged over space, the "
                          "'shuffle' ControlNets) is not supported by jgen's ControlNet")
  if float(config.get("mid_block_scale_factor", 1)) != 1.0:
    raise UNetConfigError(f"mid_block_scale_factor={config['mid_block_scale_factor']}: jgen's "
                          "U-Net middle block does not rescale its output (needs 1)")
  order = config.get("controlnet_conditioning_channel_order", "rgb")
  if order not in ("rgb", "bgr"):
    raise UNetConfigError(f"controlnet_conditioning_channel_order={order!r}: diffusers knows "
                          "'rgb' and 'bgr' only")
  channels = config.get("conditioning_embedding_out_channels", (16, 32, 96, 256))
  if not channels:
    raise UNetConfigError("conditioning_embedding_out_channels is empty or None: the config "
                          "has no condition embedding to convert")
  return dict(unet=UNet(**unet_settings({**config, "_class_name": "ControlNetModel"})),
              hint_channels=tuple(int(c) for c in channels), hint_layout="pixel",
              hint_range=(0.0, 1.0))


def controlnet_shapes(module: ControlNet, in_channels: int, hint_channels: int) -> Any:
  """The parameter shapes of `module` (no arrays are allocated)."""
  size = 2 ** (len(module.unet.ch_mult) - 1)
  big = size * module.hint_factor
  x = jnp.zeros((1, size, size, in_channels))
  hint = jnp.zeros((1, big, big, hint_channels))
  ctx = module.unet.context_dim
  conditions = {"context": jnp.zeros((1, 1, ctx))} if ctx else None
  return jax.eval_shape(lambda: module.init(jax.random.key(0), x, jnp.zeros((1,)), conditions,
                                            hint, train=False))["params"]


def controlnet_from_diffusers(config: Mapping[str, Any], state: Mapping[str, Any], *,
                              dtype: Any = np.float32) -> tuple[ControlNet, dict[str, Any]]:
  """A diffusers ``ControlNetModel`` as ``(ControlNet, {"params": ...})`` (module docstring).

  Args:
    config: the model's ``config.json``.
    state: its state dict (torch names -> arrays; lazily read arrays are fine).
    dtype: dtype of the converted parameters.

  Raises:
    UNetConfigError: a config jgen's ControlNet does not reproduce.
    ConversionError: the weights do not fit the config (missing / unexpected / mis-shaped).
  """
  module = ControlNet(**controlnet_settings(config))
  tree = Tree(StateDict(state), dtype)
  fill_unet(tree, module.unet, up=False)
  bgr = config.get("controlnet_conditioning_channel_order", "rgb") == "bgr"
  tree.put("hint_0/kernel", f"{_PREFIX}.conv_in.weight",
           lambda w: conv_kernel(np.asarray(w)[:, ::-1] if bgr else w))
  tree.put("hint_0/bias", f"{_PREFIX}.conv_in.bias")
  for k in range(2 * (len(module.hint_channels) - 1)):
    tree.conv(f"hint_{k + 1}", f"{_PREFIX}.blocks.{k}")
  tree.conv("hint_zero", f"{_PREFIX}.conv_out")
  skips = 1 + len(module.unet.ch_mult) * (module.unet.num_res_blocks + 1) - 1
  for i in range(skips):
    tree.conv(f"zero_{i}", f"controlnet_down_blocks.{i}")
  tree.conv("zero_mid", "controlnet_mid_block")
  expected = controlnet_shapes(module, int(config.get("in_channels", 4)),
                               int(config.get("conditioning_channels", 3)))
  return module, {"params": tree.finish(expected, "ControlNetModel")}


_NOT_COMPARED = ("parent", "name", "out_ch")  # fields the control branch does not read


def controlled_unet(unet: UNet, unet_variables: Mapping[str, Any], control: ControlNet,
                    control_variables: Mapping[str, Any]
                    ) -> tuple[ControlledUNet, dict[str, Any]]:
  """A converted U-Net and a converted ControlNet as one `ControlledUNet`.

  Args:
    unet, unet_variables: `jgen.convert.unet.unet_from_diffusers`' result (the base).
    control, control_variables: `controlnet_from_diffusers`' result.

  Returns:
    ``(ControlledUNet, {"params": {"unet": ..., "control": ...}})``, with the control
    branch's hint encoder, range and scale.

  Raises:
    ValueError: the ControlNet was made for another U-Net (the differing settings named).
  """
  diff = [f"{f.name}: U-Net {getattr(unet, f.name)!r}, ControlNet "
          f"{getattr(control.unet, f.name)!r}" for f in dataclasses.fields(UNet)
          if f.name not in _NOT_COMPARED
          and _plain(getattr(unet, f.name)) != _plain(getattr(control.unet, f.name))]
  if diff:
    raise ValueError("this ControlNet was made for another U-Net (pair it with the base it "
                     "was trained on, e.g. SD 1.5 ControlNets with SD 1.5): " + "; ".join(diff))
  model = ControlledUNet(unet, tuple(control.hint_channels), hint_layout=control.hint_layout,
                         hint_range=tuple(control.hint_range),
                         conditioning_scale=control.conditioning_scale,
                         guess_mode=control.guess_mode)
  return model, {"params": {"unet": unet_variables["params"],
                            "control": control_variables["params"]}}


def _plain(value: Any) -> Any:
  """Lists and tuples alike, for comparing settings."""
  return tuple(value) if isinstance(value, (list, tuple)) else value
