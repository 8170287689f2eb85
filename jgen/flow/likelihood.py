"""From 8-bit images to a continuous density and back: dequantization, scaling, bits/dim.

The loop hands images over as `x = k / 127.5 - 1` for integer pixels `k` in {0..255}. With
`n_bits` bits per pixel (Glow reduces CelebA-HQ to 5) the pixel levels are
`k' = floor(k / 2^(8 - n_bits))` in {0..n_bins - 1}, `n_bins = 2^n_bits`. Uniform dequantization
(Theis et al. 2016) gives `y = (k' + u) / n_bins` in [0, 1), `u ~ U[0, 1)^D`, and for any
density `p(y)` on [0, 1]^D

    log P(k') >= E_u [ log p(y) ] - D log(n_bins),

so `bits/dim = -(log p(y) - D log n_bins) / (D log 2) = n_bits - log p(y) / (D log 2)` with one
sample of `u`: the papers' discrete-data bound, with the `-log(256)` per dimension for 8 bits.
The flow runs on `v = g(y)` and `log p(y) = log p_flow(v) + log |det dg/dy|`, with `g` one of:

* 'center' (Glow): `v = y - 0.5` in [-0.5, 0.5), log-det 0;
* 'symmetric': `v = 2y - 1` in [-1, 1), log-det `D log 2`;
* 'logit' (RealNVP): `v = logit(a + (1 - 2a) y)`, log-det
  `sum_i [log(1 - 2a) - log p_i - log(1 - p_i)]` with `p = a + (1 - 2a) y` (a = 0.05 for
  CIFAR-10 in the paper).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["PREPROCESSING", "dequantize", "postprocess", "preprocess", "quantize", "to_levels"]

PREPROCESSING = ("center", "symmetric", "logit")


def _per_example(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def to_levels(x: jax.Array, n_bits: int = 8) -> jax.Array:
  """Integer pixel levels (as float32) in {0..2^n_bits - 1} of images `x` in [-1, 1]."""
  if not 1 <= n_bits <= 8:
    raise ValueError(f"n_bits must be in 1..8, got {n_bits}")
  k = jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0.0, 255.0)
  return jnp.floor(k / 2 ** (8 - n_bits))


def dequantize(x: jax.Array, rng: jax.Array | None, n_bits: int = 8) -> jax.Array:
  """`y = (k + u) / 2^n_bits` in [0, 1), `u ~ U[0, 1)`; `u = 1/2` (bin centres) if `rng` is None."""
  k = to_levels(x, n_bits)
  u = 0.5 if rng is None else jax.random.uniform(rng, k.shape, jnp.float32)
  return (k + u) / 2 ** n_bits


def quantize(y: jax.Array, n_bits: int = 8) -> jax.Array:
  """Images in [-1, 1] of the pixel levels `floor(y * 2^n_bits)` (clipped), the inverse of
  `dequantize`: `quantize(dequantize(x, rng)) == x` for 8-bit images `x`."""
  n_bins = 2 ** n_bits
  k = jnp.clip(jnp.floor(y * n_bins), 0, n_bins - 1)
  return k * 2 ** (8 - n_bits) / 127.5 - 1.0


def preprocess(y: jax.Array, kind: str = "center", alpha: float = 0.05
               ) -> tuple[jax.Array, jax.Array]:
  """`(v, log |det dv/dy|)` per example, for `y` in [0, 1] (see the module docstring)."""
  d = math.prod(y.shape[1:])
  if kind == "center":
    return y - 0.5, jnp.zeros((y.shape[0],), jnp.float32)
  if kind == "symmetric":
    return 2.0 * y - 1.0, jnp.full((y.shape[0],), d * math.log(2.0), jnp.float32)
  if kind == "logit":
    p = alpha + (1.0 - 2.0 * alpha) * y
    v = jnp.log(p) - jnp.log1p(-p)
    logdet = d * math.log(1.0 - 2.0 * alpha) - _per_example(jnp.log(p) + jnp.log1p(-p))
    return v, logdet
  raise ValueError(f"unknown flow preprocessing {kind!r}; choose one of {PREPROCESSING}")


def postprocess(v: jax.Array, kind: str = "center", alpha: float = 0.05) -> jax.Array:
  """The inverse of `preprocess`: `y` from `v`."""
  if kind == "center":
    return v + 0.5
  if kind == "symmetric":
    return (v + 1.0) / 2.0
  if kind == "logit":
    return (jax.nn.sigmoid(v) - alpha) / (1.0 - 2.0 * alpha)
  raise ValueError(f"unknown flow preprocessing {kind!r}; choose one of {PREPROCESSING}")
