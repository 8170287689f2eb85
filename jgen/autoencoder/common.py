"""What the autoencoder methods share: config -> networks, reconstruction metrics, held-out
images for `reconstructions()` (inputs side by side with their reconstructions)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.nn.autoencoder import Decoder, Encoder
from jgen.nn.dtypes import compute_dtype
from jgen.train.inputs import load_data

__all__ = ["interleave", "load_holdout", "make_networks", "reconstruction_error"]


def make_networks(config: Any, *, encoder_features: int, decoder_channels: int
                  ) -> tuple[Encoder, Decoder]:
  """The `Encoder`/`Decoder` pair of a config's `model` block.

  Args:
    config: experiment config; reads `model.{ch, ch_mult, num_res_blocks, num_groups,
      dropout, spatial, dtype}` and `data.image_size`.
    encoder_features: encoder output size (latent size, or 2x for a mean and a log-variance).
    decoder_channels: decoder output channels.
  """
  m = config.model
  shared = dict(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                spatial=m.spatial, num_groups=m.num_groups, dropout=m.dropout,
                dtype=compute_dtype(m.dtype))
  return (Encoder(out_features=encoder_features, **shared),
          Decoder(image_size=config.data.image_size, out_channels=decoder_channels, **shared))


def reconstruction_error(x_hat: jax.Array, x: jax.Array, kind: str = "mse") -> jax.Array:
  """Per-image mean squared ('mse') or absolute ('mae') error, shape `[B]`."""
  diff = x_hat.astype(jnp.float32) - x.astype(jnp.float32)
  if kind == "mse":
    err = jnp.square(diff)
  elif kind == "mae":
    err = jnp.abs(diff)
  else:
    raise ValueError(f"unknown reconstruction loss {kind!r}; choose 'mse' or 'mae'")
  return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)


def load_holdout(config: Any, num: int) -> np.ndarray:
  """The first `num` images of the config's eval split, float32 in [-1, 1], `[num, H, W, C]`."""
  source = load_data(config, split=config.data.eval_split)
  num = min(num, len(source))
  images = np.stack([source[i]["image"] for i in range(num)]).astype(np.float32)
  return images / 127.5 - 1.0


def interleave(inputs: jax.Array, outputs: jax.Array, n: int) -> jax.Array:
  """`[in_0, out_0, in_1, out_1, ...]`, cycling through the pairs, `n` images in all."""
  pairs = jnp.stack([inputs, outputs], axis=1).reshape(-1, *inputs.shape[1:])
  reps = -(-n // pairs.shape[0])
  return jnp.concatenate([pairs] * reps)[:n]
