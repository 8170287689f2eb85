"""Shapes of the encoder/decoder family (abstract evaluation only: nothing is compiled)."""

import jax
import jax.numpy as jnp
import pytest

from jgen.autoencoder.common import make_networks
from jgen.nn.autoencoder import Decoder, Encoder, latent_shape
from tests.conftest import load_experiment


@pytest.mark.parametrize("size,channels,spatial,ch_mult", [
    (8, 1, False, (1, 2)), (32, 3, True, (1, 2, 2, 4)), (16, 3, False, (1,)),
    (4, 1, True, (1, 2, 2))])
def test_encoder_decoder_shapes(size, channels, spatial, ch_mult):
  enc = Encoder(ch=4, ch_mult=ch_mult, out_features=6, spatial=spatial, num_groups=2,
                dtype=jnp.bfloat16)
  dec = Decoder(image_size=size, out_channels=2 * channels, ch=4, ch_mult=ch_mult,
                spatial=spatial, num_groups=2, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
  z, enc_vars = jax.eval_shape(
      lambda x: enc.init_with_output(jax.random.key(0), x, train=False), x)
  r = size // 2 ** (len(ch_mult) - 1)
  assert z.shape == ((2, r, r, 6) if spatial else (2, 6)) and z.dtype == jnp.float32
  assert tuple(z.shape[1:]) == latent_shape(enc, size)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  out, _ = jax.eval_shape(lambda z: dec.init_with_output(rngs, z, train=True), z)
  assert out.shape == (2, size, size, 2 * channels) and out.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(enc_vars))


@pytest.mark.parametrize("size", [12, 2])
def test_bad_image_sizes_are_rejected(size):
  enc = Encoder(ch=4, ch_mult=(1, 2, 2))
  with pytest.raises(ValueError, match="power of two|too small"):
    jax.eval_shape(lambda x: enc.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32))


def test_compute_dtype_from_the_one_table():
  """float16 is refused (jgen does not scale losses); bfloat16 computes, params stay float32."""
  config = load_experiment("autoencoder/ae_digits", "smoke")
  config.model.dtype = "bfloat16"
  encoder, decoder = make_networks(config, encoder_features=4, decoder_channels=1)
  assert encoder.dtype == decoder.dtype == jnp.bfloat16
  config.model.dtype = "float16"
  with pytest.raises(ValueError, match="loss scaling"):
    make_networks(config, encoder_features=4, decoder_channels=1)
