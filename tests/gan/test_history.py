"""The image history buffer against a NumPy replay of CycleGAN's ImagePool rule, driven by the
same draws: the filling phase, a batch larger than the space left, the full buffer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.gan import history


def _reference(stored, count, images, swap, slot):
  """pytorch-CycleGAN's ImagePool.query, one image after another, with given draws."""
  stored, out = stored.copy(), []
  size = len(stored)
  for image, s, k in zip(images, swap, slot):
    if count < size:
      stored[count] = image
      count += 1
      out.append(image)
    elif s:
      out.append(stored[k].copy())
      stored[k] = image
    else:
      out.append(image)
  return np.stack(out), stored, count


@pytest.mark.parametrize("size,batches", [(5, (2, 2, 4, 3, 6)), (3, (7,)), (4, (1,) * 12)])
def test_query_matches_numpy_reference(size, batches):
  shape = (2, 3, 1)
  h = history.init_history(size, shape)
  ref_stored, ref_count = np.zeros((size, *shape), np.float32), 0
  query = jax.jit(history.query_with_draws)
  base, offset = jax.random.key(0), 0.0
  for step, b in enumerate(batches):
    # Distinct images (value = its running number) so every returned image is identifiable.
    images = np.arange(offset, offset + b, dtype=np.float32)[:, None, None, None] + np.zeros(
        (b, *shape), np.float32)
    offset += b
    swap, slot = history.history_draws(jax.random.fold_in(base, step), b, size)
    out, h = query(h, jnp.asarray(images), swap, slot)
    ref_out, ref_stored, ref_count = _reference(ref_stored, ref_count, images,
                                                np.asarray(swap), np.asarray(slot))
    np.testing.assert_array_equal(np.asarray(out), ref_out)
    np.testing.assert_array_equal(np.asarray(h["images"]), ref_stored)
    assert int(h["count"]) == ref_count == min(size, int(offset))


def test_filling_returns_the_new_images_and_stores_them_in_order():
  h = history.init_history(4, (1, 1, 1))
  images = jnp.arange(3, dtype=jnp.float32).reshape(3, 1, 1, 1)
  out, h = history.query(h, images, jax.random.key(1))
  np.testing.assert_array_equal(out, images)
  np.testing.assert_array_equal(h["images"][:3], images)
  assert int(h["count"]) == 3
  # A batch larger than the one slot left: the first image fills it, the rest see a full buffer.
  swap, slot = jnp.array([True, True, False]), jnp.array([0, 3, 1])
  new = jnp.array([10.0, 11.0, 12.0]).reshape(3, 1, 1, 1)
  out, h = history.query_with_draws(h, new, swap, slot)
  np.testing.assert_array_equal(out.ravel(), [10.0, 10.0, 12.0])  # slot 3 held image 10
  np.testing.assert_array_equal(h["images"].ravel(), [0.0, 1.0, 2.0, 11.0])
  assert int(h["count"]) == 4


def test_query_equals_query_with_its_draws():
  h = history.init_history(2, (2, 2, 3))
  h = {**h, "count": jnp.int32(2), "images": jnp.ones_like(h["images"])}
  images = jax.random.normal(jax.random.key(3), (16, 2, 2, 3))
  rng = jax.random.key(4)
  a = history.query(h, images, rng)
  b = history.query_with_draws(h, images, *history.history_draws(rng, 16, 2))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  swap, _ = history.history_draws(jax.random.key(5), 4000, 50)
  assert abs(float(jnp.mean(swap)) - 0.5) < 0.03


def test_errors():
  with pytest.raises(ValueError, match="size >= 1"):
    history.init_history(0, (4, 4, 1))
  h = history.init_history(2, (4, 4, 1))
  with pytest.raises(ValueError, match="holds images"):
    history.query(h, jnp.zeros((1, 4, 4, 3)), jax.random.key(0))
