"""Tests for the U-Net's optional conditioning (label, cross-attention context, image channels).

Parameter counts and trees come from ``jax.eval_shape`` (no compute); only two tiny U-Nets are
compiled (the unconditional one and one with all three conditionings), with the rbg key
implementation, as in test_unet.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import UNet
from jgen.nn.layers import CrossAttnBlock

TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, num_groups=8)
SHAPE = (2, 16, 16, 1)
NUM_CLASSES, CONTEXT_DIM, COND_CHANNELS, CONTEXT_LEN = 3, 6, 2, 5
ALL = dict(num_classes=NUM_CLASSES, context_dim=CONTEXT_DIM, cond_channels=COND_CHANNELS)
CIFAR_COUNT = 35_746_307


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _count(tree) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _shapes(tree):
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): leaf.shape for p, leaf in leaves}


def _conditions(shape, seed=0, label=0):
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  return {
      "label": jnp.full((b,), label, jnp.int32),
      "context": jnp.asarray(rng.standard_normal((b, CONTEXT_LEN, CONTEXT_DIM)), jnp.float32),
      "image": jnp.asarray(rng.standard_normal((b, h, w, COND_CHANNELS)), jnp.float32),
  }


def _abstract_params(model, shape, conditions=None):
  b = shape[0]
  return jax.eval_shape(lambda: model.init(_key(0), jnp.zeros(shape), jnp.zeros((b,), jnp.int32),
                                           conditions, train=False))["params"]


def _random_like(shapes, seed, scale=0.1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def _cross_attn_count(c, d):
  """norm 2c, q and proj_out c*c + c each, k and v d*c + c each."""
  return 2 * c + 2 * (c * c + c) + 2 * (d * c + c)


# Attention blocks of TINY on 16x16 inputs (attn_resolutions=(16,)): down_0_block_0,
# up_0_block_0, up_0_block_1 at ch=16, and the middle at ch*2=32.
TINY_ATTN_CHANNELS = (16, 16, 16, 32)
# The CIFAR-10 config: down_1 (2 blocks) and up_1 (3 blocks) at 16x16 and the middle, all 256.
CIFAR_ATTN_CHANNELS = (256,) * 6


def test_defaults_keep_the_cifar10_network():
  model = UNet()
  assert model.condition_keys == ()
  shapes = _abstract_params(model, (1, 32, 32, 3))
  assert _count(shapes) == CIFAR_COUNT
  names = set(shapes)
  assert "label_emb" not in names
  assert not [n for n in names if "cross_attn" in n]
  assert shapes["conv_in"]["kernel"].shape == (3, 3, 3, 128)
  assert _shapes(_abstract_params(model, (1, 32, 32, 3), {})) == _shapes(shapes)


@pytest.mark.parametrize("option", ["num_classes", "context_dim", "cond_channels"])
def test_each_option_adds_the_expected_parameters(option):
  ch = TINY["ch"]
  expected = {
      "num_classes": (NUM_CLASSES + 1) * 4 * ch,
      "context_dim": sum(_cross_attn_count(c, CONTEXT_DIM) for c in TINY_ATTN_CHANNELS),
      "cond_channels": 3 * 3 * COND_CHANNELS * ch,
  }[option]
  base = _abstract_params(UNet(**TINY), SHAPE)
  model = UNet(**TINY, **{option: ALL[option]})
  key = {"num_classes": "label", "context_dim": "context", "cond_channels": "image"}[option]
  assert model.condition_keys == (key,)
  shapes = _abstract_params(model, SHAPE, {key: _conditions(SHAPE)[key]})
  assert _count(shapes) - _count(base) == expected
  # The unconditional tree is kept: same names and shapes, but the widened input conv.
  new, old = _shapes(shapes), _shapes(base)
  changed = {k for k in old if new[k] != old[k]}
  assert changed == ({"['conv_in']['kernel']"} if option == "cond_channels" else set())
  added = {k.split("]")[0] for k in set(new) - set(old)}
  if option == "num_classes":
    assert added == {"['label_emb'"}
    assert shapes["label_emb"]["embedding"].shape == (NUM_CLASSES + 1, 4 * ch)
  elif option == "context_dim":
    assert added == {"['down_0_block_0_cross_attn'", "['up_0_block_0_cross_attn'",
                     "['up_0_block_1_cross_attn'", "['mid_cross_attn_1'"}


def test_cifar10_counts_with_labels_and_context():
  label = {"label": jnp.zeros((1,), jnp.int32)}
  n = _count(_abstract_params(UNet(num_classes=10), (1, 32, 32, 3), label))
  assert n == CIFAR_COUNT + 11 * 512 == 35_751_939
  context = {"context": jnp.zeros((1, 77, 512))}
  n = _count(_abstract_params(UNet(context_dim=512), (1, 32, 32, 3), context))
  assert n == CIFAR_COUNT + sum(_cross_attn_count(c, 512) for c in CIFAR_ATTN_CHANNELS)
  assert n == 38_114_819


@pytest.fixture(scope="module")
def nets():
  """The tiny unconditional U-Net and the one with all conditionings, random parameters."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
  t = jnp.array([3, 917], jnp.int32)
  cond_model = UNet(**TINY, **ALL)
  cond_params = _random_like(_abstract_params(cond_model, SHAPE, _conditions(SHAPE)), seed=2)
  return {
      "x": x, "t": t, "cond_params": cond_params,
      "uncond": jax.jit(functools.partial(UNet(**TINY).apply, train=False)),
      "cond": jax.jit(functools.partial(cond_model.apply, train=False)),
  }


def _out(nets, conditions, params=None):
  params = nets["cond_params"] if params is None else params
  return np.asarray(nets["cond"]({"params": params}, nets["x"], nets["t"], conditions))


def test_zeroed_conditioning_is_the_unconditional_network(nets):
  """With the label embedding, the image channels of conv_in and the cross-attention outputs
  zeroed, the conditional network computes the unconditional one (same shared parameters)."""
  params = dict(nets["cond_params"])
  uncond = {k: v for k, v in params.items() if k != "label_emb" and "cross_attn" not in k}
  conv_in = dict(params["conv_in"])
  uncond["conv_in"] = {"kernel": conv_in["kernel"][:, :, :SHAPE[-1]], "bias": conv_in["bias"]}
  conv_in["kernel"] = conv_in["kernel"].at[:, :, SHAPE[-1]:].set(0.0)
  params["conv_in"] = conv_in
  params["label_emb"] = jax.tree.map(jnp.zeros_like, params["label_emb"])
  for k in [k for k in params if "cross_attn" in k]:
    params[k] = dict(params[k], proj_out=jax.tree.map(jnp.zeros_like, params[k]["proj_out"]))
  ref = np.asarray(nets["uncond"]({"params": uncond}, nets["x"], nets["t"]))
  out = _out(nets, _conditions(SHAPE), params)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  kw = np.asarray(nets["uncond"]({"params": uncond}, nets["x"], nets["t"], conditions=None))
  np.testing.assert_array_equal(kw, ref)


def test_each_condition_changes_the_output(nets):
  base = _out(nets, _conditions(SHAPE))
  assert np.all(np.isfinite(base)) and base.shape == SHAPE
  for label in (1, NUM_CLASSES):  # another class and the null class
    assert not np.allclose(_out(nets, _conditions(SHAPE, label=label)), base)
  other = _conditions(SHAPE, seed=7)
  for key in ("context", "image"):
    assert not np.allclose(_out(nets, dict(_conditions(SHAPE), **{key: other[key]})), base)
  with_null = dict(_conditions(SHAPE), null=jnp.ones((SHAPE[0],), bool))
  np.testing.assert_array_equal(_out(nets, with_null), base)  # `null` is information only


def test_missing_and_unexpected_conditions_raise():
  model = UNet(**TINY, **ALL)
  cond = _conditions(SHAPE)
  for key in ("label", "context", "image"):
    with pytest.raises(KeyError, match=key):
      _abstract_params(model, SHAPE, {k: v for k, v in cond.items() if k != key})
  with pytest.raises(KeyError, match="label"):
    _abstract_params(model, SHAPE, None)
  with pytest.raises(ValueError, match="label"):
    _abstract_params(UNet(**TINY), SHAPE, {"label": cond["label"]})
  with pytest.raises(ValueError, match="context_dim"):
    _abstract_params(model, SHAPE, dict(cond, context=jnp.zeros((2, 5, CONTEXT_DIM + 1))))
  with pytest.raises(ValueError, match="cond_channels"):
    _abstract_params(model, SHAPE, dict(cond, image=jnp.zeros((2, 8, 8, COND_CHANNELS))))
  with pytest.raises(ValueError, match="integer"):
    _abstract_params(model, SHAPE, dict(cond, label=jnp.zeros((2,))))


def _group_norm(x, scale, bias, groups, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def _cross_attn_numpy(p, x, context, groups, heads):
  """softmax(Q K^T / sqrt(d)) V per head, from the normalised map to the context, residual."""
  b, h, w, c = x.shape
  d = c // heads
  dense = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  hn = _group_norm(x, p["norm"]["norm"]["scale"], p["norm"]["norm"]["bias"], groups)
  q = dense("q", hn.reshape(b, h * w, c)).reshape(b, h * w, heads, d)
  k = dense("k", context).reshape(b, -1, heads, d)
  v = dense("v", context).reshape(b, -1, heads, d)
  out = np.zeros((b, h * w, heads, d))
  for i in range(b):
    for j in range(heads):
      logits = q[i, :, j] @ k[i, :, j].T / np.sqrt(d)
      weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
      weights /= weights.sum(axis=-1, keepdims=True)
      out[i, :, j] = weights @ v[i, :, j]
  return x + dense("proj_out", out.reshape(b, h * w, c)).reshape(x.shape)


@pytest.mark.parametrize("heads", [1, 2])
def test_cross_attention_matches_numpy(heads):
  rng = np.random.default_rng(heads)
  x = rng.standard_normal((2, 3, 2, 8)).astype(np.float32)
  context = rng.standard_normal((2, 4, 5)).astype(np.float32)
  block = CrossAttnBlock(num_groups=4, num_heads=heads)
  shapes = jax.eval_shape(lambda: block.init(_key(0), x, context))["params"]
  assert _count(shapes) == _cross_attn_count(8, 5)
  params = _random_like(shapes, seed=3, scale=0.5)
  apply = jax.jit(lambda p, a, ctx: block.apply({"params": p}, a, ctx))
  out = np.asarray(apply(params, x, context))
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  ref = _cross_attn_numpy(p64, x.astype(np.float64), context.astype(np.float64), 4, heads)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  other = np.asarray(apply(params, x, context[::-1]))
  assert not np.allclose(other, out)
  with pytest.raises(ValueError, match="context"):
    block.apply({"params": params}, x, context[0])


EMBEDDING_DIM = 5


def test_embedding_condition_adds_one_projection_and_zero_init_is_the_plain_network():
  """embedding_dim > 0 adds exactly `embedding_proj` ((D + 1) * 4 ch parameters) and nothing
  else; with embedding_init_scale = 0 the network computes the one without the condition (same
  shared parameters), and a trained (non-zero) projection makes the embedding change it."""
  ch = TINY["ch"]
  emb = jnp.asarray(np.random.default_rng(4).standard_normal((SHAPE[0], EMBEDDING_DIM)),
                    jnp.float32)
  base = _abstract_params(UNet(**TINY), SHAPE)
  model = UNet(**TINY, embedding_dim=EMBEDDING_DIM, embedding_init_scale=0.0)
  assert model.condition_keys == ("embedding",)
  shapes = _abstract_params(model, SHAPE, {"embedding": emb})
  assert _count(shapes) - _count(base) == (EMBEDDING_DIM + 1) * 4 * ch
  new, old = _shapes(shapes), _shapes(base)
  assert {k for k in old if new[k] != old[k]} == set()
  assert {k.split("]")[0] for k in set(new) - set(old)} == {"['embedding_proj'"}

  x = jnp.asarray(np.random.default_rng(5).standard_normal(SHAPE), jnp.float32)
  t = jnp.array([3, 917], jnp.int32)
  params = model.init(_key(0), x, t, {"embedding": emb}, train=False)["params"]
  np.testing.assert_array_equal(params["embedding_proj"]["kernel"], 0.0)
  params = dict(_random_like(params, seed=6))  # a non-zero output conv: outputs differ
  zeroed = dict(params, embedding_proj=jax.tree.map(jnp.zeros_like, params["embedding_proj"]))
  plain = {k: v for k, v in params.items() if k != "embedding_proj"}
  apply = jax.jit(lambda p, e: model.apply({"params": p}, x, t, {"embedding": e}, train=False))
  ref = np.asarray(UNet(**TINY).apply({"params": plain}, x, t, train=False))
  np.testing.assert_allclose(np.asarray(apply(zeroed, emb)), ref, rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(apply(params, emb)), ref)
  assert not np.allclose(np.asarray(apply(params, emb)), np.asarray(apply(params, -emb)))
  # The default init scale (1) starts with a non-zero projection.
  default = UNet(**TINY, embedding_dim=EMBEDDING_DIM).init(_key(0), x, t, {"embedding": emb},
                                                            train=False)["params"]
  assert np.abs(np.asarray(default["embedding_proj"]["kernel"])).max() > 0


def test_bad_embedding_condition_raises():
  model = UNet(**TINY, embedding_dim=EMBEDDING_DIM)
  with pytest.raises(KeyError, match="embedding"):
    _abstract_params(model, SHAPE, None)
  with pytest.raises(ValueError, match="embedding_dim"):
    _abstract_params(model, SHAPE, {"embedding": jnp.zeros((2, EMBEDDING_DIM + 1))})
  with pytest.raises(ValueError, match="float"):
    _abstract_params(model, SHAPE, {"embedding": jnp.zeros((2, EMBEDDING_DIM), jnp.int32)})
  with pytest.raises(ValueError, match="embedding_dim"):
    _abstract_params(UNet(**TINY), SHAPE, {"embedding": jnp.zeros((2, EMBEDDING_DIM))})
