"""`jgen.nn.lora`: the adapted model equals the base at initialisation, the update equals the
two-layer form computed independently (x A B for Dense; a k x k then a 1 x 1 convolution for
convolutions), the adapters' gradients match their closed forms, merge / unmerge round-trips,
and bad targets, ranks and inits are refused with the module paths listed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn.lora import Lora, num_params
from jgen.nn.unet import UNet
from jgen.train.rules import flat


@pytest.fixture(scope="module")
def unet():
  model = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
  t = jnp.array([3, 700], jnp.int32)
  params = model.init({"params": jax.random.key(0)}, x, t, train=False)["params"]
  return model, params, x, t


def test_targets_select_kernels_by_module_path(unet):
  _, params, _, _ = unet
  attn = Lora(rank=2, targets=r"attn.*/(q|k|v|proj_out)$").paths(params)
  assert attn and all(p.rsplit("/", 2)[-2] in ("q", "k", "v", "proj_out") for p in attn)
  convs = Lora(rank=2, targets=r"conv").paths(params)
  assert convs and all(flat(params)[p].ndim == 4 for p in convs)


def test_adapted_model_equals_base_at_init(unet):
  model, params, x, t = unet
  lora = Lora(rank=4, targets=r".*", alpha=8.0)  # conv_out (3 outputs) gets a full-rank update
  adapters = lora.init_adapters(jax.random.key(1), params)
  base = model.apply({"params": params}, x, t, train=False)
  adapted = model.apply({"params": lora.merge(params, adapters)}, x, t, train=False)
  np.testing.assert_array_equal(np.asarray(adapted), np.asarray(base))
  for p, w in flat(lora.merge(params, adapters)).items():
    np.testing.assert_array_equal(np.asarray(w), np.asarray(flat(params)[p]))


def _random_adapters(lora, params, seed):
  """Adapters with B nonzero too, so the update is not zero."""
  adapters = lora.init_adapters(jax.random.key(seed), params)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) * 0.1,
                      adapters)


def test_dense_update_is_x_a_b_and_conv_update_is_kxk_then_1x1():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 6, 6, 5)).astype(np.float32)
  w_conv = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
  w_dense = rng.standard_normal((7, 4)).astype(np.float32)
  params = {"conv": {"kernel": jnp.asarray(w_conv)}, "dense": {"kernel": jnp.asarray(w_dense)}}
  lora = Lora(rank=2, targets=".*", alpha=3.0)
  adapters = _random_adapters(lora, params, 1)
  merged = lora.merge(params, adapters)

  def conv(x, w):
    return np.asarray(jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST))

  a, b = (np.asarray(adapters["conv"]["kernel"][k]) for k in ("lora_a", "lora_b"))
  low_rank = conv(conv(x, a.reshape(3, 3, 5, 2)), b.reshape(1, 1, 2, 7))
  np.testing.assert_allclose(conv(x, np.asarray(merged["conv"]["kernel"])),
                             conv(x, w_conv) + 1.5 * low_rank, rtol=1e-4, atol=1e-4)
  a, b = (np.asarray(adapters["dense"]["kernel"][k], np.float64) for k in ("lora_a", "lora_b"))
  h = rng.standard_normal((4, 7))
  np.testing.assert_allclose(h @ np.asarray(merged["dense"]["kernel"], np.float64),
                             h @ w_dense + 1.5 * (h @ a) @ b, rtol=1e-5, atol=1e-5)


def test_adapter_gradients_match_the_closed_form():
  # y = x (W + s A B); L = sum(y * g)  =>  dL/dA = s x^T g B^T, dL/dB = s (x A)^T g.
  rng = np.random.default_rng(2)
  x, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 3))
  params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)}}
  lora = Lora(rank=2, targets="dense", alpha=1.0)
  adapters = _random_adapters(lora, params, 3)

  def loss(ad):
    w = lora.merge(jax.lax.stop_gradient(params), ad)["dense"]["kernel"]
    return jnp.sum((jnp.asarray(x, jnp.float32) @ w) * jnp.asarray(g, jnp.float32))

  grads = jax.grad(loss)(adapters)["dense"]["kernel"]
  a, b = (np.asarray(adapters["dense"]["kernel"][k], np.float64) for k in ("lora_a", "lora_b"))
  s = lora.scale
  np.testing.assert_allclose(np.asarray(grads["lora_a"]), s * x.T @ g @ b.T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(grads["lora_b"]), s * (x @ a).T @ g, rtol=1e-4, atol=1e-5)
  # At initialisation B = 0, so A gets no gradient and B gets s (x A)^T g.
  init = lora.init_adapters(jax.random.key(0), params)
  g0 = jax.grad(loss)(init)["dense"]["kernel"]
  np.testing.assert_array_equal(np.asarray(g0["lora_a"]), 0.0)
  assert np.abs(np.asarray(g0["lora_b"])).max() > 0


def test_merge_then_unmerge_restores_the_base(unet):
  _, params, _, _ = unet
  lora = Lora(rank=3, targets=r"conv|attn", alpha=6.0, init="gaussian")
  adapters = _random_adapters(lora, params, 4)
  merged = lora.merge(params, adapters)
  changed = [p for p, w in flat(merged).items() if not np.array_equal(w, flat(params)[p])]
  assert sorted(changed) == sorted(lora.paths(params))
  for p, w in flat(lora.unmerge(merged, adapters)).items():
    np.testing.assert_allclose(np.asarray(w), np.asarray(flat(params)[p]), rtol=0, atol=1e-6)


def test_init_statistics_and_parameter_count():
  params = {"big": {"kernel": jnp.zeros((3, 3, 64, 32))}}
  for init, want_std in (("kaiming", 1 / np.sqrt(3 * 3 * 64) / np.sqrt(3)), ("gaussian", 1 / 4)):
    lora = Lora(rank=4, targets="big", init=init)
    adapters = lora.init_adapters(jax.random.key(0), params)
    a = np.asarray(adapters["big"]["kernel"]["lora_a"])
    assert a.shape == (576, 4) and abs(a.std() / want_std - 1) < 0.05
    np.testing.assert_array_equal(np.asarray(adapters["big"]["kernel"]["lora_b"]), 0.0)
    assert num_params(adapters) == 4 * (576 + 32)


def test_bad_targets_ranks_and_inits_are_refused(unet):
  _, params, _, _ = unet
  with pytest.raises(ValueError, match="match no Dense or convolution kernel.*module paths"):
    Lora(rank=2, targets="no_such_module").paths(params)
  with pytest.raises(ValueError, match="at least 1"):
    Lora(rank=0, targets=".*")
  with pytest.raises(ValueError, match="unknown LoRA init"):
    Lora(rank=2, targets=".*", init="xavier")
  with pytest.raises(ValueError, match="not a regular expression"):
    Lora(rank=2, targets="(")
  with pytest.raises(KeyError, match="lack"):
    Lora(rank=1, targets=".*").merge(
        params,
        {"elsewhere": {"kernel": {"lora_a": jnp.zeros((2, 1)), "lora_b": jnp.zeros((1, 2))}}})
