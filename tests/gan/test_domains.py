"""Synthetic domains against NumPy / SciPy references: each transform, composition order,
per-example application, the domain table and names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jgen.data import derived
from jgen.gan import domains

NAMES = ("inverted", "thick", "rot90")


def _images(b=6, h=7, c=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (b, h, h, c)).astype(np.float32)


def _np_max_filter(x):
  """3x3 max over a -inf padded border, per image and channel."""
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  h, w = x.shape[1:3]
  return np.max([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _np_domain(x, c, names):
  """NumPy reference of apply_domain for one image x [H, W, C] and attributes c [K]."""
  ops = {"thick": lambda v: ndimage.grey_dilation(v, size=(3, 3, 1), mode="constant",
                                                   cval=-np.inf),
         "rot90": lambda v: np.rot90(v, 1, axes=(0, 1)),
         "edges": lambda v: np.asarray(domains.edges(jnp.asarray(v[None])))[0],
         "hflip": lambda v: v[:, ::-1],
         "inverted": lambda v: -v}
  for name in domains.ORDER:  # the documented order
    if name in names and c[names.index(name)] > 0.5:
      x = ops[name](x)
  return x


def test_inverted():
  x = _images()
  np.testing.assert_array_equal(domains.inverted(jnp.asarray(x)), -x)


def test_thick_is_a_3x3_grey_dilation():
  x = _images()
  got = np.asarray(jax.jit(domains.thick)(jnp.asarray(x)))
  ref = ndimage.grey_dilation(x, size=(1, 3, 3, 1), mode="constant", cval=-1.0)
  np.testing.assert_array_equal(got, ref)
  wide = np.random.default_rng(1).normal(0, 3, x.shape).astype(np.float32)  # below -1 too
  np.testing.assert_array_equal(np.asarray(domains.thick(jnp.asarray(wide))),
                                _np_max_filter(wide))


def test_thick_thickens_bright_ink():
  x = -np.ones((1, 5, 5, 1), np.float32)
  x[0, 2, 2, 0] = 1.0  # one ink pixel on the background
  y = np.asarray(domains.thick(jnp.asarray(x)))
  assert (y[0, 1:4, 1:4, 0] == 1.0).all() and (y == 1.0).sum() == 9


def test_edges_is_the_sobel_magnitude_of_the_data_pairs():
  levels = np.random.default_rng(2).integers(0, 256, (3, 9, 9, 1))
  x = jnp.asarray(levels / 127.5 - 1.0, jnp.float32)
  got = (np.asarray(jax.jit(domains.edges)(x)) + 1.0) * 127.5
  for i in range(3):  # the uint8 edge maps of the CycleGAN/pix2pix pairs, before their rounding
    ref = derived.sobel_edges(levels[i].astype(np.uint8)).astype(np.float64)
    assert np.abs(got[i] - ref).max() <= 0.5 + 1e-3
  # SciPy's Sobel with mirrored borders, unrounded and unclipped below 255.
  u = levels[..., 0].astype(np.float64)
  mag = np.stack([np.hypot(ndimage.sobel(v, axis=0, mode="reflect"),
                           ndimage.sobel(v, axis=1, mode="reflect")) / 4 for v in u])
  np.testing.assert_allclose(got[..., 0], np.minimum(mag, 255), atol=2e-3)
  step = -np.ones((1, 6, 6, 1), np.float32)
  step[:, :, 3:] = 1.0  # a step of full height 255 gives 255 beside it, 0 away from it
  e = np.asarray(domains.edges(jnp.asarray(step)))
  np.testing.assert_allclose(e[0, :, 2:4, 0], 1.0, atol=1e-5)
  np.testing.assert_allclose(e[0, :, [0, 5], 0], -1.0, atol=1e-5)


def test_local_transforms_commute_with_the_geometric_ones():
  x = jnp.asarray(_images(h=8))
  for local in (domains.thick, domains.edges):
    for geometric in (domains.rot90, domains.hflip):
      np.testing.assert_allclose(geometric(local(x)), local(geometric(x)), atol=1e-4)


def test_rot90_and_hflip():
  x = _images()
  np.testing.assert_array_equal(domains.rot90(jnp.asarray(x)), np.rot90(x, 1, axes=(1, 2)))
  np.testing.assert_array_equal(domains.hflip(jnp.asarray(x)), x[:, :, ::-1])
  with pytest.raises(ValueError, match="square"):
    domains.rot90(jnp.zeros((1, 4, 6, 1)))


def test_apply_domain_per_example_matches_numpy():
  table = domains.all_domains(3)
  x = _images(b=len(table) * 2)
  c = np.concatenate([table, table[::-1]])
  got = np.asarray(jax.jit(lambda x, c: domains.apply_domain(x, c, NAMES))(x, c))
  for i in range(len(x)):
    np.testing.assert_array_equal(got[i], _np_domain(x[i], c[i], NAMES))


def test_composition_order_is_fixed():
  x = _images()
  on = np.ones((len(x), 2), np.float32)
  both = np.asarray(domains.apply_domain(jnp.asarray(x), on, ("inverted", "thick")))
  # thick before inverted: the ink is thickened, then inverted (not the inverse's dilation)
  np.testing.assert_array_equal(both, -_np_max_filter(x))
  assert not np.allclose(both, _np_max_filter(-x))
  swapped = np.asarray(domains.apply_domain(jnp.asarray(x), on, ("thick", "inverted")))
  np.testing.assert_array_equal(both, swapped)  # the names' order only labels the columns
  four = ("hflip", "rot90", "thick", "inverted")
  all_on = np.ones((len(x), 4), np.float32)
  ref = [_np_domain(v, np.ones(4), four) for v in x]
  np.testing.assert_array_equal(domains.apply_domain(jnp.asarray(x), all_on, four), ref)
  np.testing.assert_array_equal(  # explicitly: flip(rot(thick(x))), inverted
      ref, -np.rot90(_np_max_filter(x), 1, axes=(1, 2))[:, :, ::-1])
  # edges after thick: the outline of the thickened strokes, whatever the names' order
  pair = np.asarray(domains.apply_domain(jnp.asarray(x), np.ones((len(x), 2)), ("edges", "thick")))
  np.testing.assert_allclose(pair, domains.edges(domains.thick(jnp.asarray(x))), atol=1e-6)


def test_rot90_commutes_with_thick():
  x = jnp.asarray(_images())
  np.testing.assert_array_equal(domains.rot90(domains.thick(x)), domains.thick(domains.rot90(x)))


def test_table_and_names():
  table = domains.all_domains(3)
  assert table.shape == (8, 3) and table.dtype == np.float32
  assert len({tuple(r) for r in table}) == 8
  np.testing.assert_array_equal(table[:3], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
  assert domains.domain_name(table[0], NAMES) == domains.CLEAN
  assert domains.domain_name([1, 0, 1], NAMES) == "inverted+rot90"


def test_errors():
  x = jnp.zeros((2, 4, 4, 1))
  with pytest.raises(ValueError, match="unknown domain transform"):
    domains.apply_domain(x, jnp.zeros((2, 1)), ("blur",))
  with pytest.raises(ValueError, match=r"\[B, K\]"):
    domains.apply_domain(x, jnp.zeros((2, 2)), NAMES)
  with pytest.raises(ValueError, match="repeat"):
    domains.check_names(("thick", "thick"))
