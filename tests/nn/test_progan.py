"""ProGAN building blocks against NumPy and closed forms: equalized-lr scaling, pixel norm,
minibatch stddev, im2col convolution, and the fade-in blends of G and D."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import layers
from jgen.nn import progan as nets


def test_equalized_dense_scales_by_he_constant():
  layer = nets.EqualDense(256, gain=math.sqrt(2))
  x = jax.random.normal(jax.random.key(0), (512, 1024))
  params = layer.init(jax.random.key(1), x)["params"]
  w = np.asarray(params["kernel"])
  assert abs(w.std() - 1.0) < 0.01 and abs(w.mean()) < 0.01   # stored weights are N(0, 1)
  y = np.asarray(layer.apply({"params": params}, x))
  np.testing.assert_allclose(y, np.asarray(x) @ (w * math.sqrt(2 / 1024)), rtol=1e-4, atol=1e-4)
  assert abs(y.std() - math.sqrt(2)) < 0.03                  # output std = gain for unit input
  # The gradient w.r.t. the stored weight is the runtime scale times x^T dy.
  dy = np.asarray(jax.random.normal(jax.random.key(2), y.shape))
  g = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, x) * dy))(params)["kernel"]
  np.testing.assert_allclose(g, math.sqrt(2 / 1024) * np.asarray(x).T @ dy, rtol=1e-3, atol=1e-3)


def test_equalized_conv_scale_and_im2col_equal_lax():
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 64))
  for gain in (1.0, math.sqrt(2)):
    im2col = nets.EqualConv(32, 3, gain=gain, conv="im2col")
    lax = nets.EqualConv(32, 3, gain=gain, conv="lax")
    params = im2col.init(jax.random.key(1), x)
    assert lax.scale(64) == gain / math.sqrt(9 * 64)
    a, b = im2col.apply(params, x), lax.apply(params, x)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    w = np.asarray(params["params"]["kernel"]) * gain / math.sqrt(9 * 64)
    ref = jax.lax.conv_general_dilated(x, jnp.asarray(w), (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(b, ref, rtol=1e-4, atol=1e-4)
    inner = (slice(None), slice(1, -1), slice(1, -1))   # away from the zero padding
    assert abs(float(jnp.std(a[inner])) - gain) < 0.05


def test_pixel_norm_against_numpy():
  x = np.random.default_rng(0).normal(size=(3, 4, 4, 7)).astype(np.float32) * 5
  ref = x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-8)
  np.testing.assert_allclose(nets.pixel_norm(jnp.asarray(x)), ref, rtol=1e-5)


@pytest.mark.parametrize("n,group", [(8, 4), (6, 2), (3, 4)])
def test_minibatch_stddev_against_numpy(n, group):
  x = np.random.default_rng(1).normal(size=(n, 4, 4, 5)).astype(np.float32)
  out = np.asarray(nets.minibatch_stddev(jnp.asarray(x), group))
  assert out.shape == (n, 4, 4, 6)
  np.testing.assert_array_equal(out[..., :5], x)
  g = min(group, n)
  m = n // g
  for i in range(n):   # example i = k m + j belongs to group j
    members = x[[k * m + i % m for k in range(g)]]
    s = np.mean(np.sqrt(members.var(axis=0) + 1e-8))
    np.testing.assert_allclose(out[i, ..., 5], np.full((4, 4), s), rtol=1e-5)
  with pytest.raises(ValueError, match="multiple of the group size"):
    nets.minibatch_stddev(jnp.zeros((6, 4, 4, 1)), 4)


def _nets():
  g = nets.ProGANGenerator(features=(8, 6, 4), channels=1)
  d = nets.ProGANDiscriminator(features=(8, 6, 4), mbstd_group=2)
  z = jax.random.normal(jax.random.key(0), (4, 5))
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 1))
  gp = g.init(jax.random.key(2), z, method=g.init_all)
  dp = d.init(jax.random.key(3), x, method=d.init_all)
  return g, d, z, x, gp, dp


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_generator_fade_in_is_the_linear_blend(alpha):
  g, _, z, _, gp, _ = _nets()
  for level in (1, 2):
    faded = g.apply(gp, z, level=level, fading=True, alpha=alpha)
    new = g.apply(gp, z, level=level)
    old = layers.upsample_nearest(g.apply(gp, z, level=level - 1))
    assert faded.shape == (4, 4 * 2 ** level, 4 * 2 ** level, 1)
    np.testing.assert_allclose(faded, alpha * np.asarray(new) + (1 - alpha) * np.asarray(old),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_discriminator_fade_in_is_the_mirrored_blend(alpha):
  _, d, _, x, _, dp = _nets()
  for level in (1, 2):
    xr = x if level == 2 else layers.mean_pool(x)
    faded = d.apply(dp, xr, fading=True, alpha=alpha)
    new = d.apply(dp, xr, method=lambda m, v: m.block(m.rgb(v, level), level))
    old = d.apply(dp, layers.mean_pool(xr), method=lambda m, v: m.rgb(v, level - 1))
    blend = alpha * np.asarray(new) + (1 - alpha) * np.asarray(old)
    ref = d.apply(dp, jnp.asarray(blend), method=lambda m, h: m.trunk(h, level - 1))
    np.testing.assert_allclose(faded, ref, rtol=1e-5, atol=1e-6)
    if alpha == 0.0:  # the lower level alone on the pooled image
      np.testing.assert_allclose(faded, d.apply(dp, layers.mean_pool(xr)), rtol=1e-5, atol=1e-6)
    if alpha == 1.0:
      np.testing.assert_allclose(faded, d.apply(dp, xr), rtol=1e-5, atol=1e-6)
