"""Whole checkpoints into jgen work directories: `python -m jgen.convert SRC WORKDIR`.

A converted model is an ordinary jgen run: ``WORKDIR/run_record.json`` (the resolved config)
and ``WORKDIR/checkpoints/0`` (an Orbax checkpoint of the train state, the converted weights as
its parameters), so ``--mode=sample``, ``--mode=eval``, ``init_from`` and every fine-tuning
method read it as they read a trained run.

=========================================  ============================================
source                                     work directory
=========================================  ============================================
diffusers ``StableDiffusionPipeline``      ``diffusion.stable_diffusion``
folder (``model_index.json``, ``unet/``,   (experiments/sd/txt2img.py): ``params/unet``,
``vae/``, ``text_encoder/``,               ``frozen/text_encoder``, ``frozen/autoencoder``;
``tokenizer/``, ``scheduler/``)            the tokenizer folder copied to WORKDIR/tokenizer
single-file SD / LDM checkpoint            the same, parts renamed by
(``.ckpt`` / ``.safetensors``)             `jgen.convert.single_file`
diffusers ``DDPMPipeline`` folder or a     ``diffusion.ddpm`` (experiments/ddpm/cifar.py
``UNet2DModel`` folder                     for ``google/ddpm-cifar10-32``)
NVlabs StyleGAN2-ADA pickle (``.pkl``:     ``gan.stylegan2`` (experiments/gan/
``G``, ``D``, ``G_ema``, ...)              stylegan2_transfer.py): ``params/generator`` = G,
                                           ``params/discriminator`` = D, the EMA = G_ema,
                                           ``model_state/w_avg``, ``model_state/ada/p``
=========================================  ============================================

The config starts from the experiment file (``experiments/sd/txt2img.py`` /
``experiments/ddpm/cifar.py`` beside the package, or ``config_file``) and takes every
architecture field from the checkpoint; the fields that differ from the file's defaults are
printed as the ``--config.*`` overrides to sample with. A converted Stable Diffusion trains
nothing (``optim.rules = ((".*", "frozen"),)``, no EMA): its checkpoint holds the weights once.
eps vs v prediction is read from ``scheduler/scheduler_config.json``; a single file cannot tell
it (``prediction="v"`` for SD 2.x 768 models), and the choice is recorded in the config.

Memory: every source is read lazily (safetensors memory-mapped, a view renamed without copies)
and converted one leaf at a time (float32 leaves are views of the mapped file; a transpose is a
view too), and Orbax saves them without its defensive copy (`host_arrays_saved_in_place`):
converting SD 1.5 (4.27 GB) peaks at about 2.1 times the checkpoint's size, the mapped file's
pages plus tensorstore's write buffers (benchmarks/convert_memory.py; README).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

import jgen
from jgen.convert import autoencoder as ae_convert
from jgen.convert import clip as clip_convert
from jgen.convert import files
from jgen.convert import single_file
from jgen.convert import stylegan2 as sg2_convert
from jgen.convert.unet import unet_from_diffusers, unet_settings
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.checkpoint import Checkpointer, host_arrays_saved_in_place
from jgen.train.config import experiment_module
from jgen.train.method import load_method
from jgen.train.state import TrainState

log = logging.getLogger("jgen")

__all__ = ["PREDICTIONS", "convert", "detect_format", "write_workdir"]

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(jgen.__file__)), os.pardir,
                           "experiments")
_SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                 "StableDiffusionControlNetPipeline")
_DDPM_PIPELINES = ("DDPMPipeline", "DDIMPipeline")


def _read_json(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def detect_format(src: str) -> str:
  """'sd_folder', 'ddpm_folder', 'unet2d_folder', 'single_file' or 'stylegan2_pickle' (a
  ``.pkl``) of a checkpoint path.

  Raises:
    FileNotFoundError: no such path.
    files.UnknownFormatError: a path in none of the known formats (the message lists them).
  """
  if os.path.isdir(src):
    index = os.path.join(src, "model_index.json")
    if os.path.isfile(index):
      kind = _read_json(index).get("_class_name", "")
      if kind in _SD_PIPELINES or all(os.path.isdir(os.path.join(src, p))
                                      for p in ("unet", "vae", "text_encoder")):
        return "sd_folder"
      if kind in _DDPM_PIPELINES or os.path.isdir(os.path.join(src, "unet")):
        return "ddpm_folder"
    config = os.path.join(src, "config.json")
    if os.path.isfile(config) and _read_json(config).get("_class_name") == "UNet2DModel":
      return "unet2d_folder"
    raise files.UnknownFormatError(
        f"{src}: not a checkpoint jgen converts to a work directory. Known: a diffusers "
        "StableDiffusionPipeline or DDPMPipeline folder (model_index.json), a UNet2DModel "
        "folder (config.json), a single-file .ckpt/.safetensors, an NVlabs StyleGAN2-ADA "
        ".pkl; a ControlNetModel folder "
        "with --base=<a converted SD work directory>. One model of a pipeline (a U-Net, VAE "
        "or text encoder folder) loads with jgen.convert.load.")
  if os.path.isfile(src):
    if src.endswith(".pkl"):
      return "stylegan2_pickle"
    if src.endswith((".ckpt", ".safetensors", ".pt", ".pth", ".bin")):
      return "single_file"
    raise files.UnknownFormatError(f"{src}: unknown checkpoint format; known: a diffusers "
                                   "folder, or one of " + ", ".join(files.FORMATS))
  raise FileNotFoundError(f"no checkpoint at {src}")


def _experiment(name: str, variant: str | None, config_file: str | None
                ) -> tuple[ml_collections.ConfigDict, str]:
  path = config_file or os.path.normpath(os.path.join(EXPERIMENTS, f"{name}.py"))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"the experiment config {path} is not there: pass config_file= "
                            f"(--config on the command line) pointing at {name}.py")
  module = experiment_module(os.path.basename(path)[:-3], beside=path)
  return module.get_config(variant), path + (f":{variant}" if variant else "")


def _overrides(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> list[str]:
  """Sets dotted `values` on `config`; returns ``--config.k=v`` for those that changed."""
  changed = []
  for key, value in values.items():
    *parents, last = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    old = node[last] if last in node else None
    if isinstance(value, (list, tuple)):
      value = tuple(value)
    if old != value and not (isinstance(old, (list, tuple)) and tuple(old) == value):
      with node.ignore_type():
        node[last] = value
      shown = f"'{value}'" if isinstance(value, tuple) else (
          f"'{value}'" if isinstance(value, str) else value)
      changed.append(f"--config.{key}={shown}")
  return changed


def write_workdir(workdir: str, config: ml_collections.ConfigDict, params: Any,
                  frozen: Mapping[str, Any] | None = None, *, seed: int = 0,
                  batch: Mapping[str, Any] | None = None,
                  model_state: Mapping[str, Any] | None = None,
                  emas: Mapping[str, Any] | None = None) -> str:
  """Saves converted weights as step 0 of a run of `config` in `workdir`.

  The state's structure is checked against the method's own (``jax.eval_shape`` of its
  ``init``: no array is made) before anything is written. `model_state` entries replace the
  method's initial ones (the rest keep their initial values); `emas` ({name: leaves}) replace
  the EMAs, which otherwise start as copies of `params`.

  Args:
    batch: the fields ``init`` reads, as arrays or ShapeDtypeStructs (default: one ``image``
      of the config's size and channels).

  Raises:
    FileExistsError: `workdir` already holds a checkpoint (nothing is overwritten).
    ValueError: the converted trees do not have the method's shapes.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise FileExistsError(f"{workdir} already holds checkpoints; convert into a new directory")
  method = load_method(config)
  rules = rules_lib.parse_rules(config.optim.get("rules", ()))
  rng = jax.random.key(seed)
  if batch is None:
    batch = {"image": jax.ShapeDtypeStruct((1, config.data.image_size,
                                            config.data.image_size, config.data.channels),
                                           np.float32)}
  want = jax.eval_shape(lambda r, b: method.init(r, b).with_rules(rules), rng, dict(batch))
  ema = want.ema_specs[0].decay if want.ema_specs else None
  state = TrainState.create(params=params, tx=want.tx, rng=rng, ema_decay=ema,
                            ema_warmup=bool(want.ema_specs and want.ema_specs[0].warmup),
                            emas=want.ema_specs, frozen=dict(frozen or {}), rules=rules)
  if model_state is not None:
    initial = method.init(rng, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), dict(batch)))
    state = state.replace(model_state={**initial.model_state, **model_state})
  if emas is not None:
    state = state.replace(emas={**state.emas, **emas})
  shapes = lambda tree: jax.tree.map(lambda x: (tuple(np.shape(x)), np.dtype(x.dtype).name),
                                     tree)
  names = ("params", "frozen") + (("model_state",) if model_state is not None else ()) + (
      ("emas",) if emas is not None else ())
  for name in names:
    got, expected = shapes(getattr(state, name)), shapes(getattr(want, name))
    if got != expected:
      got_flat = dict(rules_lib.flat(got)) if got else {}
      want_flat = dict(rules_lib.flat(expected)) if expected else {}
      diff = sorted(set(got_flat.items()) ^ set(want_flat.items()))[:12]
      raise ValueError(f"the converted {name} do not match the {config.method} model of this "
                       f"config (first differences: {diff}); convert with the config of this "
                       "architecture")
  with host_arrays_saved_in_place(), Checkpointer(ckpt_dir, async_save=False) as ckpt:
    ckpt.save(0, state.checkpoint_items())
  run_record.append_start(workdir, config, step=0)
  return ckpt_dir


# ---------------------------------------------------------------------- Stable Diffusion


def _tokenizer_settings(src_tokenizer: str | None, workdir: str) -> dict[str, Any]:
  if src_tokenizer is None or not os.path.isdir(src_tokenizer):
    return {}
  dst = os.path.join(os.path.abspath(workdir), "tokenizer")
  shutil.copytree(src_tokenizer, dst, dirs_exist_ok=True)
  pad = "<|endoftext|>"
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    path = os.path.join(src_tokenizer, name)
    if os.path.isfile(path):
      value = _read_json(path).get("pad_token", pad)
      pad = value.get("content", pad) if isinstance(value, dict) else value
      break
  return {"text.tokenizer": dst, "text.pad_token": pad}


def _sd_values(unet_config: Mapping[str, Any], text_model: Any, ae_module: Any,
               scheduler: Mapping[str, Any], prediction: str | None) -> dict[str, Any]:
  u = unet_settings(unet_config)
  factor = 2 ** (len(ae_module.encoder.ch_mult) - 1)
  heads = u["transformer_heads"]
  values = {
      "model.ch": u["ch"], "model.ch_mult": u["ch_mult"],
      "model.num_res_blocks": u["num_res_blocks"], "model.attn_levels": u["attn_levels"],
      "model.num_groups": u["num_groups"], "model.norm_eps": u["norm_eps"],
      "model.downsample_padding": u["downsample_padding"],
      "model.flip_sin_to_cos": u["flip_sin_to_cos"], "model.freq_shift": u["freq_shift"],
      "model.context_dim": u["context_dim"], "model.transformer_heads": heads,
      "model.transformer_depth": u["transformer_depth"], "model.out_ch": u["out_ch"],
      "text.vocab_size": text_model.vocab_size, "text.hidden_size": text_model.hidden_size,
      "text.intermediate_size": text_model.intermediate_size,
      "text.num_hidden_layers": text_model.num_hidden_layers,
      "text.num_attention_heads": text_model.num_attention_heads,
      "text.hidden_act": text_model.hidden_act,
      "text.max_length": text_model.max_position_embeddings,
      "autoencoder.ch": ae_module.encoder.ch, "autoencoder.ch_mult": ae_module.encoder.ch_mult,
      "autoencoder.num_res_blocks": ae_module.encoder.num_res_blocks,
      "autoencoder.num_groups": ae_module.encoder.num_groups,
      "autoencoder.latent_channels": ae_module.code_dim // 2,
      "autoencoder.scaling_factor": float(ae_module.scaling_factor),
      "data.image_size": int(unet_config.get("sample_size", 64)) * factor,
  }
  if scheduler:
    values.update({"diffusion.schedule": scheduler.get("beta_schedule", "scaled_linear"),
                   "diffusion.num_timesteps": int(scheduler.get("num_train_timesteps", 1000)),
                   "diffusion.beta_start": float(scheduler.get("beta_start", 0.00085)),
                   "diffusion.beta_end": float(scheduler.get("beta_end", 0.012))})
    kind = scheduler.get("prediction_type", "epsilon")
    if kind not in PREDICTIONS:
      raise ValueError(f"scheduler prediction_type={kind!r}; known: {sorted(PREDICTIONS)}")
    values["diffusion.prediction"] = PREDICTIONS[kind]
  if prediction:
    values["diffusion.prediction"] = prediction
  if values.get("diffusion.schedule") not in (None, "linear", "scaled_linear"):
    raise ValueError(f"beta_schedule={values['diffusion.schedule']!r} is not one jgen builds "
                     "('linear', 'scaled_linear')")
  return values


def _folder_model(folder: str, *, variant: str | None, stem: str = "diffusion_pytorch_model"
                  ) -> tuple[dict[str, Any], Mapping[str, Any]]:
  config = _read_json(os.path.join(folder, "config.json"))
  return config, files.read_state_dict(files.model_weights(folder, stem, variant=variant))


def _sd_parts_from_folder(src: str, weights_variant: str | None):
  unet_config, unet_state = _folder_model(os.path.join(src, "unet"), variant=weights_variant)
  vae_config, vae_state = _folder_model(os.path.join(src, "vae"), variant=weights_variant)
  text_config, text_state = _folder_model(os.path.join(src, "text_encoder"),
                                          variant=weights_variant, stem="model")
  scheduler_path = os.path.join(src, "scheduler", "scheduler_config.json")
  scheduler = _read_json(scheduler_path) if os.path.isfile(scheduler_path) else {}
  return (unet_config, unet_state, vae_config, vae_state, text_config, text_state, scheduler,
          os.path.join(src, "tokenizer"))


def _vae_config_from_state(state: Mapping[str, Any], prefix: str = "first_stage_model."
                           ) -> dict[str, Any]:
  """An AutoencoderKL config read from an LDM VAE's shapes (SD's 0.18215 latent scale)."""
  keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
  levels = sorted({int(k.split(".")[2]) for k in keys if k.startswith("encoder.down.")})
  blocks = sorted({int(k.split(".")[4]) for k in keys if k.startswith("encoder.down.0.block.")})
  channels = [int(np.shape(state[f"{prefix}encoder.down.{i}.block.0.conv1.weight"])[0])
              for i in levels]
  return {"_class_name": "AutoencoderKL", "block_out_channels": channels,
          "down_block_types": ["DownEncoderBlock2D"] * len(channels),
          "up_block_types": ["UpDecoderBlock2D"] * len(channels),
          "layers_per_block": len(blocks),
          "latent_channels": int(np.shape(state[prefix + "quant_conv.weight"])[0]) // 2,
          "in_channels": int(np.shape(state[prefix + "encoder.conv_in.weight"])[1]),
          "out_channels": int(np.shape(state[prefix + "decoder.conv_out.weight"])[0]),
          "norm_num_groups": 32, "scaling_factor": 0.18215}


def _sd_parts_from_single_file(src: str, ema: bool, overrides: Mapping[str, Any]):
  state = files.read_state_dict(src)
  parts = single_file.detect_parts(state)
  missing = [p for p in ("unet", "vae", "text_encoder") if p not in parts]
  if missing:
    raise ValueError(f"{src}: a Stable Diffusion single file holds a U-Net "
                     "(model.diffusion_model.*), a VAE (first_stage_model.*) and a text encoder "
                     f"(cond_stage_model.*); this one lacks {missing}")
  unet_config = single_file.unet_config_from_state(state, overrides=overrides.get("unet"))
  unet_state = single_file.ldm_unet_to_diffusers_names(state, unet_config, ema=ema)
  vae_config = {**_vae_config_from_state(state), **(overrides.get("vae") or {})}
  vae_state = ae_convert.ldm_vae_to_diffusers_names(state)
  if parts["text_encoder"] == "sd1":
    text_state = clip_convert.sd1_clip_names(state)
  else:  # SD 2.x: diffusers keeps 23 of OpenCLIP's 24 blocks (the penultimate layer's output)
    text_state = clip_convert.openclip_to_transformers_names(state, drop_last=1)
  text_extra = dict(overrides.get("text_encoder") or {})
  text_config = {**clip_convert.config_from_state(text_state,
                                                  head_dim=text_extra.pop("head_dim", 64)),
                 **text_extra}
  # The sample size: 512 px SD 1.x; 768 px for SD 2.x v-models (a 512 px 2.x base says so).
  unet_config.setdefault("sample_size", 64)
  return unet_config, unet_state, vae_config, vae_state, text_config, text_state, {}, None


def _convert_sd(src: str, workdir: str, kind: str, *, prediction: str | None, ema: bool,
                weights_variant: str | None, config_file: str | None,
                overrides: Mapping[str, Any]) -> dict[str, Any]:
  parts = (_sd_parts_from_folder(src, weights_variant) if kind == "sd_folder"
           else _sd_parts_from_single_file(src, ema, overrides))
  unet_config, unet_state, vae_config, vae_state, text_config, text_state, scheduler, tok = parts
  unet, unet_vars = unet_from_diffusers(unet_config, unet_state)
  del unet
  ae_module, ae_vars = ae_convert.autoencoder_from_diffusers(vae_config, vae_state)
  text_model, text_vars = clip_convert.clip_text_from_transformers(text_config, text_state)
  values = _sd_values(unet_config, text_model, ae_module, scheduler, prediction)
  variant = "arch=sd21" if values["model.context_dim"] == 1024 else None
  config, config_name = _experiment("sd/txt2img", variant, config_file)
  values.update(_tokenizer_settings(tok, workdir))
  changed = _overrides(config, values)
  write_workdir(workdir, config, {"unet": unet_vars["params"]},
                {"text_encoder": text_vars["params"], "autoencoder": ae_vars["params"]})
  return {"format": kind, "method": config.method, "config": config_name, "overrides": changed}


# ---------------------------------------------------------------------- DDPM


def _convert_ddpm(src: str, workdir: str, kind: str, *, weights_variant: str | None,
                  config_file: str | None) -> dict[str, Any]:
  folder = os.path.join(src, "unet") if kind == "ddpm_folder" else src
  unet_config, state = _folder_model(folder, variant=weights_variant)
  module, variables = unet_from_diffusers(unet_config, state)
  config, config_name = _experiment("ddpm/cifar", None, config_file)
  scheduler_path = os.path.join(src, "scheduler", "scheduler_config.json")
  scheduler = _read_json(scheduler_path) if os.path.isfile(scheduler_path) else {}
  values = {"model.ch": module.ch, "model.ch_mult": tuple(module.ch_mult),
            "model.num_res_blocks": module.num_res_blocks,
            "model.num_groups": module.num_groups,
            "data.image_size": int(unet_config.get("sample_size", 32)),
            "data.channels": int(unet_config.get("in_channels", 3))}
  size = values["data.image_size"]
  values["model.attn_resolutions"] = tuple(size // 2**level for level in module.attn_levels)
  for key in ("norm_eps", "downsample_padding", "flip_sin_to_cos", "freq_shift"):
    if getattr(module, key) != getattr(type(module), key):
      raise ValueError(f"{folder}: {key}={getattr(module, key)} differs from the DDPM layout of "
                       "diffusion.ddpm; load this U-Net with jgen.convert.load instead")
  if scheduler:
    values.update({"diffusion.schedule": scheduler.get("beta_schedule", "linear"),
                   "diffusion.num_timesteps": int(scheduler.get("num_train_timesteps", 1000)),
                   "diffusion.beta_start": float(scheduler.get("beta_start", 1e-4)),
                   "diffusion.beta_end": float(scheduler.get("beta_end", 0.02)),
                   "diffusion.prediction": PREDICTIONS[scheduler.get("prediction_type",
                                                                     "epsilon")]})
  changed = _overrides(config, values)
  write_workdir(workdir, config, {"params": variables["params"]})
  return {"format": kind, "method": config.method, "config": config_name, "overrides": changed}


# ---------------------------------------------------------------------- StyleGAN2-ADA


def _convert_stylegan2(src: str, workdir: str, *, config_file: str | None) -> dict[str, Any]:
  """An NVlabs pickle (read without running it: `jgen.convert.stylegan2`) as a
  ``gan.stylegan2`` work directory; everything is read and checked before the directory is
  made, and the checkpoint is written to a temporary sibling renamed into place."""
  converted = sg2_convert.read(src)
  config, config_name = _experiment("gan/stylegan2_transfer", None, config_file)
  values = {**converted["values"], "init_from.workdir": ""}
  if converted["ada_p"] is not None:
    values.update({"gan.ada": True, "gan.ada_p": converted["ada_p"]})
  values["data.batch_size"] = max(int(config.data.batch_size), int(values.get(
      "model.mbstd_group", 1) or 1))
  changed = _overrides(config, values)
  params = dict(converted["params"])
  if "discriminator" not in params:
    raise sg2_convert.ConversionError(f"{src}: no discriminator (D) in the pickle; jgen's "
                                      "work directory holds G and D (sampling alone needs G)")
  model_state: dict[str, Any] = {}
  if converted["w_avg"] is not None:
    model_state["w_avg"] = converted["w_avg"]
  if converted["ada_p"] is not None:
    model_state["ada"] = {"p": np.float32(converted["ada_p"]),
                          "rt_sum": np.float32(0.0), "rt_count": np.float32(0.0)}
  emas = {"ema": {"generator": converted["ema"]}} if config.train.ema_decay else None
  if os.path.exists(workdir) and os.listdir(workdir):
    raise FileExistsError(f"{workdir} exists and is not empty; convert into a new directory")
  tmp = f"{os.path.abspath(workdir).rstrip(os.sep)}.converting-{os.getpid()}"
  try:
    write_workdir(tmp, config, params, model_state=model_state, emas=emas)
    if os.path.isdir(workdir):
      os.rmdir(workdir)
    os.replace(tmp, workdir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return {"format": "stylegan2_pickle", "method": config.method, "config": config_name,
          "overrides": changed}


def convert(src: str, workdir: str, *, prediction: str | None = None, ema: bool = False,
            weights_variant: str | None = None, config_file: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Converts a checkpoint (see the module docstring) into a new jgen work directory.

  Args:
    src: a diffusers folder or a single checkpoint file.
    workdir: the work directory to write (must hold no checkpoint yet).
    prediction: 'eps' | 'v' | 'x0', overriding the scheduler's (single files: eps by default).
    ema: a single file's ``model_ema`` weights instead of its ``model`` ones.
    weights_variant: a diffusers weight variant to prefer ("fp16").
    config_file: the experiment config to start from (default: the repo's experiments/).
    overrides: single files: diffusers config entries per part (``{"unet": {...}, "vae":
      {...}, "text_encoder": {...}}``) for what shapes cannot tell (tiny models' heads and
      groups; the text encoder also takes ``head_dim``, 64 in every CLIP).

  Returns:
    ``{"format", "method", "config", "overrides"}``: what was read, and the ``--config``
    file and overrides that sample the work directory.
  """
  kind = detect_format(src)
  if kind == "stylegan2_pickle":
    return _convert_stylegan2(src, workdir, config_file=config_file)
  if prediction is not None and prediction not in PREDICTIONS.values():
    raise ValueError(f"prediction={prediction!r}; choose one of {sorted(PREDICTIONS.values())}")
  if kind in ("sd_folder", "single_file"):
    return _convert_sd(src, workdir, kind, prediction=prediction, ema=ema,
                       weights_variant=weights_variant, config_file=config_file,
                       overrides=overrides or {})
  return _convert_ddpm(src, workdir, kind, weights_variant=weights_variant,
                       config_file=config_file)
