"""`python -m jgen.export WORKDIR OUT --what=...`: what a jgen run holds, in formats others load.

  python -m jgen.export /tmp/sd15 /tmp/sd15_unet --what=unet          # diffusers model folders
  python -m jgen.export /tmp/sd15 /tmp/sd15_vae --what=vae
  python -m jgen.export /tmp/ddpm_cifar /tmp/ddpm_unet --what=unet --source=ema
  python -m jgen.export /tmp/cn /tmp/cn_out --what=controlnet
  python -m jgen.export /tmp/sd15_lora lora.safetensors --what=lora-peft   # load_lora_weights
  python -m jgen.export /tmp/sd15_lora lora_kohya.safetensors --what=lora-kohya
  python -m jgen.export /tmp/sd15 learned_embeds.safetensors --what=embedding --token='<cat>'

The run is read as it was stored: the latest config of its run record and the raw arrays of one
checkpoint (``--step``, the latest by default). ``--source=ema`` takes the averaged weights
(the EMA's leaves over the raw tree, so an EMA of a subset still gives a whole model).

What is written (`jgen.convert.to_diffusers`, `jgen.convert.lora_export`):

* ``unet``: a ``UNet2DConditionModel`` (a Stable Diffusion run's ``params/unet``) or
  ``UNet2DModel`` (a DDPM run's ``params/params``) folder; LoRA adapters in the run's ``lora``
  subtree are merged in first (W + (alpha / r) A B), as the run samples.
* ``vae``: the first stage (``frozen/autoencoder``) as ``AutoencoderKL`` / ``VQModel``.
* ``controlnet``: a ``ControlNetModel`` of the control branch (``params/.../control``).
* ``lora-peft`` / ``lora-kohya``: the adapters, from ``WORKDIR/adapters`` (the adapter-only
  checkpoints) or else the ``lora`` subtree of the parameters; peft files carry alpha in the
  header (``lora_adapter_metadata``), kohya files one ``.alpha`` per module.
* ``embedding``: a placeholder token's rows of the text encoder's token table, as diffusers'
  ``learned_embeds.safetensors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any

import numpy as np

from jgen import errors
from jgen.nn.ldm_autoencoder import LDMAutoencoder
from jgen.convert import lora_export, textual_inversion, to_diffusers
from jgen.diffusion.stable_diffusion import make_tokenizer
from jgen.nn.controlnet import ControlNet, ControlledUNet
from jgen.nn.lora import SUBTREE, Lora
from jgen.nn.unet import UNet
from jgen.train import adapters as adapters_lib
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.checkpoint import Checkpointer
from jgen.train.method import load_method

log = logging.getLogger("jgen")

__all__ = ["WHATS", "Run", "export", "main", "open_run"]

WHATS = ("unet", "vae", "controlnet", "lora-peft", "lora-kohya", "embedding")
SOURCES = ("params", "ema")


class ExportError(errors.ConversionError):
  """The work directory lacks what was asked for (the message lists what it has)."""


@dataclasses.dataclass
class Run:
  """A work directory as stored: its config, method, checkpoint items and step."""

  workdir: str
  config: Any
  method: Any
  items: dict[str, Any]
  step: int | None

  def tree(self, source: str) -> dict[str, Any]:
    """The stored parameters (``params``) or the EMA's leaves over them (``ema``)."""
    if source not in SOURCES:
      raise ExportError(f"source={source!r}; choose one of {SOURCES}")
    params = dict(self.items["params"])
    if source == "params":
      return params
    emas = self.items.get("emas") or {}
    if "ema" not in emas:
      raise ExportError(f"{self.workdir} keeps no EMA (it stores {sorted(self.items)}); "
                        "export --source=params")
    return rules_lib.merge(params, emas["ema"])

  def has(self) -> str:
    """What the checkpoint holds, for error messages."""
    parts = [f"params/{k}" for k in self.items.get("params", {})]
    parts += [f"frozen/{k}" for k in self.items.get("frozen") or {}]
    parts += [f"emas/{k}" for k in self.items.get("emas") or {}]
    if os.path.isdir(os.path.join(self.workdir, "adapters")):
      parts.append("adapters/")
    return f"{self.workdir} ({self.config.method}) holds {', '.join(parts) or 'nothing'}"


def open_run(workdir: str, step: int | None = None) -> Run:
  """The run record's latest config, its method, and checkpoint `step` (None: the latest).

  Raises:
    ExportError: no run record or no checkpoint.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ExportError(f"{workdir} has no checkpoints/ directory: pass a jgen work directory "
                      "(a training run or one written by python -m jgen.convert)")
  config = run_record.latest_config(workdir)
  with Checkpointer(ckpt_dir, async_save=False) as ckpt:
    if ckpt.latest_step() is None:
      raise ExportError(f"{ckpt_dir} holds no checkpoint yet")
    items = ckpt.restore(None, step=step)
  return Run(workdir, config, load_method(config), dict(items), step)


def _unet(run: Run) -> tuple[Any, str]:
  """(the method's U-Net or ControlledUNet, its key in the parameter tree)."""
  for attr, key in (("unet", "unet"), ("model", "params")):
    module = getattr(run.method, attr, None)
    if isinstance(module, (UNet, ControlledUNet)):
      return module, key
  raise ExportError(f"{run.has()}; its method has no U-Net (a Stable Diffusion, DDPM or "
                    "ControlNet run has one)")


def _sample_size(run: Run) -> int:
  shape = getattr(run.method, "latent_shape", None) or getattr(run.method, "image_shape")
  return int(shape[0])


def _merged(run: Run, tree: dict[str, Any]) -> dict[str, Any]:
  """`tree` with its ``lora`` adapters folded in (unchanged without)."""
  if SUBTREE not in tree:
    return tree
  lora = adapters_lib.lora_from_config(run.config)
  if lora is None:
    raise ExportError(f"{run.workdir}: the parameters hold a lora subtree but the config has no "
                      "lora.rank; cannot merge the adapters")
  log.info("merging the run's LoRA adapters (rank %d) into the exported weights", lora.rank)
  return lora.view(tree)


def _unet_folder(run: Run, out: str, source: str, linear_projection: bool | None) -> str:
  module, key = _unet(run)
  tree = _merged(run, run.tree(source))
  if isinstance(module, ControlledUNet):
    module, params = module.unet, tree[key]["unet"]
  else:
    params = tree[key]
  config, state = to_diffusers.unet_to_diffusers(module, params, sample_size=_sample_size(run),
                                                 linear_projection=linear_projection)
  return to_diffusers.save_model(out, config, state)


def _vae_folder(run: Run, out: str, source: str, linear_projection: bool | None) -> str:
  del source, linear_projection  # a first stage is frozen: one copy, no EMA
  module = getattr(run.method, "autoencoder", None)
  frozen = run.items.get("frozen") or {}
  if not isinstance(module, LDMAutoencoder) or "autoencoder" not in frozen:
    raise ExportError(f"{run.has()}; --what=vae needs a frozen LDM first stage "
                      "(frozen/autoencoder of a Stable Diffusion run)")
  config, state = to_diffusers.autoencoder_to_diffusers(
      module, frozen["autoencoder"], sample_size=int(run.config.data.image_size))
  return to_diffusers.save_model(out, config, state)


def _controlnet_folder(run: Run, out: str, source: str, linear_projection: bool | None) -> str:
  model, key = _unet(run)
  if not isinstance(model, ControlledUNet):
    raise ExportError(f"{run.has()}; --what=controlnet needs a ControlNet run (params/control)")
  branch = ControlNet(model.unet, tuple(model.hint_channels), hint_layout=model.hint_layout,
                      hint_range=tuple(model.hint_range))
  params = _merged(run, run.tree(source))[key]["control"]
  config, state = to_diffusers.controlnet_to_diffusers(branch, params,
                                                       linear_projection=linear_projection)
  return to_diffusers.save_model(out, config, state)


def _adapters(run: Run, source: str) -> tuple[Lora, dict[str, Any]]:
  """The run's `Lora` and stored adapters (``{"lora": {key: ...}}``), from ``adapters/`` if
  there is one, else from the parameters."""
  directory = os.path.join(run.workdir, "adapters")
  if os.path.isfile(os.path.join(directory, adapters_lib.SETTINGS)):
    which = "params" if source == "params" else "ema"
    return adapters_lib.load_adapters(directory, step=run.step, which=which)
  tree = run.tree(source)
  lora = adapters_lib.lora_from_config(run.config)
  if SUBTREE not in tree or lora is None:
    raise ExportError(f"{run.has()}; no LoRA adapters (a run with config.lora.rank > 0 keeps "
                      "them in adapters/ and in params/lora)")
  return lora, {SUBTREE: tree[SUBTREE]}


def _lora_file(kind: str):
  def write(run: Run, out: str, source: str, linear_projection: bool | None) -> str:
    module, key = _unet(run)
    if isinstance(module, ControlledUNet):
      raise ExportError("LoRA export reads a U-Net's adapters; this is a ControlNet run")
    lora, stored = _adapters(run, source)
    adapters = stored[SUBTREE].get(key)
    if adapters is None:
      raise ExportError(f"the adapters hold {sorted(stored[SUBTREE])}, not the U-Net's {key!r}")
    if linear_projection is None:
      linear_projection = (module.attention == "transformer"
                           and to_diffusers.linear_projection_default(module))
    path = os.path.join(out, "pytorch_lora_weights.safetensors") if os.path.isdir(out) else out
    write_fn = lora_export.export_peft if kind == "peft" else lora_export.export_kohya
    write_fn(adapters, lora, path, params=run.items["params"][key],
             use_linear_projection=linear_projection)
    return path
  return write


def _embedding_file(run: Run, out: str, token: str | None) -> str:
  trained = run.config.get("textual_inversion", {}).get("train_token", "")
  token = token or trained
  if not token:
    raise ExportError("--what=embedding needs --token (the placeholder, e.g. '<cat-toy>')")
  text_config = run.config.get("text")
  found = [(n, t) for n in ("params", "frozen") for k, t in (run.items.get(n) or {}).items()
           if k == "text_encoder"]
  if text_config is None or not found:
    raise ExportError(f"{run.has()}; --what=embedding needs a CLIP text encoder "
                      "(text_encoder of a Stable Diffusion run) and its tokenizer")
  table = np.asarray(found[0][1]["token_embedding"]["embedding"])
  offsets = (run.items.get("params") or {}).get("token_offsets")
  if token == trained and offsets is not None:  # sd_finetune:textual_inversion: init row + offset
    rows = table[np.asarray(run.method.train_init_ids)] + np.asarray(offsets)
  else:
    tokenizer = make_tokenizer(text_config)
    if token not in tokenizer.added and token not in tokenizer.encoder:
      raise ExportError(f"token {token!r} is not in the run's tokenizer (added tokens: "
                        f"{sorted(tokenizer.added)[:10]})")
    rows = textual_inversion.embeddings_of(found[0][1], tokenizer, [token])[token]
  path = os.path.join(out, "learned_embeds.safetensors") if os.path.isdir(out) else out
  textual_inversion.export_embedding(token, rows, path)
  return path


_WRITERS = {"unet": _unet_folder, "vae": _vae_folder, "controlnet": _controlnet_folder,
            "lora-peft": _lora_file("peft"), "lora-kohya": _lora_file("kohya")}


def export(workdir: str, out: str, what: str, *, step: int | None = None,
           source: str = "params", token: str | None = None,
           linear_projection: bool | None = None) -> str:
  """Writes `what` of the run in `workdir` to `out` (see the module docstring).

  Args:
    workdir: a jgen work directory.
    out: the folder (unet, vae, controlnet) or file (`lora-*`, embedding; a folder gets
      ``pytorch_lora_weights.safetensors`` / ``learned_embeds.safetensors``).
    what: one of `WHATS`.
    step: the checkpoint step (None: the latest).
    source: ``params`` or ``ema``.
    token: the placeholder token (``embedding``).
    linear_projection: diffusers' ``use_linear_projection`` (None: SD 2.x's Linear when the
      heads differ by level, else SD 1.x's 1 x 1 convolution).

  Returns:
    the path written.

  Raises:
    ExportError: the run lacks what was asked (the message lists what it holds).
  """
  if what not in WHATS:
    raise ExportError(f"what={what!r}; choose one of {WHATS}")
  run = open_run(workdir, step)
  if what == "embedding":
    return _embedding_file(run, out, token)
  return _WRITERS[what](run, out, source, linear_projection)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jgen.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir", help="the jgen work directory to read")
  parser.add_argument("out", help="the folder or file to write")
  parser.add_argument("--what", choices=WHATS, required=True)
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  parser.add_argument("--source", choices=SOURCES, default="params")
  parser.add_argument("--token", help="--what=embedding: the placeholder token")
  parser.add_argument("--linear-projection", choices=("auto", "yes", "no"), default="auto",
                      help="diffusers' use_linear_projection (auto: SD 2.x-style heads -> yes)")
  parser.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  linear = {"auto": None, "yes": True, "no": False}[args.linear_projection]
  try:
    path = export(args.workdir, args.out, args.what, step=args.step, source=args.source,
                  token=args.token, linear_projection=linear)
  except (errors.JgenError, ValueError, FileNotFoundError, FileExistsError) as e:
    return errors.report(e, parser.prog, verbose=args.verbose or None)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
