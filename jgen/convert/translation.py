"""pix2pix / CycleGAN checkpoints (junyanz/pytorch-CycleGAN-and-pix2pix) onto jgen's networks.

The reference saves each network's bare state dict (``latest_net_G.pth``, ``latest_net_D.pth``,
``latest_net_G_A.pth`` ...; the model zoo's ``horse2zebra.pth`` / ``facades_label2photo.pth``
are the same). Its keys are ``nn.Sequential`` indices, so a name is a position:

==================================================  ==========================================
reference key (torch)                               jgen leaf (`jgen.nn.translation`)
==================================================  ==========================================
U-Net level i (0 outermost) lives in ``P_i``:       ``UNetGenerator``
``P_0 = model.model.``, ``P_1 = P_0 1.model.``,
``P_{i+1} = P_i 3.model.``
``P_0 0`` (down conv), ``P_0 3`` (up conv, bias)    ``down_0``, ``up_0``
``P_i 1``, ``P_i 2`` (norm), ``P_i 5``, ``P_i 6``   ``down_i``, ``down_norm_i``, ``up_i``,
(norm), 0 < i < n-1                                 ``up_norm_i``
``P_{n-1} 1``, ``P_{n-1} 3``, ``P_{n-1} 4`` (norm)  ``down_{n-1}``, ``up_{n-1}``, ``up_norm_{n-1}``
ResNet: ``model.1`` conv 7x7, ``model.2`` norm      ``ResnetGenerator``: ``Conv_0``, ``_Norm_0``
``model.4`` / ``.7`` stride-2 convs, norms 5 / 8    ``Conv_1`` / ``Conv_2``, ``_Norm_1`` / ``_2``
``model.{10+b}.conv_block.{1,2,5,6}``               ``_ResnetBlock_b/Conv_0, _Norm_0, Conv_1,
                                                    _Norm_1``
``model.{10+B}`` / ``{13+B}`` transposed convs,     ``ConvTranspose_0`` / ``_1``, ``_Norm_3`` /
norms ``{11+B}`` / ``{14+B}``; ``model.{17+B}``     ``_4``; ``Conv_3`` (B = n_blocks)
PatchGAN: ``model.0``, ``model.{3k-1}`` (k = 1..n)  ``PatchDiscriminator``: ``Conv_0``,
norms ``model.{3k}``, ``model.{3n+2}``              ``Conv_k``, ``_Norm_{k-1}``, ``logits``
==================================================  ==========================================

Leaves: a ``Conv2d`` weight ``[O, I, kh, kw]`` -> Flax kernel ``[kh, kw, I, O]``; a
``ConvTranspose2d`` weight ``[I, O, kh, kw]`` -> the kernel of Flax's ``ConvTranspose`` (which
correlates the dilated input with its kernel, where torch's transposed conv is the gradient of a
correlation): spatially flipped and transposed to ``[kh, kw, I, O]``, and for the U-Net's up
convs that read a skip concatenation the two halves of ``I`` swapped (the reference
concatenates ``[skip, up]``, jgen ``[up, skip]``); BatchNorm ``weight``,
``bias`` -> ``scale``, ``bias`` and ``running_mean``, ``running_var`` -> the ``batch_stats``
``mean``, ``var`` (``num_batches_tracked`` dropped). InstanceNorm layers (``affine=False``)
hold nothing, but files written with PyTorch 0.4's ``track_running_stats=True`` default carry
their ``running_mean`` / ``running_var`` / ``num_batches_tracked``: dropped (the reference drops
them on load too), and only at the norm positions.

The architecture is read from the shapes: the kind (U-Net, ResNet or PatchGAN), the U-Net depth
and the number of residual blocks, ngf / ndf and the input / output channels, the norm (batch:
affine weights; instance: conv biases, no weights; the reference's 'none' has neither and
jgen's 'none' has biases, so it is refused). The flags name what a state dict cannot hold
(U-Net dropout) and must agree with the rest (`Arch.check`). The settings that make jgen's
networks the reference ones: U-Net ``dropout_placement='reference'``, ``edge_bias=False``;
ResNet ``upsample='transpose'``, ``down_padding='zero'``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jgen.convert import common
from jgen.convert.common import ConversionError, StateDict, Tree
from jgen.errors import ConversionError as JgenConversionError
from jgen.metrics.weights import read_torch_file
from jgen.nn import translation as nets

__all__ = ["ARCHS", "Arch", "ArchError", "UnreadableFileError", "arch_from_state",
           "convert_state_dict", "deconv_kernel", "module_of", "name_map",
           "read_reference_file", "to_reference"]

# --arch names of the reference (`define_G` / `define_D`) -> (kind, depth or None).
ARCHS = {"unet_256": ("unet", 8), "unet_128": ("unet", 7), "resnet_9blocks": ("resnet", 9),
         "resnet_6blocks": ("resnet", 6), "basic": ("patch", 3), "n_layers": ("patch", None)}
_STATS = ("running_mean", "running_var", "num_batches_tracked")


_HINT = ("A conv without a bias or an extra bias: check --norm (batch-norm networks have no "
         "conv biases); other depths or widths: check --arch and that the file is the network "
         "you meant (latest_net_G vs latest_net_D).")


class ArchError(JgenConversionError):
  """A flag contradicts the file, or the file is no network of the reference."""


class UnreadableFileError(JgenConversionError):
  """A truncated or foreign file, or a pickle that would run code (refused unread)."""


@dataclasses.dataclass(frozen=True)
class Arch:
  """One reference network.

  Attributes:
    kind: 'unet', 'resnet' (generators) or 'patch' (the PatchGAN discriminator).
    depth: U-Net downsamplings, residual blocks, or PatchGAN stride-2 layers.
    norm: 'batch' or 'instance'.
    width: ngf (generators) or ndf.
    in_channels: input channels (a pix2pix D: source + target channels).
    out_channels: output channels (1 for a discriminator).
    dropout: U-Net / residual-block dropout (0.5 in the reference when on).
  """

  kind: str
  depth: int
  norm: str
  width: int
  in_channels: int
  out_channels: int
  dropout: float = 0.0

  def module(self) -> Any:
    """The jgen module with the reference's settings."""
    if self.kind == "unet":
      return nets.UNetGenerator(self.out_channels, ngf=self.width, num_downs=self.depth,
                                norm=self.norm, dropout=self.dropout,
                                dropout_placement="reference", edge_bias=False)
    if self.kind == "resnet":
      return nets.ResnetGenerator(self.out_channels, ngf=self.width, n_blocks=self.depth,
                                  norm=self.norm, upsample="transpose", down_padding="zero")
    return nets.PatchDiscriminator(ndf=self.width, n_layers=self.depth, norm=self.norm)

  def example_shape(self) -> tuple[int, int, int, int]:
    """The smallest square input [1, H, H, C] the network takes (for shapes only)."""
    size = {"unet": 2 ** self.depth, "resnet": 8, "patch": 3 * 2 ** self.depth}[self.kind]
    return (1, size, size, self.in_channels)

  def check(self, *, arch: str | None = None, norm: str | None = None,
            width: int | None = None, in_channels: int | None = None,
            out_channels: int | None = None, depth: int | None = None) -> None:
    """Raises `ArchError` when a given flag disagrees with what the file holds."""
    problems = []
    if arch is not None:
      if arch not in ARCHS:
        raise ArchError(f"unknown --arch {arch!r}; choose one of {sorted(ARCHS)}")
      kind, want = ARCHS[arch]
      if kind != self.kind or (want is not None and want != self.depth):
        problems.append(f"--arch {arch} is a {kind}" + (f" of depth {want}" if want else "")
                        + f", the file holds a {self.describe()}")
    for flag, given, held in (("--norm", norm, self.norm), ("--ngf/--ndf", width, self.width),
                              ("--input_nc", in_channels, self.in_channels),
                              ("--output_nc", out_channels, self.out_channels),
                              ("--n_layers_D", depth, self.depth)):
      if given is not None and given != held:
        problems.append(f"{flag}={given}, the file's network has {held}")
    if problems:
      raise ArchError("the flags contradict the checkpoint: " + "; ".join(problems)
                      + ". Drop the flag (the file tells) or pass the file of that network.")

  def describe(self) -> str:
    what = {"unet": f"U-Net of {self.depth} downsamplings (unet_{2 ** self.depth})",
            "resnet": f"ResNet generator of {self.depth} blocks",
            "patch": f"PatchGAN of {self.depth} layers"}[self.kind]
    return (f"{what}, {self.norm} norm, width {self.width}, {self.in_channels} -> "
            f"{self.out_channels} channels")


def deconv_kernel(w: np.ndarray) -> np.ndarray:
  """torch ConvTranspose2d ``[I, O, kh, kw]`` -> Flax ConvTranspose ``[kh, kw, I, O]``,
  spatially flipped (k[a, b] = w[..., kh-1-a, kw-1-b])."""
  if w.ndim != 4:
    raise ValueError(f"a ConvTranspose2d weight has 4 axes [I, O, kh, kw], got {w.shape}")
  return np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1))


def _inverse_deconv(k: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(k, (2, 3, 0, 1))[:, :, ::-1, ::-1])


def _swap_halves(w: np.ndarray) -> np.ndarray:
  """Swaps the two halves of axis 0 (its own inverse): the reference concatenates a U-Net
  skip as [skip, up], jgen as [up, skip], so an up conv's input channels are swapped."""
  h = w.shape[0] // 2
  return np.concatenate([w[h:], w[:h]], axis=0)


def skip_deconv_kernel(w: np.ndarray) -> np.ndarray:
  """`deconv_kernel` of a U-Net up conv that reads a skip concatenation."""
  return deconv_kernel(_swap_halves(w))


def _inverse_skip_deconv(k: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(_swap_halves(_inverse_deconv(k)))


def _inverse_conv(k: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))


# ---------------------------------------------------------------------- the name map


def _unet_prefix(level: int) -> str:
  """The key prefix of U-Net level i: the outermost block's sub-block is its module 1, every
  other block's is its module 3."""
  return "model.model." + ("1.model." + "3.model." * (level - 1) if level else "")


def _layers(arch: Arch) -> list[tuple[str, str, str]]:
  """(jgen module path, torch prefix, 'conv' | 'deconv' | 'skip_deconv' | 'norm') of every
  layer."""
  out: list[tuple[str, str, str]] = []
  n = arch.depth
  if arch.kind == "unet":
    for i in range(n):
      p = _unet_prefix(i)
      if i == 0:
        out += [("down_0", p + "0", "conv"), ("up_0", p + "3", "skip_deconv")]
      elif i == n - 1:
        out += [(f"down_{i}", p + "1", "conv"), (f"up_{i}", p + "3", "deconv"),
                (f"up_norm_{i}", p + "4", "norm")]
      else:
        out += [(f"down_{i}", p + "1", "conv"), (f"down_norm_{i}", p + "2", "norm"),
                (f"up_{i}", p + "5", "skip_deconv"), (f"up_norm_{i}", p + "6", "norm")]
  elif arch.kind == "resnet":
    out += [("Conv_0", "model.1", "conv"), ("_Norm_0", "model.2", "norm"),
            ("Conv_1", "model.4", "conv"), ("_Norm_1", "model.5", "norm"),
            ("Conv_2", "model.7", "conv"), ("_Norm_2", "model.8", "norm")]
    for b in range(n):
      p = f"model.{10 + b}.conv_block."
      out += [(f"_ResnetBlock_{b}/Conv_0", p + "1", "conv"),
              (f"_ResnetBlock_{b}/_Norm_0", p + "2", "norm"),
              (f"_ResnetBlock_{b}/Conv_1", p + "5", "conv"),
              (f"_ResnetBlock_{b}/_Norm_1", p + "6", "norm")]
    out += [("ConvTranspose_0", f"model.{10 + n}", "deconv"),
            ("_Norm_3", f"model.{11 + n}", "norm"),
            ("ConvTranspose_1", f"model.{13 + n}", "deconv"),
            ("_Norm_4", f"model.{14 + n}", "norm"), ("Conv_3", f"model.{17 + n}", "conv")]
  else:
    out.append(("Conv_0", "model.0", "conv"))
    for k in range(1, n + 1):
      out += [(f"Conv_{k}", f"model.{3 * k - 1}", "conv"),
              (f"_Norm_{k - 1}", f"model.{3 * k}", "norm")]
    out.append(("logits", f"model.{3 * n + 2}", "conv"))
  return out


def name_map(arch: Arch) -> list[tuple[str, str, Any]]:
  """(jgen leaf path with its collection, torch key, torch -> jgen function or None) of every
  leaf the reference network of `arch` can hold (biases included whether or not this norm
  has them; `convert_state_dict` keeps those the module has)."""
  leaves: list[tuple[str, str, Any]] = []
  for path, prefix, kind in _layers(arch):
    if kind == "norm":
      if arch.norm == "batch":
        leaves += [(f"params/{path}/BatchNorm_0/scale", prefix + ".weight", None),
                   (f"params/{path}/BatchNorm_0/bias", prefix + ".bias", None),
                   (f"batch_stats/{path}/BatchNorm_0/mean", prefix + ".running_mean", None),
                   (f"batch_stats/{path}/BatchNorm_0/var", prefix + ".running_var", None)]
      continue
    fn = {"conv": common.conv_kernel, "deconv": deconv_kernel,
          "skip_deconv": skip_deconv_kernel}[kind]
    leaves += [(f"params/{path}/kernel", prefix + ".weight", fn),
               (f"params/{path}/bias", prefix + ".bias", None)]
  return leaves


def _droppable(arch: Arch) -> list[str]:
  """Keys that may be in a file and mean nothing to jgen: BatchNorm's step counter, and the
  running statistics old files kept for InstanceNorm layers."""
  keys = []
  for _, prefix, kind in _layers(arch):
    if kind == "norm":
      stats = _STATS if arch.norm == "instance" else _STATS[2:]
      keys += [f"{prefix}.{s}" for s in stats]
  return keys


def module_of(arch: Arch) -> tuple[Any, dict[str, Any]]:
  """(module, expected variables as ShapeDtypeStructs) of `arch`."""
  module = arch.module()
  x = np.zeros(arch.example_shape(), np.float32)
  key = jax.random.key(0)
  variables = jax.eval_shape(lambda: module.init({"params": key, "dropout": key}, x,
                                                 train=False))
  return module, dict(variables)


# ---------------------------------------------------------------------- reading shapes


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...]:
  return tuple(np.shape(state[key]))


def _norm_of(state: Mapping[str, Any], norm_prefix: str, conv_prefix: str, where: str) -> str:
  if norm_prefix + ".weight" in state:
    return "batch"
  if conv_prefix + ".bias" in state:
    return "instance"
  raise ArchError(f"{where}: its convs have no biases and its norms no weights: a network "
                  "built with --norm none, whose convs the reference leaves without biases "
                  "(jgen's norm='none' networks have them); not supported")


def arch_from_state(state: Mapping[str, Any], *, dropout: float | None = None,
                    where: str = "the checkpoint") -> Arch:
  """The reference network a state dict holds, read from its keys and shapes.

  Args:
    state: torch key -> array (flat).
    dropout: U-Net dropout rate (the file cannot tell; None: the reference's default for a
      U-Net, 0.5, and 0 for the others, or what the ResNet blocks' layout shows).
    where: the file, for messages.

  Raises:
    ArchError: keys of none of the reference's networks.
  """
  keys = list(state)
  if not keys:
    raise ArchError(f"{where}: an empty state dict")
  if all(k.startswith("module.") for k in keys):  # saved from a DataParallel wrapper
    raise ArchError(f"{where}: keys start with 'module.' (a DataParallel network): save "
                    "net.module.state_dict(), as the reference's save_networks does")
  if any(k.startswith("model.model.") for k in keys):
    n = 0
    while any(k.startswith(_unet_prefix(n)) for k in keys):
      n += 1
    w0 = _shape(state, "model.model.0.weight")
    up0 = _shape(state, "model.model.3.weight")
    norm = _norm_of(state, _unet_prefix(1) + "2", _unet_prefix(1) + "1", where)
    return Arch("unet", n, norm, w0[0], w0[1], up0[1], 0.5 if dropout is None else dropout)
  blocks = sorted({int(m.group(1)) for k in keys
                   if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
  if blocks:
    if blocks != list(range(10, 10 + len(blocks))):
      raise ArchError(f"{where}: residual blocks at model.{blocks}; the reference's ResNet "
                      "generator has them at model.10, model.11 ...")
    if any(k.startswith("model.10.conv_block.6.weight") for k in keys) and \
        "model.10.conv_block.5.weight" not in state:
      raise ArchError(f"{where}: a ResNet generator with dropout in its blocks (use_dropout): "
                      "jgen's ResnetGenerator has none; not supported")
    w0 = _shape(state, "model.1.weight")
    last = _shape(state, f"model.{17 + len(blocks)}.weight")
    norm = _norm_of(state, "model.2", "model.1", where)
    return Arch("resnet", len(blocks), norm, w0[0], w0[1], last[0], 0.0)
  convs = sorted(int(m.group(1)) for k in keys
                 if (m := re.fullmatch(r"model\.(\d+)\.weight", k)) and len(_shape(state, k)) == 4)
  if convs and convs[0] == 0 and len(convs) >= 3:
    n = len(convs) - 2
    w0 = _shape(state, "model.0.weight")
    norm = _norm_of(state, "model.3", "model.2", where)
    return Arch("patch", n, norm, w0[0], w0[1], 1, 0.0)
  raise ArchError(f"{where}: keys {sorted(keys)[:6]} ... are not those of the reference's "
                  "UnetGenerator (model.model.*), ResnetGenerator (model.N.conv_block.*) or "
                  "NLayerDiscriminator (model.N); pass a latest_net_G.pth / latest_net_D.pth "
                  "of pytorch-CycleGAN-and-pix2pix")


# ---------------------------------------------------------------------- converting


def convert_state_dict(state: Mapping[str, Any], arch: Arch, *, where: str = "the checkpoint"
                       ) -> tuple[Any, dict[str, Any]]:
  """(module, variables) of `arch` from a reference state dict.

  Raises:
    ConversionError: missing, unexpected or mis-shaped keys (all listed).
  """
  module, expected = module_of(arch)
  want = common.flatten_tree(expected)
  source = StateDict(state)
  tree = Tree(source)
  for path, key, fn in name_map(arch):
    if path in want:
      tree.put(path, key, fn)
  for key in _droppable(arch):
    if key in state:
      source.take(key)
  try:
    variables = tree.finish(expected, f"{where} ({arch.describe()})")
  except ConversionError as e:
    raise ConversionError(f"{where} as a {arch.describe()}", e.missing, e.unexpected,
                          e.misshaped, hint=_HINT) from None
  return module, variables


def to_reference(variables: Mapping[str, Any], arch: Arch) -> dict[str, np.ndarray]:
  """The reference state dict of jgen `variables` of `arch` (the inverse of
  `convert_state_dict`; float32, contiguous, BatchNorm's ``num_batches_tracked`` = 0)."""
  flat = common.flatten_tree(variables)
  inverse = {common.conv_kernel: _inverse_conv, deconv_kernel: _inverse_deconv,
             skip_deconv_kernel: _inverse_skip_deconv}
  out: dict[str, np.ndarray] = {}
  for path, key, fn in name_map(arch):
    if path in flat:
      w = np.asarray(flat[path], np.float32)
      out[key] = inverse[fn](w) if fn is not None else w
  for key in _droppable(arch):
    if arch.norm == "batch":
      out[key] = np.zeros((), np.int64)
  return out


def read_reference_file(path: str) -> dict[str, np.ndarray]:
  """A reference ``.pth`` as torch key -> array, read by `jgen.metrics.weights.read_torch_file`
  (a restricted unpickler: nothing in the file is run).

  Raises:
    FileNotFoundError: no such file.
    UnreadableFileError: a truncated file, not a torch file, or one whose pickle names a
      global other than tensors (refused before anything is called).
    ArchError: a file that holds something else than one state dict.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint at {path}")
  try:
    obj = read_torch_file(path)
  except pickle.UnpicklingError as e:
    raise UnreadableFileError(f"{path}: refused, nothing in it was run: {e}. A reference "
                              "checkpoint holds tensors only (torch.save(net.state_dict()))"
                              ) from e
  except (ValueError, EOFError, KeyError, struct.error, zipfile.BadZipFile) as e:
    raise UnreadableFileError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}"
                              f": {e}); is it truncated? Download it again") from e
  if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise ArchError(f"{path}: not a state dict of arrays (the reference saves "
                    "net.state_dict() with torch.save)")
  return {str(k): v for k, v in obj.items()}
