"""Tests for the DDPM U-Net and its layers.

XLA compilation dominates the runtime on CPU, so parameters are built from
``jax.eval_shape`` shapes with NumPy instead of a compiled ``init``, shapes
are checked abstractly where possible, and random keys use the ``rbg``
implementation, which compiles much faster than threefry.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import (
    AttnBlock,
    Downsample,
    ddpm_res_block,
    UNet,
    Upsample,
    timestep_embedding,
)

TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, num_groups=8)
TINY_SHAPE = (2, 16, 16, 1)


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _abstract_init(model, x_shape, t_shape):
  """Initialises ``model`` abstractly (shapes only, no compute)."""
  return jax.eval_shape(lambda: model.init(
      _key(0),
      jnp.zeros(x_shape),
      jnp.zeros(t_shape, jnp.int32),
      train=False,
  ))


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _random_variables(shapes, seed, scale=0.1):
  """Gaussian variables with the given shapes and dtypes.

  Random (rather than freshly initialised) weights are used because the
  zero-initialised output layers make a fresh network output exactly zero,
  which would hide dropout, conditioning and dtype effects.
  """
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
      shapes,
  )


def _inputs():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(TINY_SHAPE), jnp.float32)
  t = jnp.array([3, 917], dtype=jnp.int32)
  return x, t


def _apply_fn(model, train):
  """Returns a jitted ``model.apply`` with a fixed ``train`` flag."""
  return jax.jit(functools.partial(model.apply, train=train))


@pytest.fixture(scope="module")
def tiny():
  """A tiny UNet with random variables, inputs and jitted apply functions."""
  model = UNet(dropout=0.3, **TINY)
  x, t = _inputs()
  shapes = _abstract_init(model, x.shape, t.shape)
  return {
      "variables": _random_variables(shapes, seed=2),
      "x": x,
      "t": t,
      "eval": _apply_fn(model, False),
      "train": _apply_fn(model, True),
  }


def test_cifar10_param_count():
  shapes = _abstract_init(UNet(), (1, 32, 32, 3), (1,))
  n = _count(shapes["params"])
  print(f"CIFAR-10 DDPM UNet parameters: {n:,}")
  assert abs(n - 35.7e6) / 35.7e6 < 0.005
  assert n == 35_746_307


def test_output_shape_train_and_eval(tiny):
  variables, x, t = tiny["variables"], tiny["x"], tiny["t"]
  out_eval = tiny["eval"](variables, x, t)
  out_train = tiny["train"](variables, x, t, rngs={"dropout": _key(3)})
  for out in (out_eval, out_train):
    assert out.shape == x.shape
    assert out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))


def test_out_ch_and_float_timesteps():
  model = UNet(out_ch=2, **TINY)
  x, _ = _inputs()
  t = jnp.array([0.5, 999.0])
  out, _ = jax.eval_shape(lambda: model.init_with_output(_key(0), x, t, train=False))
  assert out.shape == (2, 16, 16, 2)
  assert out.dtype == jnp.float32


def test_eval_deterministic_train_stochastic(tiny):
  variables, x, t = tiny["variables"], tiny["x"], tiny["t"]
  a = tiny["eval"](variables, x, t)
  b = tiny["eval"](variables, x, t)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  c = tiny["train"](variables, x, t, rngs={"dropout": _key(4)})
  d = tiny["train"](variables, x, t, rngs={"dropout": _key(5)})
  assert not np.allclose(np.asarray(c), np.asarray(d))
  assert not np.allclose(np.asarray(a), np.asarray(c))


def test_timestep_conditioning_matters(tiny):
  variables, x = tiny["variables"], tiny["x"]
  a = tiny["eval"](variables, x, jnp.array([0, 0]))
  b = tiny["eval"](variables, x, jnp.array([500, 500]))
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_bfloat16_compute():
  config = dict(ch=8, ch_mult=(1,), num_res_blocks=1, num_groups=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, 8, 8, 1)), jnp.float32)
  t = jnp.array([10])
  model = UNet(dtype=jnp.bfloat16, attn_resolutions=(8,), **config)
  shapes = _abstract_init(model, x.shape, t.shape)
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(shapes)}
  assert dtypes == {jnp.dtype(jnp.float32)}

  variables = _random_variables(shapes, seed=3)
  out = _apply_fn(model, False)(variables, x, t)
  ref_model = UNet(attn_resolutions=(8,), **config)
  ref = _apply_fn(ref_model, False)(variables, x, t)
  assert out.dtype == jnp.float32
  assert out.shape == x.shape
  err = np.abs(np.asarray(out) - np.asarray(ref)).max()
  assert err < 0.1 * np.abs(np.asarray(ref)).max()


@pytest.mark.parametrize("dim", [8, 33, 128])
def test_timestep_embedding_matches_numpy(dim):
  t = np.array([0, 1, 17, 999], dtype=np.int32)
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1))
  args = t.astype(np.float64)[:, None] * freqs[None, :]
  ref = np.concatenate([np.sin(args), np.cos(args)], axis=1)
  if dim % 2:
    ref = np.pad(ref, ((0, 0), (0, 1)))

  emb = timestep_embedding(jnp.asarray(t), dim)
  assert emb.shape == (4, dim)
  assert emb.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(emb), ref, atol=1e-3)
  emb_f = timestep_embedding(jnp.asarray(t, jnp.float32), dim)
  np.testing.assert_allclose(np.asarray(emb_f), np.asarray(emb))


def test_timestep_embedding_rejects_bad_shape():
  with pytest.raises(ValueError, match=r"\[B\]"):
    timestep_embedding(jnp.zeros((2, 1)), 8)


def test_bad_spatial_size_raises():
  with pytest.raises(ValueError, match="divisible"):
    _abstract_init(UNet(**TINY), (1, 15, 16, 1), (1,))


def test_bad_rank_and_timestep_shape_raise():
  model = UNet(**TINY)
  with pytest.raises(ValueError, match="NHWC"):
    _abstract_init(model, (16, 16, 1), (1,))
  with pytest.raises(ValueError, match="t must have shape"):
    _abstract_init(model, (2, 16, 16, 1), (3,))


def test_bad_num_groups_raises():
  model = UNet(ch=12, ch_mult=(1,), num_res_blocks=1, num_groups=8)
  with pytest.raises(ValueError, match="num_groups"):
    _abstract_init(model, (1, 8, 8, 1), (1,))


def test_layer_shapes():
  x = jax.ShapeDtypeStruct((2, 8, 8, 16), jnp.float32)
  temb = jax.ShapeDtypeStruct((2, 32), jnp.float32)

  def abstract(module, *args, **kwargs):
    return jax.eval_shape(lambda *a: module.init_with_output(_key(0), *a, **kwargs), *args)

  out, v = abstract(ddpm_res_block(32, num_groups=8), x, temb, train=False)
  assert "nin_shortcut" in v["params"]
  assert out.shape == (2, 8, 8, 32)
  _, v = abstract(ddpm_res_block(num_groups=8), x, temb, train=False)
  assert "nin_shortcut" not in v["params"]

  out, _ = abstract(AttnBlock(num_groups=8), x)
  assert out.shape == x.shape
  for with_conv in (True, False):
    out, _ = abstract(Downsample(with_conv=with_conv), x)
    assert out.shape == (2, 4, 4, 16)
    out, _ = abstract(Upsample(with_conv=with_conv), x)
    assert out.shape == (2, 16, 16, 16)


def test_blocks_are_identity_at_init():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.float32)
  temb = jnp.asarray(rng.standard_normal((1, 16)), jnp.float32)
  block = ddpm_res_block(num_groups=4)
  out, _ = jax.jit(lambda k: block.init_with_output(k, x, temb, train=False))(_key(0))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6)
  attn = AttnBlock(num_groups=4)
  out, _ = jax.jit(lambda k: attn.init_with_output(k, x))(_key(0))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6)
