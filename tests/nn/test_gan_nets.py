"""Shapes of the GAN networks for every size, conditioning, normalization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import gan


def _shapes(module, *args, **kwargs):
  """(variables, output) shapes via eval_shape (no compile)."""
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
  out = jax.eval_shape(lambda v: module.apply(v, *args, **kwargs, mutable=["batch_stats"])[0],
                       variables)
  return variables, out


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
  z, y = jnp.zeros((2, 32)), jnp.zeros((2,), jnp.int32)
  g = gan.DCGANGenerator(image_size=size, channels=channels, features=8, num_classes=10)
  _, x = _shapes(g, z, y, train=True)
  assert x.shape == (2, size, size, channels)
  for conditioning in ("projection", "concat"):
    d = gan.DCGANDiscriminator(features=8, num_classes=10, conditioning=conditioning)
    _, s = _shapes(d, jnp.zeros(x.shape), y, train=True)
    assert s.shape == (2,)


def test_dcgan_paper_widths():
  """At 64x64 and features 64: 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3."""
  g = gan.DCGANGenerator(image_size=64, channels=3, features=64)
  v, _ = _shapes(g, jnp.zeros((1, 100)), train=False)
  p = v["params"]
  assert p["Dense_0"]["kernel"].shape == (100, 4 * 4 * 512)
  assert [p[f"ConvTranspose_{i}"]["kernel"].shape[-1] for i in range(4)] == [256, 128, 64, 3]
  assert set(v["batch_stats"]) == {f"Norm_{i}" for i in range(4)}


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_resnet_shapes(size):
  z, y = jnp.zeros((2, 16)), jnp.zeros((2,), jnp.int32)
  g = gan.ResNetGenerator(image_size=size, channels=3, features=8, num_classes=10)
  _, x = _shapes(g, z, y, train=True)
  assert x.shape == (2, size, size, 3)
  d = gan.ResNetCritic(features=8, num_classes=10)
  _, s = _shapes(d, jnp.zeros(x.shape), y, train=False)
  assert s.shape == (2,)


def test_resnet_cifar_is_the_papers_layout():
  """32x32: three up-blocks in G; critic first block, one down block, two plain blocks."""
  g_vars, _ = _shapes(gan.ResNetGenerator(image_size=32), jnp.zeros((1, 128)), train=False)
  assert sorted(k for k in g_vars["params"] if k.startswith("ResBlock")) == [
      "ResBlock_0", "ResBlock_1", "ResBlock_2"]
  d_vars, _ = _shapes(gan.ResNetCritic(), jnp.zeros((1, 32, 32, 3)), train=False)
  blocks = sorted(k for k in d_vars["params"] if k.startswith("ResBlock"))
  assert len(blocks) == 4 and "batch_stats" not in d_vars
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(d_vars["params"]))
  assert 0.9e6 < n < 1.2e6  # 4 blocks of two 3x3x128x128 convs and shortcuts


@pytest.mark.parametrize("bad", [4, 12, 48])
def test_rejects_sizes(bad):
  with pytest.raises(ValueError, match="power of two"):
    gan.num_resamplings(bad)


def test_projection_and_layer_norm_behave():
  d = gan.DCGANDiscriminator(features=4, num_classes=3, norm="layer")
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  y = jnp.array([0, 1, 2, 0])
  v = d.init(jax.random.key(1), x, y, train=False)
  v = jax.tree.map(lambda a: a + 0.1, v)  # make the projection embedding non-zero
  s = d.apply(v, x, y, train=False)
  s2 = d.apply(v, x, (y + 1) % 3, train=False)
  assert not np.allclose(s, s2)  # the label changes the score
  x2 = x.at[1:].set(0.0)
  np.testing.assert_allclose(d.apply(v, x2, y, train=False)[0], s[0], rtol=1e-5)  # per example


def test_batch_norm_statistics_update_in_train_mode():
  g = gan.DCGANGenerator(image_size=8, channels=1, features=4)
  z = jax.random.normal(jax.random.key(0), (4, 8))
  v = g.init(jax.random.key(1), z, train=True)
  _, upd = g.apply(v, z, train=True, mutable=["batch_stats"])
  assert not np.allclose(upd["batch_stats"]["Norm_0"]["BatchNorm_0"]["mean"], 0.0)
  x = g.apply(v, z, train=False)
  assert x.shape == (4, 8, 8, 1) and float(jnp.abs(x).max()) <= 1.0


def test_mlp():
  g, d = gan.MLPGenerator(hidden=(8,)), gan.MLPDiscriminator(hidden=(8,))
  z = jnp.ones((5, 3))
  x = g.apply(g.init(jax.random.key(0), z), z)
  assert x.shape == (5, 2)
  assert d.apply(d.init(jax.random.key(0), x), x).shape == (5,)
