"""pix2pix / CycleGAN checkpoints as jgen work directories: ``python -m jgen.convert SRC WORKDIR``.

=========================================  ============================================
source                                     work directory
=========================================  ============================================
a U-Net generator file                     ``gan.pix2pix``
(``latest_net_G.pth``, the zoo's           (experiments/translation/pix2pix_facades.py):
``facades_label2photo.pth``), or a         ``params/generator`` and, from a folder's
pix2pix checkpoint folder                  ``latest_net_D.pth``, ``params/discriminator``;
(``latest_net_G``, ``_D.pth``)             batch statistics into ``model_state``
a ResNet generator file                    ``gan.cyclegan``
(``horse2zebra.pth``,                      (experiments/translation/cyclegan_horse2zebra.py):
``latest_net_G_A.pth``), or a              ``g_ab`` = G_A (A -> B), ``g_ba`` = G_B,
CycleGAN folder (``latest_net_G_A``,       ``d_b`` = D_A (it judges G_A's B images),
``G_B``, ``D_A``, ``D_B``)                 ``d_a`` = D_B
=========================================  ============================================

Every network is read and converted (`jgen.convert.translation`: the architecture from the
shapes, the flags checked against them) before anything is written; a network the source does
not hold (a lone generator's discriminator, a CycleGAN file's G_B) starts from the method's
initialization at seed 0, and the result says which. The config starts from the experiment
file (or ``config_file``) and takes the architecture and the reference settings (U-Net
``dropout_placement='reference'``, ``edge_bias=False``; ResNet ``upsample='transpose'``,
``down_padding='zero'``), a batch-norm pix2pix normalizing each test image by its own
statistics (``gan.test_batch_stats``, the reference's test default); the fields that differ
from the file's defaults are the ``--config.*`` overrides to sample with. The data source
stays the file's: point ``--config.data.source`` at the images to translate.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jgen.convert import pipeline
from jgen.convert import translation as tr
from jgen.train.method import load_method

__all__ = ["NETWORKS", "convert_state_dicts", "convert_translation", "is_translation_source"]

# file stem -> (method, jgen network) of the reference's checkpoint names
NETWORKS = {"G": ("gan.pix2pix", "generator"), "D": ("gan.pix2pix", "discriminator"),
            "G_A": ("gan.cyclegan", "g_ab"), "G_B": ("gan.cyclegan", "g_ba"),
            "D_A": ("gan.cyclegan", "d_b"), "D_B": ("gan.cyclegan", "d_a")}
_EXPERIMENTS = {"gan.pix2pix": "translation/pix2pix_facades",
                "gan.cyclegan": "translation/cyclegan_horse2zebra"}


def is_translation_source(src: str) -> bool:
  """A ``.pth`` file, or a folder holding the reference's ``latest_net_*.pth``."""
  if os.path.isdir(src):
    return bool(glob.glob(os.path.join(src, "latest_net_*.pth")))
  return src.endswith(".pth")


def _sources(src: str) -> dict[str, str]:
  """{reference network name: file} of a file (its generator) or a checkpoint folder."""
  if not os.path.isdir(src):
    if not os.path.isfile(src):
      raise FileNotFoundError(f"no checkpoint at {src}")
    return {"file": src}
  found = {n: os.path.join(src, f"latest_net_{n}.pth") for n in NETWORKS}
  found = {n: p for n, p in found.items() if os.path.isfile(p)}
  if not found or ({"G", "D"} & set(found) and {"G_A", "G_B", "D_A", "D_B"} & set(found)):
    raise tr.ArchError(f"{src}: expected latest_net_G.pth (+ latest_net_D.pth) of pix2pix or "
                       "latest_net_G_A/G_B/D_A/D_B.pth of CycleGAN; it holds "
                       f"{sorted(os.listdir(src))[:12]}")
  return found


def _read(states: Mapping[str, tuple[Mapping[str, Any], str]], *, arch: str | None,
          norm: str | None, ngf: int | None, ndf: int | None, input_nc: int | None,
          output_nc: int | None, n_layers_d: int | None, dropout: float | None
          ) -> tuple[str, dict[str, tuple[tr.Arch, Any]]]:
  """(method, {jgen network: (arch, variables)}) of every state dict, flags checked."""
  nets: dict[str, tuple[tr.Arch, Any]] = {}
  method = None
  for name, (state, path) in states.items():
    a = tr.arch_from_state(state, dropout=dropout, where=path)
    if a.kind == "patch":
      if name == "file":
        raise tr.ArchError(f"{path} holds a discriminator ({a.describe()}); convert its "
                           "generator, or the checkpoint folder that holds both")
      a.check(arch=arch if arch in ("basic", "n_layers") else None, norm=norm, width=ndf,
              depth=n_layers_d)
    else:
      a.check(arch=arch if arch not in ("basic", "n_layers") else None, norm=norm,
              width=ngf, in_channels=input_nc, out_channels=output_nc)
    if name == "file":
      name = "G" if a.kind == "unet" else "G_A"
    kind_method = "gan.pix2pix" if a.kind == "unet" else "gan.cyclegan"
    net_method, net = NETWORKS[name]
    if a.kind != "patch" and net_method != kind_method:
      raise tr.ArchError(f"{path}: a {a.describe()}; jgen's {net_method} uses "
                         f"{'U-Net' if net_method == 'gan.pix2pix' else 'ResNet'} generators "
                         "(a pix2pix ResNet or a CycleGAN U-Net is not supported)")
    if method not in (None, net_method):
      raise tr.ArchError(f"{path}: mixes pix2pix and CycleGAN networks")
    method = net_method
    nets[net] = (a, tr.convert_state_dict(state, a, where=path)[1])
  return method, nets


def _values(method: str, nets: Mapping[str, tuple[tr.Arch, Any]], *, ndf: int | None,
            n_layers_d: int | None, norm: str | None, image_size: int | None,
            config_size: int) -> tuple[dict[str, Any], tuple[int, int]]:
  """(config values, (source channels, target channels))."""
  gen = nets.get("generator") or nets.get("g_ab") or nets.get("g_ba")
  g = gen[0]
  d = next((nets[k][0] for k in ("discriminator", "d_a", "d_b") if k in nets), None)
  size = image_size or config_size
  if g.kind == "unet" and size % 2 ** g.depth:
    if image_size:
      raise tr.ArchError(f"--image_size {image_size}: a U-Net of {g.depth} downsamplings needs "
                         f"a multiple of {2 ** g.depth}")
    size = 2 ** g.depth
  values: dict[str, Any] = {"model.ngf": g.width, "model.g_norm": g.norm,
                            "data.channels": g.out_channels, "data.image_size": size}
  values["model.ndf"] = d.width if d else (ndf or 64)
  values["model.d_norm"] = d.norm if d else (norm or g.norm)
  layers = d.depth if d else (n_layers_d or 3)
  if method == "gan.pix2pix":
    if d and d.in_channels != g.in_channels + g.out_channels:
      raise tr.ArchError(f"the discriminator reads {d.in_channels} channels, the generator "
                         f"maps {g.in_channels} to {g.out_channels}: a pix2pix D reads both")
    values.update({"model.num_downs": g.depth, "model.dropout": g.dropout,
                   "model.dropout_placement": "reference", "model.edge_bias": False,
                   "model.n_layers": layers, "gan.test_batch_stats": g.norm == "batch"})
  else:
    if g.in_channels != g.out_channels:
      raise tr.ArchError(f"a CycleGAN generator of {g.in_channels} -> {g.out_channels} "
                         "channels: jgen's CycleGAN configs have one channel count for both "
                         "domains")
    values.update({"model.n_blocks": g.depth, "model.upsample": "transpose",
                   "model.down_padding": "zero", "model.d_layers": layers})
  return values, (g.in_channels, g.out_channels)


def convert_translation(src: str, workdir: str, **flags: Any) -> dict[str, Any]:
  """Converts a reference checkpoint file or folder (module docstring) into `workdir`.

  Args:
    src: a ``.pth`` generator, or a folder of ``latest_net_*.pth``.
    workdir: the work directory to write (must hold no checkpoint yet).
    **flags: those of `convert_state_dicts`.

  Returns:
    what `convert_state_dicts` returns.
  """
  _check_workdir(workdir)
  states = {name: (tr.read_reference_file(path), path) for name, path in _sources(src).items()}
  return convert_state_dicts(states, workdir, **flags)


def _check_workdir(workdir: str) -> None:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise FileExistsError(f"{workdir} already holds checkpoints; convert into a new directory")


def convert_state_dicts(states: Mapping[str, tuple[Mapping[str, Any], str]], workdir: str, *,
                        arch: str | None = None, norm: str | None = None,
                        ngf: int | None = None, ndf: int | None = None,
                        input_nc: int | None = None, output_nc: int | None = None,
                        n_layers_d: int | None = None, dropout: float | None = None,
                        image_size: int | None = None, config_file: str | None = None
                        ) -> dict[str, Any]:
  """Converts reference state dicts into `workdir`.

  Args:
    states: {reference name ('G', 'D', 'G_A', 'G_B', 'D_A', 'D_B', or 'file': a lone
      generator): (torch key -> array, where it came from)}.
    workdir: the work directory to write (must hold no checkpoint yet).
    arch: the reference's --netG / --netD name (`translation.ARCHS`), checked against the file.
    norm, ngf, ndf, input_nc, output_nc, n_layers_d: the reference's flags, checked against
      the files (ndf, n_layers_d and norm also size a discriminator the source lacks).
    dropout: the U-Net's dropout rate (a state dict cannot tell; None: 0.5, the reference's
      pix2pix default; 0: --no_dropout).
    image_size: the config's image size (default: the experiment file's; for a U-Net a
      multiple of 2**depth).
    config_file: the experiment config to start from.

  Returns:
    ``{"format", "method", "config", "overrides", "converted", "initialized"}``.

  Raises:
    FileNotFoundError, FileExistsError, translation.ArchError, UnreadableFileError,
    ConversionError: nothing is written then.
  """
  _check_workdir(workdir)
  method_name, nets = _read(states, arch=arch, norm=norm, ngf=ngf, ndf=ndf,
                            input_nc=input_nc, output_nc=output_nc, n_layers_d=n_layers_d,
                            dropout=dropout)
  config, config_name = pipeline._experiment(_EXPERIMENTS[method_name], None, config_file)  # pylint: disable=protected-access
  if config.method != method_name:
    raise tr.ArchError(f"{config_name} is a {config.method} config; the checkpoint needs "
                       f"{method_name}")
  values, (c_in, c_out) = _values(method_name, nets, ndf=ndf, n_layers_d=n_layers_d,
                                  norm=norm, image_size=image_size,
                                  config_size=config.data.image_size)
  changed = pipeline._overrides(config, values)  # pylint: disable=protected-access
  size = config.data.image_size
  image = lambda c: np.zeros((1, size, size, c), np.float32)
  batch = ({"source": image(c_in), "target": image(c_out)} if method_name == "gan.pix2pix"
           else {"image_a": image(c_in), "image_b": image(c_out)})
  fresh = load_method(config).init(jax.random.key(0), batch)
  params = {k: dict(v) for k, v in fresh.params.items()}
  model_state = {k: dict(v) for k, v in fresh.model_state.items()}
  for net, (_, variables) in nets.items():
    params[net] = variables["params"]
    model_state[net] = {c: v for c, v in variables.items() if c != "params"}
  pipeline.write_workdir(workdir, config, params, batch=batch, model_state=model_state)
  return {"format": "pytorch-CycleGAN-and-pix2pix", "method": method_name,
          "config": config_name, "overrides": changed, "converted": sorted(nets),
          "initialized": sorted(set(params) - set(nets))}
