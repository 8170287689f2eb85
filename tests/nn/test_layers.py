"""The one residual block: resampling, norms, conditioning, shortcut; the norms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import DDPM_NAMES, Norm, ResBlock, ResBlockNames, mean_pool, upsample_nearest


def _init(module, *args, **kwargs):
  return jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), *args, **kwargs))


@pytest.mark.parametrize("resample,side", [("none", 8), ("up", 16), ("down", 4)])
@pytest.mark.parametrize("norm", ["group", "batch", "layer", "none"])
def test_resample_and_norm_shapes(resample, side, norm):
  x = jnp.zeros((2, 8, 8, 4))
  out, v = _init(ResBlock(6, norm=norm, num_groups=2, resample=resample), x, train=True)
  assert out.shape == (2, side, side, 6)
  assert "Conv_2" in v["params"]  # the shortcut (auto-named): width change
  assert ("batch_stats" in v) == (norm == "batch")


def test_shortcut_only_where_needed_and_names():
  x, emb = jnp.zeros((2, 8, 8, 4)), jnp.zeros((2, 3))
  _, v = _init(ResBlock(norm="none"), x, train=False)
  assert set(v["params"]) == {"Conv_0", "Conv_1"}
  _, v = _init(ResBlock(4, resample="down", names=ResBlockNames(shortcut="skip")), x,
               train=False)
  assert "skip" in v["params"]  # resampling blocks always have a shortcut
  _, v = _init(ResBlock(8, num_groups=2, shortcut_kernel=3, names=DDPM_NAMES), x, emb,
               train=False)
  assert set(v["params"]) == set(DDPM_NAMES)
  assert v["params"]["nin_shortcut"]["kernel"].shape == (3, 3, 4, 8)


def test_block_matches_a_hand_written_reference():
  """norm -> act -> conv -> + dense(act(emb)) -> norm -> act -> conv, plus the 1x1 shortcut."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 4, 4, 4)), jnp.float32)
  emb = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
  block = ResBlock(6, norm="layer", activation=nn.relu, names=DDPM_NAMES)
  v = block.init(jax.random.key(1), x, emb, train=False)
  p = v["params"]

  def conv(h, q):
    return jax.lax.conv_general_dilated(h, q["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + q["bias"]

  def layer_norm(h, q):
    mean = h.mean(axis=(1, 2, 3), keepdims=True)
    var = h.var(axis=(1, 2, 3), keepdims=True)
    return (h - mean) / jnp.sqrt(var + 1e-6) * q["scale"] + q["bias"]

  h = conv(jax.nn.relu(layer_norm(x, p["norm1"]["LayerNorm_0"])), p["conv1"])
  h = h + (jax.nn.relu(emb) @ p["temb_proj"]["kernel"] + p["temb_proj"]["bias"])[:, None, None]
  h = conv(jax.nn.relu(layer_norm(h, p["norm2"]["LayerNorm_0"])), p["conv2"])
  expected = conv(x, p["nin_shortcut"]) + h
  np.testing.assert_allclose(block.apply(v, x, emb, train=False), expected, rtol=1e-4,
                             atol=1e-5)


def test_first_block_reads_the_input_directly_and_resampling_helpers():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 4, 4, 2)), jnp.float32)
  _, v = _init(ResBlock(2, norm="batch", first=True), x, train=False)
  assert set(v["batch_stats"]) == {"Norm_0"}  # one norm: none before the first conv
  np.testing.assert_array_equal(upsample_nearest(x), np.repeat(np.repeat(x, 2, 1), 2, 2))
  grad = jax.grad(lambda x: jnp.sum(upsample_nearest(x) * jnp.arange(64.0).reshape(1, 8, 8, 1)))
  weights = np.arange(64.0).reshape(8, 8)  # the gradient sums each 2x2 block of the weights
  np.testing.assert_allclose(grad(x)[0, :, :, 0], weights.reshape(4, 2, 4, 2).sum((1, 3)))
  np.testing.assert_allclose(mean_pool(upsample_nearest(x)), x, rtol=1e-6)


def test_bad_fields_raise():
  x = jnp.zeros((1, 4, 4, 4))
  with pytest.raises(ValueError, match="resample"):
    _init(ResBlock(resample="sideways"), x, train=False)
  with pytest.raises(ValueError, match="normalization"):
    _init(Norm("instance"), x)
  with pytest.raises(ValueError, match="num_groups"):
    _init(Norm("group", 3), x)
