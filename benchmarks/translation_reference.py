"""Tiny random pix2pix / CycleGAN reference networks, their outputs, and jgen's against them.

  python benchmarks/translation_reference.py                    # prints the table
  python benchmarks/translation_reference.py --write tests/convert/fixtures/translation.npz
  python benchmarks/translation_reference.py --repo PATH/pytorch-CycleGAN-and-pix2pix

The networks are those of junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` (BSD):
`UnetGenerator` (pix2pix, batch and instance norm), `ResnetGenerator` (CycleGAN, both norms)
and `NLayerDiscriminator` (PatchGAN, both norms). Without ``--repo`` the script builds them
itself in torch, layer for layer in the reference's ``nn.Sequential`` order (so the state dict
keys are the reference's); with ``--repo`` it imports the reference's ``models/networks.py``
from that checkout and builds them with its classes (instance norm as its current
``get_norm_layer``: ``affine=False, track_running_stats=False``).

For each network: random weights (torch's initializers, then BatchNorm's affine maps and
running statistics drawn at random), an NCHW input, the outputs in eval mode (running
statistics; dropout off) and, for the batch-norm U-Net, in training mode with the dropout
layers off (batch statistics: the reference's default test protocol at batch size 1). The
instance-norm U-Net's state dict also gets ``running_mean`` / ``running_var`` /
``num_batches_tracked`` at every norm, as files saved by PyTorch 0.4's InstanceNorm carry them.
``--write`` saves ``<case>/sd/<key>`` (state dict arrays), ``<case>/x``, ``<case>/y`` (and
``<case>/y_train``), ``<case>/dropout_levels`` (the U-Net levels whose block has Dropout, read
from the built network) to an ``.npz`` (tests/convert/test_translation.py reads it).

The table: for each network, max |jgen - reference| of jgen's module converted with the
reference settings (`jgen.convert.translation`), and of jgen's *default* settings on the same
weights where they fit (a ResNet generator with reflection-padded strided convs; the U-Net's
extra edge biases set to zero, so only its dropout placement differs and only with dropout on).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jgen.convert import translation as tr  # noqa: E402

# ---------------------------------------------------------------------- the reference networks


def _norm_layer(norm: str):
  if norm == "batch":
    return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
  return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class UnetBlock(nn.Module):
  """One level of the reference U-Net: [x, up(sub(down(x)))] (outermost: no concat)."""

  def __init__(self, outer: int, inner: int, in_nc: int | None = None, sub=None, *,
               outermost=False, innermost=False, norm="batch", use_dropout=False):
    super().__init__()
    self.outermost = outermost
    bias = norm == "instance"
    in_nc = outer if in_nc is None else in_nc
    norm_layer = _norm_layer(norm)
    down = nn.Conv2d(in_nc, inner, 4, 2, 1, bias=bias)
    if outermost:
      layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1),
                nn.Tanh()]
    elif innermost:
      layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), norm_layer(outer)]
    else:
      layers = [nn.LeakyReLU(0.2, True), down, norm_layer(inner), sub, nn.ReLU(True),
                nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias), norm_layer(outer)]
      if use_dropout:
        layers.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
  def __init__(self, in_nc, out_nc, num_downs, ngf, norm, use_dropout):
    super().__init__()
    block = UnetBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
    for _ in range(num_downs - 5):
      block = UnetBlock(ngf * 8, ngf * 8, sub=block, norm=norm, use_dropout=use_dropout)
    for mult in (4, 2, 1):
      block = UnetBlock(ngf * mult, ngf * mult * 2, sub=block, norm=norm)
    self.model = UnetBlock(out_nc, ngf, in_nc, block, outermost=True, norm=norm)

  def forward(self, x):
    return self.model(x)


class ResnetBlock(nn.Module):
  def __init__(self, dim, norm):
    super().__init__()
    bias, norm_layer = norm == "instance", _norm_layer(norm)
    self.conv_block = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(dim), nn.ReLU(True),
        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(dim))

  def forward(self, x):
    return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
  def __init__(self, in_nc, out_nc, ngf, norm, n_blocks):
    super().__init__()
    bias, norm_layer = norm == "instance", _norm_layer(norm)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), norm_layer(ngf),
              nn.ReLU(True)]
    for mult in (1, 2):
      layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1, bias=bias),
                 norm_layer(ngf * mult * 2), nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
    for mult in (4, 2):
      layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1,
                                    bias=bias), norm_layer(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


class NLayerDiscriminator(nn.Module):
  def __init__(self, in_nc, ndf, n_layers, norm):
    super().__init__()
    bias, norm_layer = norm == "instance", _norm_layer(norm)
    layers = [nn.Conv2d(in_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for k in range(1, n_layers + 1):
      prev, mult = mult, min(2 ** k, 8)
      layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if k < n_layers else 1, 1, bias=bias),
                 norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


def builders(repo: str | None):
  """name -> constructor(in_nc, out_nc, width, depth, norm, dropout) of the three networks."""
  if repo is None:
    return {"unet": lambda i, o, w, d, norm, drop: UnetGenerator(i, o, d, w, norm, drop),
            "resnet": lambda i, o, w, d, norm, drop: ResnetGenerator(i, o, w, norm, d),
            "patch": lambda i, o, w, d, norm, drop: NLayerDiscriminator(i, w, d, norm)}
  spec = importlib.util.spec_from_file_location("ref_networks",
                                                os.path.join(repo, "models", "networks.py"))
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  return {"unet": lambda i, o, w, d, norm, drop: ref.UnetGenerator(
              i, o, d, w, norm_layer=_norm_layer(norm), use_dropout=drop),
          "resnet": lambda i, o, w, d, norm, drop: ref.ResnetGenerator(
              i, o, w, norm_layer=_norm_layer(norm), use_dropout=False, n_blocks=d),
          "patch": lambda i, o, w, d, norm, drop: ref.NLayerDiscriminator(
              i, w, d, norm_layer=_norm_layer(norm))}


# (name, kind, in_nc, out_nc, width, depth, norm, dropout, input H)
CASES = (("unet_batch", "unet", 3, 2, 4, 6, "batch", True, 64),
         ("unet_instance", "unet", 3, 3, 4, 5, "instance", False, 32),
         ("resnet_instance", "resnet", 3, 3, 4, 2, "instance", False, 16),
         ("resnet_batch", "resnet", 1, 2, 4, 1, "batch", False, 12),
         ("patch_batch", "patch", 5, 1, 4, 3, "batch", False, 32),
         ("patch_instance", "patch", 3, 1, 4, 2, "instance", False, 24))


def _randomize(net: nn.Module, gen: torch.Generator) -> None:
  for m in net.modules():
    if isinstance(m, nn.BatchNorm2d):
      c = m.num_features
      m.weight.data = 1 + 0.3 * torch.randn(c, generator=gen)
      m.bias.data = 0.3 * torch.randn(c, generator=gen)
      m.running_mean.data = 0.3 * torch.randn(c, generator=gen)
      m.running_var.data = 0.5 + torch.rand(c, generator=gen)
      m.num_batches_tracked.fill_(7)


def _dropout_levels(net: nn.Module) -> list[int]:
  """U-Net levels (0 outermost) whose block holds an nn.Dropout."""
  levels, block, i = [], net.model, 0
  while block is not None:
    seq = block.model
    if any(isinstance(m, nn.Dropout) for m in seq):
      levels.append(i)
    subs = [m for m in seq if m is not block and hasattr(m, "model") and
            isinstance(m.model, nn.Sequential)]
    block, i = (subs[0] if subs else None), i + 1
  return levels


def reference_cases(repo: str | None, seed: int = 0) -> dict[str, np.ndarray]:
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  build = builders(repo)
  out: dict[str, np.ndarray] = {}
  for name, kind, i, o, w, d, norm, drop, size in CASES:
    net = build[kind](i, o, w, d, norm, drop)
    _randomize(net, gen)
    x = torch.rand(2, i, size, size, generator=gen) * 2 - 1
    net.eval()
    with torch.no_grad():
      y = net(x)
    sd = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    if kind == "unet":
      out[f"{name}/dropout_levels"] = np.asarray(_dropout_levels(net), np.int64)
    if kind == "unet" and norm == "batch":
      net.train()
      for m in net.modules():
        if isinstance(m, nn.Dropout):
          m.eval()
      with torch.no_grad():
        out[f"{name}/y_train"] = net(x).numpy()
    if kind == "unet" and norm == "instance":  # as PyTorch 0.4's InstanceNorm2d saved them
      for key in [k for k in sd if k.endswith(".weight")]:
        prefix = key[:-len(".weight")]
        parent, _, idx = prefix.rpartition(".")
        norm_key = f"{parent}.{int(idx) + 1}"
        if sd[key].ndim == 4 and f"{norm_key}.weight" not in sd and \
            isinstance(net.get_submodule(norm_key), nn.InstanceNorm2d):
          c = sd[key].shape[1] if "ConvTranspose" in type(net.get_submodule(prefix)).__name__ \
              else sd[key].shape[0]
          sd[f"{norm_key}.running_mean"] = np.zeros(c, np.float32)
          sd[f"{norm_key}.running_var"] = np.ones(c, np.float32)
          sd[f"{norm_key}.num_batches_tracked"] = np.asarray(0, np.int64)
    out.update({f"{name}/sd/{k}": v for k, v in sd.items()})
    out[f"{name}/x"] = x.numpy()
    out[f"{name}/y"] = y.numpy()
  return out


# ---------------------------------------------------------------------- jgen against them


def case_state(data, name: str) -> dict[str, np.ndarray]:
  prefix = f"{name}/sd/"
  return {k[len(prefix):]: np.asarray(data[k]) for k in data if k.startswith(prefix)}


def jgen_output(module, variables, x_nchw: np.ndarray, *, train: bool = False) -> np.ndarray:
  """The module on an NCHW input, back to NCHW (a discriminator's [B, h, w] to [B, 1, h, w])."""
  x = jnp.asarray(np.transpose(x_nchw, (0, 2, 3, 1)))
  y = module.apply(variables, x, train=train, rngs={"dropout": jax.random.key(0)},
                   mutable=["batch_stats"] if train else False)
  y = np.asarray(y[0] if train else y)
  return y[:, None] if y.ndim == 3 else np.transpose(y, (0, 3, 1, 2))


def table(data) -> list[tuple[str, float, float | None]]:
  rows = []
  for name, kind, *_ in CASES:
    state = case_state(data, name)
    arch = tr.arch_from_state(state, dropout=0.0)
    module, variables = tr.convert_state_dict(state, arch)
    ref = jgen_output(module, variables, data[f"{name}/x"])
    err = float(np.abs(ref - data[f"{name}/y"]).max())
    default = None
    if kind == "resnet":
      m2 = module.clone(down_padding="reflect")
      default = float(np.abs(jgen_output(m2, variables, data[f"{name}/x"])
                             - data[f"{name}/y"]).max())
    rows.append((name, err, default))
    if f"{name}/y_train" in data:
      y_train = jgen_output(module, variables, data[f"{name}/x"], train=True)
      rows.append((name + " (train-mode BN)", float(np.abs(y_train - data[f"{name}/y_train"])
                                                    .max()), None))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repo", help="a checkout of junyanz/pytorch-CycleGAN-and-pix2pix")
  parser.add_argument("--write", help="write the fixture .npz here")
  args = parser.parse_args()
  data = reference_cases(args.repo)
  if args.write:
    np.savez_compressed(args.write, **data)
    print(f"wrote {len(data)} arrays to {args.write} ({os.path.getsize(args.write)} bytes)")
  print(f"{'network':34s} {'reference settings':>20s} {'jgen defaults':>14s}")
  for name, err, default in table(data):
    shown = "-" if default is None else f"{default:.3g}"
    print(f"{name:34s} {err:20.3g} {shown:>14s}")
  for name, kind, *_ in CASES:
    if kind == "unet":
      n = [c for c in CASES if c[0] == name][0][5]
      ref = sorted(int(lv) for lv in data[f"{name}/dropout_levels"])
      print(f"{name}: reference dropout at decoder levels {ref}, jgen 'reference' "
            f"{sorted(tr.nets.unet_dropout_levels(n, 'reference'))}, jgen default "
            f"{sorted(tr.nets.unet_dropout_levels(n))}")


if __name__ == "__main__":
  main()
