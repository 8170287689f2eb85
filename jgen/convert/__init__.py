"""Published checkpoints in and out: readers per format that map onto jgen's own modules.

Research code loads one model folder as a Flax module and its variables::

  unet, variables = jgen.convert.load("stable-diffusion-v1-5/unet")
  eps = unet.apply(variables, x_nhwc, t, {"context": context}, train=False)
  text, text_vars = jgen.convert.load("stable-diffusion-v1-5/text_encoder")
  tokenizer = jgen.convert.load_tokenizer("stable-diffusion-v1-5/tokenizer")
  context = text.apply(text_vars, tokenizer(["a photo of a cat"]))

Whole checkpoints become work directories with ``python -m jgen.convert SRC WORKDIR``
(`jgen.convert.pipeline`; a ControlNet on a converted SD: `controlnet_pipeline`; pix2pix /
CycleGAN ``.pth`` files: `translation` reads them, `translation_pipeline` writes the run). Modules:
`files` (lazy, never-executing readers), `common` (the name-map machinery and its missing /
unexpected / mis-shaped report), one converter per model (`unet`, `autoencoder`, `clip`,
`controlnet`), `single_file` (CompVis/LDM layouts), community files (`lora`,
`textual_inversion`), NVlabs StyleGAN2-ADA pickles (`stylegan2`, read without running them by
`jgen.metrics.weights.read_nvlabs_pickle`); and back out: `to_diffusers` (model folders),
`lora_export` (peft / kohya files), driven by ``python -m jgen.export``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jgen.convert import autoencoder, clip, common, controlnet, files, single_file, unet
from jgen.convert.common import ConversionError
from jgen.convert.files import UnknownFormatError
from jgen.nn.clip_tokenizer import CLIPTokenizer

__all__ = ["ConversionError", "UnknownFormatError", "load", "load_tokenizer", "common",
           "single_file"]

_UNETS = ("UNet2DModel", "UNet2DConditionModel")
_AUTOENCODERS = ("AutoencoderKL", "VQModel")


def _model_class(config: dict[str, Any]) -> str:
  if "_class_name" in config:
    return config["_class_name"]
  return (config.get("architectures") or [config.get("model_type", "")])[0]


def load(path: str, *, variant: str | None = None, dtype: Any = np.float32
         ) -> tuple[Any, dict[str, Any]]:
  """One diffusers / transformers model folder as ``(module, variables)``.

  Folders: ``UNet2DModel`` / ``UNet2DConditionModel`` -> `jgen.nn.unet.UNet`
  (``apply(variables, x, t, conditions, train=False)``, NHWC, ``{"context": [B, L, D]}``);
  ``AutoencoderKL`` / ``VQModel`` -> `jgen.nn.ldm_autoencoder.LDMAutoencoder`
  (``method=module.encode`` / ``decode``); ``CLIPTextModel`` -> `jgen.nn.clip.CLIPTextModel`
  (token ids ``[B, 77]`` -> hidden states); ``ControlNetModel`` -> the control branch
  (`jgen.convert.controlnet`).

  Args:
    path: the folder (``config.json`` + weights: safetensors, ``.bin``, sharded, ``.fp16``).
    variant: the weight variant to prefer ("fp16"); widened to `dtype`.
    dtype: dtype of the returned parameters.

  Raises:
    UnknownFormatError: not a model folder jgen reads (the message lists those it does).
    ConversionError: weights that do not fit the config (missing / unexpected / mis-shaped).
  """
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise UnknownFormatError(f"{path}: no config.json; jgen.convert.load reads one diffusers or "
                             "transformers model folder (a pipeline's unet/, vae/, "
                             "text_encoder/ or a ControlNet folder). Whole pipelines and "
                             "single files: python -m jgen.convert SRC WORKDIR")
  with open(config_path) as f:
    config = json.load(f)
  kind = _model_class(config)
  if kind in ("CLIPTextModel", "clip_text_model", "CLIPTextModelWithProjection"):
    state = files.read_state_dict(files.model_weights(path, "model", variant=variant))
    return clip.clip_text_from_transformers(config, state, param_dtype=dtype)
  state = files.read_state_dict(files.model_weights(path, variant=variant))
  if kind in _UNETS:
    return unet.unet_from_diffusers(config, state, dtype=dtype)
  if kind in _AUTOENCODERS:
    return autoencoder.autoencoder_from_diffusers(config, state)
  if kind == "ControlNetModel":
    return controlnet.controlnet_from_diffusers(config, state, dtype=dtype)
  raise UnknownFormatError(f"{path}: model class {kind!r} is not one jgen converts; known: "
                           f"{_UNETS + _AUTOENCODERS + ('CLIPTextModel', 'ControlNetModel')}")


def load_tokenizer(path: str | None = None, *, pad_token: str = "<|endoftext|>"
                   ) -> CLIPTokenizer:
  """CLIP's tokenizer from a pipeline's ``tokenizer/`` folder (``vocab.json``, ``merges.txt``),
  or, with no path, from the vocabulary inside the ``open_clip_torch`` wheel."""
  if path is None:
    return CLIPTokenizer.from_open_clip(pad_token=pad_token)
  return CLIPTokenizer.from_folder(path)
