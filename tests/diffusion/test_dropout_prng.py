"""DDPM's dropout bit generator: unsafe_rbg masks keep 1 - p of the units (binomial bounds), are
a function of the step's key, differ from threefry's, and an unknown generator is refused."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.diffusion.ddpm import DDPM
from jgen.ops.schedules import get_schedule


class DropoutNet(nn.Module):
  """Dropout of the input: its output reveals the mask (0 or 1 / (1 - rate))."""

  rate: float = 0.3
  num_classes: int = 0

  @nn.compact
  def __call__(self, x, t, conditions=None, *, train: bool):
    del t, conditions
    return nn.Dropout(self.rate, deterministic=not train)(x)


def _method(prng: str) -> DDPM:
  return DDPM(model=DropoutNet(), schedule=get_schedule("linear", 10), tx=optax.sgd(0.1),
              image_shape=(16, 16, 4), dropout_prng=prng)


@pytest.mark.parametrize("prng", ["threefry", "unsafe_rbg"])
def test_masks_keep_one_minus_p(prng):
  x = jnp.ones((64, 16, 16, 4))
  fn = jax.jit(lambda key: _method(prng).model_fn({}, train=True, dropout_rng=key)(
      x, jnp.zeros((64,), jnp.int32)))
  out = np.asarray(fn(jax.random.key(0)))
  kept = out != 0
  np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
  n = kept.size  # 65,536 draws: 5 binomial standard deviations of the kept fraction
  assert abs(kept.mean() - 0.7) < 5 * np.sqrt(0.7 * 0.3 / n)
  np.testing.assert_array_equal(out, np.asarray(fn(jax.random.key(0))))
  assert (out != np.asarray(fn(jax.random.key(1)))).mean() > 0.3


def test_unsafe_rbg_masks_differ_from_threefry():
  x = jnp.ones((8, 16, 16, 4))
  t = jnp.zeros((8,), jnp.int32)
  a, b = (np.asarray(_method(p).model_fn({}, train=True, dropout_rng=jax.random.key(3))(x, t))
          for p in ("threefry", "unsafe_rbg"))
  assert (a != b).mean() > 0.3


def test_unknown_prng_is_refused():
  with pytest.raises(ValueError, match="dropout_prng"):
    _method("philox")
