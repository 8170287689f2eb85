"""The LDM first-stage encoder/decoder: shapes at f = 4 and f = 8, layout, bad inputs."""

import jax
import jax.numpy as jnp
import pytest

from jgen.nn.ldm_networks import (LAST_LAYER, LDMDecoder, LDMEncoder,
                                           downsampling_factor, latent_resolution)

KW = dict(ch=8, num_res_blocks=1, num_groups=4)


@pytest.mark.parametrize("ch_mult,f", [((1, 2, 2), 4), ((1, 2, 2, 2), 8)])
def test_shapes_at_f4_and_f8(ch_mult, f):
  assert downsampling_factor(ch_mult) == f
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  enc = LDMEncoder(ch_mult=ch_mult, out_channels=6, **KW)
  dec = LDMDecoder(ch_mult=ch_mult, out_channels=3, **KW)
  pe = enc.init(jax.random.key(1), x, train=False)
  z = enc.apply(pe, x, train=False)
  assert z.shape == (2, 16 // f, 16 // f, 6) and z.dtype == jnp.float32
  pd = dec.init(jax.random.key(2), z[..., :3], train=False)
  y = dec.apply(pd, z[..., :3], train=False)
  assert y.shape == x.shape and jnp.isfinite(y).all()
  # The LDM layout: a middle block res -> attention -> res on both sides, one more block per
  # decoder level, the adaptive weight's last layer at LAST_LAYER.
  for p in (pe["params"], pd["params"]):
    assert {"mid_block_1", "mid_attn", "mid_block_2", "conv_out"} <= set(p)
  levels = len(ch_mult)
  assert sum(k.startswith("down_") and "_block_" in k for k in pe["params"]) == levels
  assert sum(k.startswith("up_") and "_block_" in k for k in pd["params"]) == 2 * levels
  assert pd["params"][LAST_LAYER[1]][LAST_LAYER[2]].shape == (3, 3, KW["ch"], 3)


def test_attention_at_named_resolutions():
  x = jnp.zeros((1, 8, 8, 1))
  enc = LDMEncoder(ch_mult=(1, 2), out_channels=2, attn_resolutions=(4,), **KW)
  params = enc.init(jax.random.key(0), x, train=False)["params"]
  assert "down_1_attn_0" in params and "down_0_attn_0" not in params


def test_bad_inputs():
  with pytest.raises(ValueError, match="not divisible"):
    latent_resolution(12, (1, 2, 2, 2))
  with pytest.raises(ValueError, match="num_groups"):
    LDMEncoder(ch=6, ch_mult=(1, 2), num_groups=4).init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  with pytest.raises(ValueError, match="not divisible"):  # f = 4 divides 8 but not 6
    LDMEncoder(**KW).init(jax.random.key(0), jnp.zeros((1, 8, 6, 1)), train=False)
