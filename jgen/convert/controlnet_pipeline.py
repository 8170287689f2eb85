"""A diffusers ControlNet on a converted Stable Diffusion as a jgen work directory:
``python -m jgen.convert CONTROLNET_FOLDER WORKDIR --base=SD_WORKDIR``.

=========================================  ============================================
inputs                                     work directory
=========================================  ============================================
a diffusers ``ControlNetModel`` folder     ``diffusion.sd_controlnet``
(``config.json`` + weights), and the       (experiments/sd/controlnet.py): ``params/unet``
work directory of the Stable Diffusion it  (the base's), ``params/control`` (the ControlNet,
was trained on (``jgen.convert`` of its    `jgen.convert.controlnet`), ``frozen/text_encoder``,
pipeline)                                  ``frozen/autoencoder`` (the base's)
=========================================  ============================================

The base is read as it was saved (its latest checkpoint; the EMA's leaves when the run keeps
one), so a Stable Diffusion fine-tuned in jgen takes a ControlNet as a converted one does. The
config starts from ``experiments/sd/controlnet.py`` (``:arch=sd21`` for a 1024-wide context) and
takes the base run's recorded architecture (``model``, ``text``, ``autoencoder``,
``diffusion``, ``data.image_size``, ``data.channels``) and the ControlNet's condition encoder
(``controlnet.hint_channels``, ``hint_range=(0, 1)``); the fields that differ from the file's
defaults are returned as the ``--config.*`` overrides to sample with. The base's tokenizer
folder, when it has one, is copied into WORKDIR/tokenizer so the new run stands alone. Nothing
trains in the result (``optim.rules = ((".*", "frozen"),)``): train a ControlNet further with
``experiments/sd/controlnet.py:kind=finetune`` and ``--config.init_from.workdir=WORKDIR``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import ml_collections
import numpy as np

from jgen.convert import pipeline
from jgen.convert.controlnet import controlled_unet, controlnet_from_diffusers
from jgen.convert.unet import UNetConfigError
from jgen.diffusion import stable_diffusion as sd_lib
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.checkpoint import Checkpointer

__all__ = ["ARCHITECTURE", "convert_controlnet", "read_base"]

# The base run's config blocks / fields that describe its networks (copied into the new run).
ARCHITECTURE = ("model", "text", "autoencoder", "diffusion", "data.image_size", "data.channels")
_SD_METHOD = "diffusion.stable_diffusion"


def read_base(base_workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any],
                                          dict[str, Any]]:
  """(config, params, frozen) of a Stable Diffusion run: its recorded config and its latest
  checkpoint's parameters (the EMA's leaves put in when it keeps one) and frozen arrays.

  Raises:
    FileNotFoundError: not a jgen work directory with a checkpoint.
    ValueError: a run of another method, or one without the U-Net / text encoder / autoencoder.
  """
  ckpt_dir = os.path.join(base_workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
    raise FileNotFoundError(f"--base={base_workdir}: no jgen checkpoint there; convert the "
                            "Stable Diffusion first (python -m jgen.convert PIPELINE SD_WORKDIR)")
  config = run_record.latest_config(base_workdir)
  if config.method != _SD_METHOD:
    raise ValueError(f"--base={base_workdir} is a {config.method} run; a ControlNet goes on a "
                     f"{_SD_METHOD} run (python -m jgen.convert PIPELINE SD_WORKDIR)")
  with Checkpointer(ckpt_dir, async_save=False) as ckpt:
    items = ckpt.restore(None)
  params = dict(items["params"])
  ema = (items.get("emas") or {}).get("ema")
  if ema:
    params = rules_lib.merge(params, ema)
  frozen = dict(items.get("frozen") or {})
  missing = [p for p, tree in (("params/unet", params), ("frozen/text_encoder", frozen),
                               ("frozen/autoencoder", frozen))
             if p.split("/")[1] not in tree]
  if missing:
    raise ValueError(f"--base={base_workdir}: its checkpoint lacks {missing}; a ControlNet "
                     "needs the U-Net, text encoder and autoencoder of a converted or fine-tuned "
                     "Stable Diffusion (fold LoRA adapters into the U-Net first)")
  return config, params, frozen


def _leaves(config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> dict[str, Any]:
  """``{"block.field": value}`` of the dotted `keys` (a block gives all of its fields)."""
  out = {}
  for key in keys:
    node: Any = config
    for part in key.split("."):
      node = node[part]
    if isinstance(node, ml_collections.ConfigDict):
      for field, value in node.items():
        if not isinstance(value, ml_collections.ConfigDict):
          out[f"{key}.{field}"] = value
    else:
      out[key] = node
  return out


def convert_controlnet(controlnet_folder: str, base_workdir: str, workdir: str, *,
                       weights_variant: str | None = None, config_file: str | None = None
                       ) -> dict[str, Any]:
  """Converts a diffusers ControlNet on a converted Stable Diffusion (module docstring).

  Args:
    controlnet_folder: a ``ControlNetModel`` folder (``config.json`` and
      ``diffusion_pytorch_model.safetensors`` / ``.bin``).
    base_workdir: the ``diffusion.stable_diffusion`` run it controls.
    workdir: the work directory to write (must hold no checkpoint yet).
    weights_variant: a diffusers weight variant to prefer ("fp16").
    config_file: the experiment config to start from (default: experiments/sd/controlnet.py).

  Returns:
    ``{"format", "method", "config", "overrides"}`` as `jgen.convert.pipeline.convert`.

  Raises:
    FileNotFoundError: no ControlNet folder or no base checkpoint.
    ValueError: not a ControlNetModel, a ControlNet of another U-Net (the differing settings
      named), a setting jgen's ControlNet does not reproduce, or condition images of other
      channels than the base's images.
  """
  config_path = os.path.join(controlnet_folder, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{controlnet_folder}: no config.json; pass a diffusers "
                            "ControlNetModel folder (save_pretrained / the hub's layout)")
  base_config, base_params, base_frozen = read_base(base_workdir)
  cn_config, cn_state = pipeline._folder_model(  # pylint: disable=protected-access
      controlnet_folder, variant=weights_variant)
  try:
    control, control_vars = controlnet_from_diffusers(cn_config, cn_state)
  except UNetConfigError as e:
    raise ValueError(f"{controlnet_folder}: {e}") from e
  base_unet = sd_lib.make_method(base_config).unet
  model, variables = controlled_unet(base_unet, {"params": base_params["unet"]}, control,
                                     control_vars)
  channels = int(cn_config.get("conditioning_channels", 3))
  if channels != int(base_config.data.channels):
    raise ValueError(f"{controlnet_folder}: conditioning_channels={channels}, but the base's "
                     f"images have {base_config.data.channels} channels (jgen reads condition "
                     "images with the images' channels)")
  variant = "arch=sd21" if int(base_config.model.context_dim) == 1024 else None
  config, config_name = pipeline._experiment(  # pylint: disable=protected-access
      "sd/controlnet", variant, config_file)
  values = {k: v for k, v in _leaves(base_config, ARCHITECTURE).items()
            if _has(config, k)}
  values.update({"controlnet.hint_channels": tuple(model.hint_channels),
                 "controlnet.hint_range": tuple(model.hint_range),
                 "controlnet.guess_mode": bool(model.guess_mode)})
  tokenizer = str(base_config.text.get("tokenizer", "open_clip"))
  if os.path.isdir(tokenizer):
    dst = os.path.join(os.path.abspath(workdir), "tokenizer")
    shutil.copytree(tokenizer, dst, dirs_exist_ok=True)
    values["text.tokenizer"] = dst
  changed = pipeline._overrides(config, values)  # pylint: disable=protected-access
  params = {k: _host_tree(v) for k, v in variables["params"].items()}
  frozen = {k: _host_tree(base_frozen[k]) for k in ("text_encoder", "autoencoder")}
  pipeline.write_workdir(workdir, config, params, frozen)
  return {"format": "controlnet_folder", "method": config.method, "config": config_name,
          "overrides": changed}


def _has(config: ml_collections.ConfigDict, key: str) -> bool:
  node: Any = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _host_tree(tree: Any) -> Any:
  """Host numpy arrays of a restored or converted tree (dtypes kept)."""
  if isinstance(tree, dict):
    return {k: _host_tree(v) for k, v in tree.items()}
  return np.asarray(tree)
