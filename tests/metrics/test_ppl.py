"""Perceptual path length: slerp/lerp, the percentile filter, and closed forms on linear
generators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics import ppl
from tests.metrics.conftest import random_domain_net


def squared_distance(x0, x1):
  return jnp.sum((x0 - x1) ** 2, axis=(1, 2, 3))


def orthonormal_generator(latent_dim, shape=(4, 4, 2), seed=0):
  """G(z) = A z reshaped to images, A with orthonormal columns: |G(a) - G(b)| = |a - b|."""
  size = int(np.prod(shape))
  a, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(size, latent_dim)))
  a = jnp.asarray(a, jnp.float32)
  return lambda z: (z.reshape(z.shape[0], -1) @ a.T).reshape(z.shape[0], *shape)


def draws(rng, i, n, latent_dim):
  """z0, z1, t of batch i, as path_length_distances documents it."""
  k0, k1, kt = jax.random.split(jax.random.fold_in(rng, i), 3)
  return (np.asarray(jax.random.normal(k0, (n, latent_dim)), np.float64),
          np.asarray(jax.random.normal(k1, (n, latent_dim)), np.float64),
          np.asarray(jax.random.uniform(kt, (n,)), np.float64))


def test_slerp_is_StyleGANs():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
  np.testing.assert_allclose(ppl.slerp(a, b, np.zeros((5, 1))), unit(a), atol=1e-6)
  np.testing.assert_allclose(ppl.slerp(a, b, np.ones((5, 1))), unit(b), atol=1e-6)
  theta = np.arccos(np.sum(unit(a) * unit(b), -1))
  mid = np.asarray(ppl.slerp(a, b, np.full((5, 1), 0.3)))
  np.testing.assert_allclose(np.linalg.norm(mid, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.arccos(np.clip(np.sum(mid * unit(a), -1), -1, 1)), 0.3 * theta,
                             atol=1e-4)
  np.testing.assert_allclose(ppl.lerp(a, b, 0.25), a + 0.25 * (b - a))


def test_filtered_mean_drops_the_tails_like_stylegan():
  values = np.concatenate([np.arange(1, 99, dtype=float), [-1e6, 1e6]])
  lo = np.percentile(values, 1, method="lower")
  hi = np.percentile(values, 99, method="higher")
  expected = values[(values >= lo) & (values <= hi)].mean()
  assert ppl.filtered_mean(values) == pytest.approx(expected)
  assert abs(ppl.filtered_mean(values) - 49.5) < 1.0  # the two outliers are gone


@pytest.mark.parametrize("epsilon,rtol", [(1e-2, 1e-4), (1e-4, 2e-2)])
def test_z_space_closed_form_on_a_linear_generator(epsilon, rtol):
  """Slerp moves at angular speed theta = angle(z0, z1): the chord of an eps step is
  2 sin(theta eps / 2), so with |G(a) - G(b)| = |a - b| each value is
  (2 r sin(theta eps / 2) / eps)^2 (r = z_radius), whatever t is."""
  d, n, radius = 16, 50, 3.0
  rng = jax.random.key(7)
  values = ppl.path_length_distances(orthonormal_generator(d), squared_distance, rng, n,
                                     latent_shape=(d,), epsilon=epsilon, z_radius=radius,
                                     batch_size=n)
  z0, z1, _ = draws(rng, 0, n, d)
  cos = np.sum(z0 * z1, -1) / np.linalg.norm(z0, axis=-1) / np.linalg.norm(z1, axis=-1)
  theta = np.arccos(cos)
  expected = (2 * radius * np.sin(theta * epsilon / 2) / epsilon) ** 2
  np.testing.assert_allclose(values, expected, rtol=rtol)


def test_w_space_closed_form_and_the_mean():
  """lerp in w = M z: the eps step is eps (w1 - w0), each value |M (z1 - z0)|^2."""
  d, n = 8, 60
  m = np.random.default_rng(1).normal(size=(d, d)).astype(np.float32)
  rng = jax.random.key(3)
  out = ppl.perceptual_path_length(orthonormal_generator(d), squared_distance, rng,
                                   num_samples=n, latent_shape=(d,), space="w",
                                   mapping_fn=lambda z: z @ m.T, epsilon=1e-2, batch_size=16)
  values = np.concatenate([np.sum(((draws(rng, i, 16, d)[1] - draws(rng, i, 16, d)[0]) @ m.T)
                                  ** 2, -1) for i in range(4)])[:n]
  assert out["num_samples"] == n
  np.testing.assert_allclose(out["ppl_unfiltered"], values.mean(), rtol=1e-4)
  np.testing.assert_allclose(out["ppl"], ppl.filtered_mean(values), rtol=1e-4)


def test_end_sampling_crop_and_errors():
  gen = orthonormal_generator(4, shape=(16, 16, 1))
  rng = jax.random.key(0)
  end = ppl.path_length_distances(gen, squared_distance, rng, 8, latent_shape=(4,),
                                  sampling="end", crop=True, epsilon=1e-2)
  assert end.shape == (8,) and np.all(end > 0)
  assert ppl.crop_faces(jnp.zeros((1, 16, 16, 3))).shape == (1, 8, 8, 3)
  # The pooling factor is the full resolution's (the reference's G.img_resolution // 256),
  # applied after the crop: 16 // 4 = 4, so the 8x8 crop becomes 2x2 (not 4x4).
  shapes = []

  def record(x0, x1):
    shapes.append(x0.shape)
    return squared_distance(x0, x1)

  ppl.path_length_distances(gen, record, rng, 2, latent_shape=(4,), crop=True, downsample_to=4)
  ppl.path_length_distances(gen, record, rng, 2, latent_shape=(4,), downsample_to=4)
  assert shapes == [(2, 2, 2, 1), (2, 4, 4, 1)]
  with pytest.raises(ValueError, match="mapping_fn"):
    ppl.path_length_distances(gen, squared_distance, rng, 4, latent_shape=(4,), space="w")
  with pytest.raises(ValueError, match="latent_shape"):
    ppl.path_length_distances(gen, squared_distance, rng, 4)
  with pytest.raises(ValueError, match="sampling"):
    ppl.path_length_distances(gen, squared_distance, rng, 4, latent_shape=(4,), sampling="x")


def test_feature_distance_fallback_with_a_domain_net():
  net = random_domain_net()
  features = ppl.float_features_fn(net)
  rng = np.random.default_rng(2)
  x = rng.uniform(-1, 1, size=(3, 16, 16, 1)).astype(np.float32)
  uint8 = np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)
  # On images exactly representable in uint8 it equals the network's uint8 path.
  np.testing.assert_allclose(features(jnp.asarray(uint8 / 127.5 - 1.0, jnp.float32)),
                             net(uint8)["features"], rtol=1e-5, atol=1e-5)
  distance = ppl.feature_distance(features)
  same = distance(jnp.asarray(x), jnp.asarray(x))
  np.testing.assert_allclose(same, 0.0, atol=1e-10)
  gen = lambda z: jnp.tanh(z.reshape(-1, 16, 16, 1))  # noqa: E731
  out = ppl.perceptual_path_length(gen, distance, jax.random.key(0), num_samples=20,
                                   latent_shape=(256,), z_radius=16.0, batch_size=10)
  assert np.isfinite(out["ppl"]) and out["ppl"] > 0
  with pytest.raises(TypeError, match="feature_distance"):
    ppl.float_features_fn(object())


def test_lpips_distance_wraps_lpips():
  """Random LPIPS variables (the real files are not needed to check the plumbing)."""
  from jgen.metrics import lpips  # pylint: disable=import-outside-toplevel

  model = lpips.LPIPS()
  rgb = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), rgb, rgb)
  rng = np.random.default_rng(4)
  variables = jax.tree.map(lambda s: jnp.asarray(np.abs(rng.normal(size=s.shape)) * 0.05,
                                                 jnp.float32), shapes)
  x0 = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 1)), jnp.float32)
  x1 = jnp.flip(x0, axis=1)
  distance = jax.jit(ppl.lpips_distance(variables))
  d = distance(x0, x1)
  np.testing.assert_allclose(d, jax.jit(model.apply)(variables, jnp.repeat(x0, 3, -1),
                                                     jnp.repeat(x1, 3, -1)), rtol=1e-5)
  assert np.all(np.asarray(d) > 0)
  np.testing.assert_allclose(distance(x0, x0), 0.0, atol=1e-7)
  small = x0[:, ::2, ::2]
  with pytest.raises(ValueError, match="resize_to"):
    ppl.lpips_distance(variables)(small, small)
  resized = jax.jit(ppl.lpips_distance(variables, resize_to=16))(small, small[:, ::-1])
  up = lambda x: jax.image.resize(x, (2, 16, 16, 1), "linear")  # noqa: E731
  np.testing.assert_allclose(resized, distance(up(small), up(small[:, ::-1])), rtol=1e-5)
