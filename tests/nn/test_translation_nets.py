"""The image-to-image networks: shapes, the PatchGAN's receptive field, U-Net skips and test-time
dropout, the ResNet generator's reflection padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import translation as tr

KEY = jax.random.key(0)


def _init(module, x, **kw):
  return module.init({"params": KEY, "dropout": KEY}, x, train=False, **kw)


# ---------------------------------------------------------------------- shapes


@pytest.mark.parametrize("size,num_downs", [(16, 4), (16, None), (32, 5), (64, 3)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_shapes(size, num_downs, norm):
  g = tr.UNetGenerator(3, ngf=4, num_downs=num_downs, norm=norm)
  x = jnp.zeros((2, size, size, 1))
  v = jax.eval_shape(lambda: _init(g, x))
  y = jax.eval_shape(lambda v: g.apply(v, x, train=True, rngs={"dropout": KEY},
                                       mutable=["batch_stats"])[0], v)
  assert y.shape == (2, size, size, 3)
  n = num_downs or int(np.log2(size))
  kernels = [v["params"][f"down_{i}"]["kernel"].shape[-1] for i in range(n)]
  assert kernels == [4 * min(2 ** i, 8) for i in range(n)]  # features capped at 8 ngf
  assert ("batch_stats" in v) == (norm == "batch")


def test_unet_default_depth_reaches_1x1_and_rejects_bad_depths():
  assert tr.unet_num_downs(256, 256) == 8
  assert tr.unet_num_downs(16, 16) == 4
  assert tr.unet_num_downs(24, 24) == 3   # 2^3 is the largest power of two dividing 24
  with pytest.raises(ValueError, match="2\\*\\*5 = 32 to divide the image size"):
    tr.unet_num_downs(16, 16, 5)
  g = tr.UNetGenerator(1, ngf=4, num_downs=3)
  with pytest.raises(ValueError, match="divide the image size, got 12x12"):
    _init(g, jnp.zeros((1, 12, 12, 1)))
  with pytest.raises(ValueError, match="unknown normalization 'group'"):
    _init(tr.UNetGenerator(1, ngf=4, norm="group"), jnp.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize("n_layers,size,logits", [(1, 16, 6), (2, 16, 2), (3, 256, 30)])
def test_patch_discriminator_shapes(n_layers, size, logits):
  d = tr.PatchDiscriminator(ndf=4, n_layers=n_layers)
  x = jnp.zeros((2, size, size, 4))
  v = jax.eval_shape(lambda: d.init(KEY, x, train=False))
  out = jax.eval_shape(lambda v: d.apply(v, x, train=True, mutable=["batch_stats"])[0], v)
  assert out.shape == (2, logits, logits)


def test_patch_discriminator_rejects_small_inputs():
  with pytest.raises(ValueError, match="leaves no logits on 16x16"):
    tr.PatchDiscriminator(ndf=4, n_layers=3).init(KEY, jnp.zeros((1, 16, 16, 2)), train=False)
  with pytest.raises(ValueError, match="n_layers >= 1"):
    tr.patch_receptive_field(0)


@pytest.mark.parametrize("upsample", ["resize", "transpose"])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_shapes(upsample, norm):
  g = tr.ResnetGenerator(3, ngf=4, n_blocks=2, norm=norm, upsample=upsample)
  x = jnp.zeros((2, 32, 32, 1))
  v = jax.eval_shape(lambda: _init(g, x))
  y = jax.eval_shape(lambda v: g.apply(v, x, train=True, mutable=["batch_stats"])[0], v)
  assert y.shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match="multiples of 4"):
    _init(g, jnp.zeros((1, 18, 18, 1)))


# ---------------------------------------------------------------------- PatchGAN field


def test_patch_receptive_field_closed_form():
  assert [tr.patch_receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
  for n in range(1, 6):  # the recurrence r <- 2 r + 2 from r = 7 (two stride-1 4x4 convs)
    r = 7
    for _ in range(n):
      r = 2 * r + 2
    assert tr.patch_receptive_field(n) == r


def _field(n_layers, j):
  """Input rows [start, end] of logit j: stride 2^n, offset sum(pad * stride before) = 3 2^n - 1."""
  start = j * 2 ** n_layers - (3 * 2 ** n_layers - 1)
  return start, start + tr.patch_receptive_field(n_layers) - 1


@pytest.mark.parametrize("n_layers,size", [(1, 48), (2, 80), (3, 160)])
def test_patch_receptive_field_by_impulse(n_layers, size):
  """One perturbed pixel changes exactly the logits whose field holds it, and the gradient of a
  logit is nonzero on exactly its r x r field (batch norm in inference mode: per-pixel)."""
  d = tr.PatchDiscriminator(ndf=4, n_layers=n_layers, norm="batch")
  x = jax.random.normal(jax.random.key(1), (1, size, size, 2))
  v = d.init(KEY, x, train=False)
  f = jax.jit(lambda x: d.apply(v, x, train=False)[0])
  r = tr.patch_receptive_field(n_layers)

  p = size // 2
  changed = np.asarray(f(x.at[0, p, p, 0].add(1.0)) != f(x))
  rows = np.flatnonzero(changed.any(1))
  expected = [j for j in range(changed.shape[0]) if _field(n_layers, j)[0] <= p
              <= _field(n_layers, j)[1]]
  assert rows.tolist() == expected and np.flatnonzero(changed.any(0)).tolist() == expected
  assert changed[np.ix_(rows, rows)].all()

  j = changed.shape[0] // 2
  start, end = _field(n_layers, j)
  assert 0 <= start and end < size  # an interior logit: its field is not clipped by padding
  grad = jax.grad(lambda x: f(x)[j, j])(x)
  support = np.asarray(jnp.abs(grad[0]).sum(-1) > 0)
  seen = np.flatnonzero(support.any(1))
  assert seen[0] == start and seen[-1] == end and len(seen) == r
  assert support[start:end + 1, start:end + 1].all()
  base = f(x)[j, j]
  for q in (start - 1, end + 1):  # just outside the field: the logit does not move
    assert f(x.at[0, q, p, :].add(5.0))[j, j] == base
    assert f(x.at[0, p, q, :].add(5.0))[j, j] == base
  assert f(x.at[0, start, end, 0].add(5.0))[j, j] != base  # the field's corner does


# ---------------------------------------------------------------------- U-Net


def test_unet_skips_carry_full_resolution():
  """With the bottleneck conv zeroed (the bottleneck is constant), the output still follows the
  input, pixel for pixel: only the skip connections can carry it."""
  g = tr.UNetGenerator(1, ngf=4, num_downs=4, dropout=0.0)
  x = jax.random.uniform(jax.random.key(2), (1, 16, 16, 1), minval=-1, maxval=1)
  v = _init(g, x)
  params = dict(v["params"])
  params["down_3"] = jax.tree.map(jnp.zeros_like, params["down_3"])
  v = {**v, "params": params}
  f = lambda x: g.apply(v, x, train=False)
  bottleneck = lambda x: g.apply(v, x, train=False, capture_intermediates=True,
                                 mutable=["intermediates"])[1]["intermediates"]["down_3"]
  np.testing.assert_array_equal(bottleneck(x)["__call__"][0], 0.0)
  x2 = x.at[0, 7, 7, 0].add(1.0)
  diff = np.asarray(jnp.abs(f(x2) - f(x))[0, ..., 0])
  assert diff.max() > 1e-4
  # the change is strongest where the pixel moved (the full-resolution skip), not spread evenly
  near = diff[5:10, 5:10].max()
  far = max(diff[:2].max(), diff[-2:].max(), diff[:, :2].max(), diff[:, -2:].max())
  assert near > 2 * far


def test_unet_dropout_is_the_noise_at_sampling():
  g = tr.UNetGenerator(1, ngf=4, num_downs=4, dropout=0.5)
  x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 1), minval=-1, maxval=1)
  v = _init(g, x)
  run = lambda seed: g.apply(v, x, train=False, rngs={"dropout": jax.random.key(seed)})
  a, b, a2 = run(1), run(2), run(1)
  np.testing.assert_array_equal(a, a2)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  inter = g.apply(v, x, train=False, rngs={"dropout": KEY}, capture_intermediates=True,
                  mutable=["intermediates"])[1]["intermediates"]
  names = {k for k in inter if k.startswith("up_dropout")}
  assert names == {"up_dropout_3", "up_dropout_2", "up_dropout_1"}  # the 3 by the bottleneck

  g0 = tr.UNetGenerator(1, ngf=4, num_downs=4, dropout=0.0)
  v0 = _init(g0, x)
  np.testing.assert_array_equal(g0.apply(v0, x, train=False),  # no rng needed
                                g0.apply(v0, x, train=False, rngs={"dropout": KEY}))


def test_unet_dropout_layers_for_the_paper_depth():
  g = tr.UNetGenerator(3, ngf=2, num_downs=8)
  x = jnp.zeros((1, 256, 256, 3))
  out = jax.eval_shape(lambda: g.init_with_output(
      {"params": KEY, "dropout": KEY}, x, train=False, capture_intermediates=True)[1])
  names = {k for k in out["intermediates"] if k.startswith("up_dropout")}
  assert names == {"up_dropout_7", "up_dropout_6", "up_dropout_5"}  # CD512 x 3 of the paper


# ---------------------------------------------------------------------- ResNet generator


@pytest.mark.parametrize("norm", ["none", "batch", "instance"])
def test_resnet_constant_in_constant_out(norm):
  """Reflection padding everywhere: no zero border, so a constant image stays constant (a
  zero-padded conv would make the border rows differ)."""
  g = tr.ResnetGenerator(2, ngf=4, n_blocks=2, norm=norm)
  x = jnp.full((1, 16, 16, 3), 0.3)
  v = _init(g, jax.random.normal(KEY, x.shape))
  y = np.asarray(g.apply(v, x, train=False))
  np.testing.assert_allclose(y, np.broadcast_to(y[:, :1, :1], y.shape), rtol=0, atol=1e-6)
  if norm != "instance":  # instance norm maps any constant to 0: only the others show content
    y2 = np.asarray(g.apply(v, jnp.full_like(x, -0.5), train=False))
    assert np.abs(y2 - y).max() > 1e-4


def test_resnet_transposed_upsampling_is_not_constant():
  """The reference's transposed convs overlap unevenly (checkerboard): why 'resize' is the
  default."""
  g = tr.ResnetGenerator(2, ngf=4, n_blocks=1, norm="none", upsample="transpose")
  x = jnp.full((1, 16, 16, 3), 0.3)
  v = _init(g, jax.random.normal(KEY, x.shape))
  y = np.asarray(g.apply(v, x, train=False))
  assert np.abs(y - y[:, :1, :1]).max() > 1e-4


# ---------------------------------------------------------------------- the reference's settings


def test_unet_reference_dropout_and_edge_biases():
  """pytorch-CycleGAN-and-pix2pix's U-Net: dropout in the ngf*8 blocks between the bottleneck's
  own level and the four outer levels, no bias on any down conv of a batch-norm U-Net (the
  parity with the reference itself: tests/convert/test_translation.py)."""
  x = jnp.zeros((1, 256, 256, 3))
  g = tr.UNetGenerator(3, ngf=2, num_downs=8, dropout_placement="reference", edge_bias=False)
  v = jax.eval_shape(lambda: g.init_with_output(
      {"params": KEY, "dropout": KEY}, x, train=False, capture_intermediates=True)[1])
  names = {k for k in v["intermediates"] if k.startswith("up_dropout")}
  assert names == {"up_dropout_6", "up_dropout_5", "up_dropout_4"}
  params = v["params"]
  assert not any("bias" in params[f"down_{i}"] for i in range(8))
  assert "bias" in params["up_0"]  # the outermost up conv keeps its bias (no norm follows)
  assert tr.unet_dropout_levels(5, "reference") == ()
  with pytest.raises(ValueError, match="dropout placement"):
    tr.unet_dropout_levels(8, "everywhere")
  inst = tr.UNetGenerator(3, ngf=2, num_downs=5, norm="instance", edge_bias=False)
  p = jax.eval_shape(lambda: _init(inst, jnp.zeros((1, 32, 32, 3))))["params"]
  assert all("bias" in p[f"down_{i}"] for i in range(5))  # instance norm: biases everywhere


def test_resnet_zero_padded_strided_convs_break_constancy():
  """down_padding='zero' (the reference's): the border sees zeros, so a constant image no
  longer maps to a constant image; the parameter tree is the same as with reflection."""
  g = tr.ResnetGenerator(2, ngf=4, n_blocks=1, norm="none", down_padding="zero")
  x = jnp.full((1, 16, 16, 3), 0.3)
  v = _init(g, jax.random.normal(KEY, x.shape))
  y = np.asarray(g.apply(v, x, train=False))
  assert np.abs(y - y[:, :1, :1]).max() > 1e-4
  v_reflect = _init(g.clone(down_padding="reflect"), jax.random.normal(KEY, x.shape))
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, v_reflect)
  with pytest.raises(ValueError, match="down_padding"):
    _init(g.clone(down_padding="replicate"), x)
