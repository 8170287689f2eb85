"""The FID Inception network, its input preprocessing and the batched feature extractor."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from jgen.metrics import inception
from tests.conftest import REPO, subprocess_env


def _reference_resize_weights(in_size, out_size, mode):
  """Per output pixel: {input index: weight}, straight from the two references' formulas."""
  rows = []
  for j in range(out_size):
    if mode == "tf":  # TF1 ResizeBilinear, align_corners=False, no half-pixel centres
      src = j * in_size / out_size
    else:  # torch F.interpolate(bilinear, align_corners=False)
      src = max((j + 0.5) * in_size / out_size - 0.5, 0.0)
    lo = min(int(np.floor(src)), in_size - 1)
    hi = min(lo + 1, in_size - 1)
    weights = {lo: 1.0 - (src - lo)}
    weights[hi] = weights.get(hi, 0.0) + (src - lo)
    rows.append(weights)
  return rows


@pytest.mark.parametrize("mode", inception.PREPROCESS)
@pytest.mark.parametrize("in_size,out_size", [(32, 299), (7, 5), (400, 299), (299, 299)])
def test_resize_matrix_matches_the_formulas(mode, in_size, out_size):
  matrix = inception.resize_matrix(in_size, out_size, mode)
  assert matrix.shape == (out_size, in_size)
  expected = np.zeros((out_size, in_size))
  for j, row in enumerate(_reference_resize_weights(in_size, out_size, mode)):
    for i, w in row.items():
      expected[j, i] += w
  np.testing.assert_allclose(matrix, expected, atol=1e-6)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
  if in_size == out_size:
    np.testing.assert_array_equal(matrix, np.eye(in_size))


def test_preprocess_ranges_grayscale_and_identity():
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (2, 299, 299, 1), dtype=np.uint8)
  gray[0, 0, 0, 0], gray[0, 0, 1, 0] = 0, 255
  rgb = np.repeat(gray, 3, axis=-1)
  tf = np.asarray(inception.preprocess_images(gray, "tf"))
  np.testing.assert_array_equal(tf, np.asarray(inception.preprocess_images(rgb, "tf")))
  np.testing.assert_array_equal(tf, (rgb.astype(np.float32) - 128) / 128)  # no resize at 299
  assert tf[0, 0, 0, 0] == -1.0 and tf[0, 0, 1, 0] == 0.9921875
  pt = np.asarray(inception.preprocess_images(gray, "pytorch-fid"))
  assert pt[0, 0, 0, 0] == -1.0 and pt[0, 0, 1, 0] == 1.0
  small = np.asarray(inception.preprocess_images(gray[:, :32, :32], "tf"))
  assert small.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(small[:, 0, 0], (rgb[:, 0, 0].astype(np.float32) - 128) / 128,
                             atol=1e-6)  # TF's output pixel 0 samples input pixel 0 exactly
  with pytest.raises(ValueError, match="unknown preprocess"):
    inception.preprocess_images(gray, "bicubic")


def random_variables(num_classes, seed=0):
  """He-scaled random InceptionV3 variables (no init compile: shapes from eval_shape)."""
  model = inception.InceptionV3(num_classes=num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 299, 299, 3), np.float32))
  rng = np.random.default_rng(seed)

  def sample(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
    if "var" in name or "scale" in name:
      return np.ones(s.shape, np.float32)
    return (0.01 * rng.normal(size=s.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def test_feature_net_shapes_padding_and_logits():
  variables = random_variables(inception.NUM_CLASSES)
  net = inception.InceptionFeatureNet(variables, batch_size=2)
  assert (net.feature_dim, net.num_classes, net.name) == (2048, 1008, "inception-2015-12-05")
  images = np.random.default_rng(1).integers(0, 256, (3, 299, 299, 3), dtype=np.uint8)
  out = net(images)  # one full batch + one padded batch of the same compiled program
  assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
  assert all(v.dtype == np.float32 for v in out.values())
  assert np.all(np.isfinite(out["features"])) and np.all(out["features"] >= 0)  # ReLU + mean
  alone = net(images[2:3])
  np.testing.assert_allclose(alone["features"][0], out["features"][2], rtol=1e-5, atol=1e-6)
  fc = variables["params"]["fc"]
  np.testing.assert_allclose(out["logits_unbiased"], out["features"] @ fc["kernel"],
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["logits"], out["logits_unbiased"] + fc["bias"],
                             rtol=1e-4, atol=1e-4)
  empty = net(images[:0])
  assert empty["features"].shape == (0, 2048) and empty["logits"].shape == (0, 1008)
  with pytest.raises(TypeError, match="uint8"):
    net(images.astype(np.float32))
  with pytest.raises(ValueError, match="expected uint8 images"):
    net(images[..., :2])


SHARDED = """
import numpy as np, jax
from jgen.metrics import inception
from tests.metrics.test_inception import random_variables
assert jax.device_count() == 2
variables = random_variables(0)
images = np.random.default_rng(3).integers(0, 256, (3, 24, 20, 1), dtype=np.uint8)
sharded = inception.InceptionFeatureNet(variables, batch_size=3)  # rounded up to 4
single = inception.InceptionFeatureNet(variables, batch_size=1,
                                       mesh=jax.sharding.Mesh(jax.devices()[:1], ("data",)))
assert sharded.batch_size == 4 and "logits" not in sharded(images)
np.testing.assert_allclose(sharded(images)["features"], single(images)["features"],
                           rtol=1e-4, atol=1e-5)
half = inception.InceptionFeatureNet(variables, batch_size=4, dtype="bfloat16")(images)
np.testing.assert_allclose(half["features"], single(images)["features"], rtol=0.1, atol=0.05)
print("ok")
"""


@pytest.mark.slow
def test_sharded_over_two_devices_and_bfloat16():
  env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("ok")
