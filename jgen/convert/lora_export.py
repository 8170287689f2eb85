"""jgen LoRA adapters out as community files (peft/diffusers and kohya) that diffusers loads.

jgen's adapters (`jgen.nn.lora`) mirror the kernel paths of the model they adapt: a kernel W
(Dense ``[d_in, d_out]``, Conv ``[k, k, c_in, c_out]`` viewed as ``[fan_in, d_out]``) has
A ``[fan_in, r]`` and B ``[r, d_out]``, and the model computes with W + (alpha / r) A B. A torch
LoRA module holds ``down`` ``[r, d_in]`` (a convolution's ``[r, c_in, k, k]``) and ``up``
``[d_out, r]`` (``[c_out, r, 1, 1]``) with the update (alpha_m / r_m) up @ down on the torch
weight ``W^T``, so

    down = A^T (a convolution's A reshaped to ``[k, k, c_in, r]``, then to ``[r, c_in, k, k]``),
    up = B^T,  alpha_m = (alpha / r) r_m,

which gives the same update for every module whatever its own width r_m. Module names are
`jgen.convert.lora.module_map`'s (the converter's own table, read backwards), so what the
converter maps an adapter can sit on. `to_lora_file` builds the `LoraFile`, and
`jgen.convert.lora.save_peft` / `save_kohya` write it (`export_peft`, `export_kohya` do both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jgen.convert.common import flatten_tree
from jgen.convert.lora import LoraFile, LoraFormatError, LoraModule, module_map, save_kohya, \
    save_peft
from jgen.nn.lora import A, B, Lora

__all__ = ["export_kohya", "export_peft", "to_lora_file"]

Component = tuple[Mapping, Lora, Mapping]  # (adapters, lora, the adapted model's params)


def _tree(params: Mapping[str, Any]) -> Mapping[str, Any]:
  return params["params"] if set(params) == {"params"} else params


def _is_conv_projection(component: str, name: str, use_linear_projection: bool) -> bool:
  """SD 1.x's transformer ``proj_in`` / ``proj_out``: 1 x 1 convolutions in torch."""
  return (component == "unet" and not use_linear_projection
          and name.endswith((".proj_in", ".proj_out")) and ".attentions." in name)


def _modules(component: str, item: Component, use_linear_projection: bool
             ) -> dict[str, LoraModule]:
  adapters, lora, params = item
  flat = flatten_tree(_tree(params))
  inverse = {path: name for name, path in module_map(params, component).items()}
  leaves = flatten_tree(adapters)
  out = {}
  for key in sorted(leaves):
    if not key.endswith("/" + A):
      continue
    path = key[:-len("/" + A)]
    if path not in inverse:
      raise LoraFormatError(f"adapter {path!r} is on no kernel of diffusers' {component}; "
                            "only kernels the converter maps can be exported (narrow "
                            "config.lora.targets)")
    a = np.asarray(leaves[key], np.float32)
    b = np.asarray(leaves[f"{path}/{B}"], np.float32)
    shape, name, r = np.shape(flat[path]), inverse[path], a.shape[1]
    if len(shape) == 4:
      down = a.reshape(*shape[:3], r).transpose(3, 2, 0, 1)
      up = b.T[:, :, None, None]
    elif _is_conv_projection(component, name, use_linear_projection):
      down, up = a.T[:, :, None, None], b.T[:, :, None, None]
    else:
      down, up = a.T, b.T
    out[name] = LoraModule(np.ascontiguousarray(down), np.ascontiguousarray(up),
                           float(lora.scale * r))
  return out


def to_lora_file(*, unet: Component | None = None, text_encoder: Component | None = None,
                 use_linear_projection: bool = False) -> LoraFile:
  """A `LoraFile` of jgen adapters: per component ``(adapters, lora, params)``.

  ``adapters`` mirror the kernel paths of ``params`` (the tree under ``lora/``); each module's
  alpha is ``lora.scale * r_m`` (r_m its own A's width), so a reader's alpha / r_m is jgen's
  scale. A 2-D kernel is a torch Linear except the U-Net's ``proj_in`` / ``proj_out``, which are
  1 x 1 convolutions in SD 1.x (``use_linear_projection=False``, diffusers' config field).

  Raises:
    LoraFormatError: an adapter on a kernel diffusers' model does not have.
  """
  modules = {component: _modules(component, item, use_linear_projection)
             for component, item in (("unet", unet), ("text_encoder", text_encoder))
             if item is not None}
  return LoraFile("peft", modules)


def export_peft(adapters: Mapping, lora: Lora, path: str, *, params: Mapping,
                text_encoder: Component | None = None, use_linear_projection: bool = False,
                dtype: Any = np.float32) -> None:
  """jgen U-Net adapters (and optionally the text encoder's) -> a peft/diffusers file that
  ``pipe.load_lora_weights`` reads (`to_lora_file`, `jgen.convert.lora.save_peft`)."""
  save_peft(to_lora_file(unet=(adapters, lora, params), text_encoder=text_encoder,
                         use_linear_projection=use_linear_projection), path, dtype=dtype)


def export_kohya(adapters: Mapping, lora: Lora, path: str, *, params: Mapping,
                 text_encoder: Component | None = None, use_linear_projection: bool = False,
                 dtype: Any = np.float32) -> None:
  """jgen adapters -> a kohya file (`to_lora_file`, `jgen.convert.lora.save_kohya`)."""
  save_kohya(to_lora_file(unet=(adapters, lora, params), text_encoder=text_encoder,
                          use_linear_projection=use_linear_projection), path, dtype=dtype)
