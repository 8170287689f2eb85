"""StyleGAN2 building blocks against NumPy: the FIR resampling filters, modulation and
demodulation, the learning-rate multiplier, the mapping network's normalization, and the
noise inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import progan
from jgen.nn import stylegan2 as nets


def _np_up1d(x):
  """Zero insertion, then np.convolve with [1, 3, 3, 1] / 4 (upfirdn, pad (2, 1))."""
  u = np.zeros(2 * len(x))
  u[::2] = x
  return np.convolve(u, np.array([1, 3, 3, 1]) / 4.0)[1:2 * len(x) + 1]


def _np_down1d(x):
  """np.convolve with [1, 3, 3, 1] / 8, zero padding 1 each side, every second sample."""
  return np.convolve(x, np.array([1, 3, 3, 1]) / 8.0)[2::2][:len(x) // 2]


def _separable(fn, x):
  x = np.apply_along_axis(fn, 1, x)
  return np.apply_along_axis(fn, 2, x)


def test_fir_resampling_against_numpy_convolve():
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 3))
  np.testing.assert_allclose(nets.fir_upsample(jnp.asarray(x, jnp.float32)),
                             _separable(_np_up1d, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nets.fir_downsample(jnp.asarray(x, jnp.float32)),
                             _separable(_np_down1d, x), rtol=1e-5, atol=1e-5)
  # A constant stays constant away from the zero padding (the filters' gains are 1).
  ones = jnp.ones((1, 8, 8, 1))
  np.testing.assert_allclose(nets.fir_upsample(ones)[0, 2:-2, 2:-2], 1.0, rtol=1e-6)
  np.testing.assert_allclose(nets.fir_downsample(ones)[0, 1:-1, 1:-1], 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="even"):
    nets.fir_downsample(jnp.ones((1, 5, 5, 1)))


def test_equal_dense_learning_rate_multiplier():
  layer = progan.EqualDense(64, gain=1.0, lr_mul=0.01, bias_init=1.0)
  x = jax.random.normal(jax.random.key(0), (256, 512))
  params = layer.init(jax.random.key(1), x)["params"]
  w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
  assert abs(w.std() - 100.0) < 1.0                           # stored: N(0, 1 / lr_mul^2)
  np.testing.assert_allclose(b, 100.0)                        # stored bias_init / lr_mul
  y = np.asarray(layer.apply({"params": params}, x))
  np.testing.assert_allclose(y, np.asarray(x) @ (w * 0.01 / math.sqrt(512)) + 1.0,
                             rtol=1e-4, atol=1e-4)
  # The stored parameters' gradients carry the multiplier: dL/dW = lr_mul c x^T dy.
  dy = np.asarray(jax.random.normal(jax.random.key(2), y.shape))
  g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) * dy))(params)
  np.testing.assert_allclose(g["kernel"], 0.01 / math.sqrt(512) * np.asarray(x).T @ dy,
                             rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(g["bias"], 0.01 * dy.sum(0), rtol=1e-4, atol=1e-4)


def _np_conv_same(x, k):
  """x [B, H, W, C] * per-example kernels k [B, kh, kw, C, F], stride 1, zero SAME padding."""
  b, h, w, _ = x.shape
  kh = k.shape[1]
  p = kh // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = np.zeros((b, h, w, k.shape[-1]))
  for i in range(h):
    for j in range(w):
      patch = xp[:, i:i + kh, j:j + kh, :]
      out[:, i, j] = np.einsum("bklc,bklcf->bf", patch, k)
  return out


@pytest.mark.parametrize("demodulate,kernel_size", [(True, 3), (False, 1)])
def test_modulated_conv_against_per_example_numpy_kernels(demodulate, kernel_size):
  cin, cout = 5, 4
  layer = nets.ModulatedConv(cout, kernel_size, demodulate=demodulate)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, cin))
  w_lat = jax.random.normal(jax.random.key(1), (2, 7))
  variables = layer.init(jax.random.key(2), x, w_lat)
  p = jax.tree.map(np.asarray, variables["params"])
  styles = np.asarray(w_lat) @ (p["affine"]["kernel"] / math.sqrt(7)) + p["affine"]["bias"]
  fan_in = kernel_size * kernel_size * cin
  weight = p["kernel"] / math.sqrt(fan_in)
  if not demodulate:
    styles = styles / math.sqrt(fan_in)
  k = weight[None] * styles[:, None, None, :, None]             # w'_bijk = s_bi w_ijk
  if demodulate:
    k = k / np.sqrt(np.sum(k ** 2, axis=(1, 2, 3), keepdims=True) + 1e-8)
  ref = _np_conv_same(np.asarray(x, np.float64), k)
  np.testing.assert_allclose(layer.apply(variables, x, w_lat), ref, rtol=2e-4, atol=2e-4)


def test_demodulated_output_channels_have_unit_norm():
  """By linearity, the responses to unit impulses at every input channel recover the
  demodulated kernel: its squared norm per output channel is 1."""
  cin, cout = 6, 3
  layer = nets.ModulatedConv(cout, 3)
  w_lat = jax.random.normal(jax.random.key(1), (1, 8)) * 3.0
  impulses = jnp.zeros((cin, 5, 5, cin)).at[jnp.arange(cin), 2, 2, jnp.arange(cin)].set(1.0)
  variables = layer.init(jax.random.key(2), impulses[:1], w_lat)
  y = layer.apply(variables, impulses, jnp.repeat(w_lat, cin, 0))
  np.testing.assert_allclose(jnp.sum(y ** 2, axis=(0, 1, 2)), np.ones(cout), rtol=1e-5)
  # And unit-variance inputs give unit-variance outputs away from the borders.
  x = jax.random.normal(jax.random.key(3), (256, 6, 6, cin))
  y = layer.apply(variables, x, jnp.repeat(w_lat, 256, 0))[:, 1:-1, 1:-1]
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), np.ones(cout), atol=0.03)


def test_mapping_normalizes_z_and_the_label_embedding():
  x = np.random.default_rng(0).normal(size=(4, 9)) * 7
  np.testing.assert_allclose(nets.normalize_2nd_moment(jnp.asarray(x, jnp.float32)),
                             x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-8), rtol=1e-5)
  mapping = nets.MappingNetwork(w_dim=8, num_layers=0, num_classes=3)
  z = jax.random.normal(jax.random.key(0), (4, 5)) * 10
  labels = jnp.array([0, 1, 2, 1])
  variables = mapping.init(jax.random.key(1), z, labels)
  out = np.asarray(mapping.apply(variables, z, labels))     # no layers: [norm(z), norm(e)]
  np.testing.assert_allclose(np.mean(out[:, :5] ** 2, -1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.mean(out[:, 5:] ** 2, -1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out[1, 5:], out[3, 5:])          # one embedding per class
  with pytest.raises(ValueError, match="labels"):
    mapping.apply(variables, z)


def test_noise_modes_and_strength():
  g = nets.StyleGAN2Generator(image_size=8, features=(4, 4), channels=1, z_dim=4, w_dim=4,
                              mapping_layers=1)
  variables = g.init(jax.random.key(0), jnp.zeros((1, 4)))
  ws = jnp.broadcast_to(jax.random.normal(jax.random.key(1), (1, 1, 4)), (3, g.num_ws, 4))
  synth = lambda v, mode, key: g.apply(v, ws, mode, rngs={"noise": key},  # noqa: E731
                                       method=nets.StyleGAN2Generator.synthesize)
  base = synth(variables, "none", jax.random.key(2))
  # Strength 0 at initialization: noise has no effect yet.
  np.testing.assert_array_equal(synth(variables, "random", jax.random.key(2)), base)
  loud = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.5 if "noise_strength" in jax.tree_util.keystr(path) else x,
      variables)
  rand = np.asarray(synth(loud, "random", jax.random.key(2)))
  const = np.asarray(synth(loud, "const", jax.random.key(2)))
  assert not np.allclose(rand[0], rand[1])                    # a map per example
  np.testing.assert_allclose(const[0], const[1], rtol=1e-6)   # one map for every example
  np.testing.assert_array_equal(const, synth(loud, "const", jax.random.key(2)))
  assert not np.allclose(const[0], synth(loud, "none", jax.random.key(2))[0])
  with pytest.raises(ValueError, match="noise mode"):
    synth(variables, "fixed", jax.random.key(2))


def test_shapes_and_bad_configuration():
  g = nets.StyleGAN2Generator(image_size=16, features=(8, 8, 4), channels=3, z_dim=4,
                              w_dim=4, mapping_layers=2)
  assert g.num_ws == 6
  variables = g.init(jax.random.key(0), jnp.zeros((2, 4)))
  images = g.apply(variables, jnp.ones((2, 4)))
  assert images.shape == (2, 16, 16, 3)
  for arch in ("resnet", "orig"):
    d = nets.StyleGAN2Discriminator(features=(8, 8, 4), architecture=arch, mbstd_group=2,
                                    num_classes=10, mapping_layers=1)
    labels = jnp.array([1, 2])
    dv = d.init(jax.random.key(1), images, labels)
    assert d.apply(dv, images, labels).shape == (2,)
    assert ("b2_skip" in dv["params"]) == (arch == "resnet")
  with pytest.raises(ValueError, match="3 blocks"):
    nets.StyleGAN2Generator(image_size=16, features=(8, 8)).init(jax.random.key(0),
                                                                 jnp.zeros((1, 512)))
