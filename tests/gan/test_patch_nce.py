"""PatchNCE against a NumPy transcription of CUT's PatchNCELoss (positive apart, the negatives'
diagonal filled with -10 before dividing by tau), the head, the locations, the gradient path,
and the term in StarGAN's generator loss and train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.gan import patch_nce
from jgen.nn.stargan import ENCODER_COLLECTION, StarGANGenerator, encoder_layers
from jgen.train import load_method
from tests.conftest import load_experiment


def _cut_reference(q: np.ndarray, k: np.ndarray, tau: float) -> np.ndarray:
  """CUT's PatchNCELoss per patch, [B * S], in float64: q, k `[B, S, n]` (negatives from the
  same image). l_pos = q_i . k_i; l_neg = q k^T with the diagonal set to -10; cross entropy
  of class 0 over [l_pos, l_neg] / tau."""
  b, s, _ = q.shape
  out = []
  for bi in range(b):
    for i in range(s):
      pos = q[bi, i] @ k[bi, i]
      neg = k[bi] @ q[bi, i]
      neg[i] = -10.0
      logits = np.concatenate([[pos], neg]) / tau
      m = logits.max()
      out.append(-(logits[0] - m - np.log(np.exp(logits - m).sum())))
  return np.asarray(out)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_layer_loss_equals_cut(tau):
  rng = np.random.default_rng(0)
  q = _unit(rng.normal(size=(3, 7, 5)))
  k = _unit(q + 0.8 * rng.normal(size=q.shape))
  ours = patch_nce.patch_nce_layer(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), tau)
  ref = _cut_reference(q, k, tau).reshape(3, 7).mean(axis=1)
  # float32 logits up to 1/0.07 ~ 14.3 in magnitude: 1e-5 relative covers the rounding.
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_layer_loss_limits():
  eye = jnp.eye(4)[None]  # orthonormal patches, each its own key: the loss -> 0 as tau -> 0
  assert float(patch_nce.patch_nce_layer(eye, eye, 0.01)[0]) < 1e-30
  same = jnp.ones((1, 4, 3)) / jnp.sqrt(3.0)  # indistinguishable patches: log S
  np.testing.assert_allclose(patch_nce.patch_nce_layer(same, same, 0.07), [np.log(4.0)],
                             rtol=1e-6)


def test_keys_are_constants():
  rng = np.random.default_rng(1)
  q = jnp.asarray(_unit(rng.normal(size=(2, 5, 4))), jnp.float32)
  k = jnp.asarray(_unit(rng.normal(size=(2, 5, 4))), jnp.float32)
  gk = jax.grad(lambda kk: patch_nce.patch_nce_layer(q, kk).sum())(k)
  gq = jax.grad(lambda qq: patch_nce.patch_nce_layer(qq, k).sum())(q)
  assert float(jnp.abs(gk).max()) == 0.0 and float(jnp.abs(gq).max()) > 0.0


def test_locations():
  all_ = patch_nce.sample_locations(jax.random.key(0), 4, 4, 256)
  np.testing.assert_array_equal(all_, np.arange(16))
  some = np.asarray(patch_nce.sample_locations(jax.random.key(0), 8, 8, 10))
  assert len(set(some.tolist())) == 10 and some.min() >= 0 and some.max() < 64
  with pytest.raises(ValueError, match="num_patches"):
    patch_nce.sample_locations(jax.random.key(0), 4, 4, 0)


def test_head_embeds_each_layer_at_its_locations():
  rng = np.random.default_rng(2)
  f1 = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  f2 = jnp.asarray(rng.normal(size=(2, 2, 2, 6)), jnp.float32)
  head = patch_nce.PatchNCEHead(features=8)
  loc = [jnp.array([0, 5, 15]), jnp.arange(4)]
  params = head.init(jax.random.key(0), [f1, f2], loc)["params"]
  out = head.apply({"params": params}, [f1, f2], loc)
  assert [o.shape for o in out] == [(2, 3, 8), (2, 4, 8)]
  np.testing.assert_allclose(jnp.linalg.norm(out[0], axis=-1), 1.0, rtol=1e-5)
  # Location 5 of a 4x4 map is row 1, column 1; the head is one MLP applied per patch.
  alone = head.apply({"params": params}, [f1[:, 1:2, 1:2], f2], [jnp.array([0]), loc[1]])
  np.testing.assert_allclose(out[0][:, 1], alone[0][:, 0], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="location sets"):
    head.apply({"params": params}, [f1, f2], loc[:1])


def test_loss_of_identical_features_is_below_that_of_shuffled_ones():
  rng = np.random.default_rng(3)
  f = jnp.asarray(rng.normal(size=(2, 4, 4, 5)), jnp.float32)
  head = patch_nce.PatchNCEHead(features=16)
  params = head.init(jax.random.key(0), [f], [jnp.arange(16)])["params"]
  same = patch_nce.patch_nce_loss(head, params, [f], [f], jax.random.key(1), tau=0.07)
  moved = patch_nce.patch_nce_loss(head, params, [f], [jnp.roll(f, 1, axis=1)],
                                   jax.random.key(1), tau=0.07)
  assert float(same) < float(moved)
  with pytest.raises(ValueError, match="same layers"):
    patch_nce.patch_nce_loss(head, params, [f], [], jax.random.key(1))


def test_generator_sows_its_encoder_without_new_parameters():
  g = StarGANGenerator(out_channels=1, ngf=4, n_down=2, n_blocks=2)
  x, c = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2, 3))
  params = g.init(jax.random.key(0), x, c)["params"]
  y, sown = g.apply({"params": params}, x, c, mutable=[ENCODER_COLLECTION])
  np.testing.assert_array_equal(y, g.apply({"params": params}, x, c))
  shapes = {k: v[0].shape for k, v in sown[ENCODER_COLLECTION].items()}
  assert tuple(shapes) == encoder_layers(2, 2)
  assert shapes == {"input": (2, 8, 8, 1), "stem": (2, 8, 8, 4), "down_1": (2, 4, 4, 8),
                    "down_2": (2, 2, 2, 16), "block_1": (2, 2, 2, 16),
                    "block_2": (2, 2, 2, 16)}


def _nce_config(**overrides):
  config = load_experiment("translation/stargan_digits", "smoke")
  config.gan.lambda_nce = 1.0
  config.gan.nce_layers = ("stem", "down_1")
  for k, v in overrides.items():
    config.gan[k] = v
  return config


def test_stargan_nce_term_trains_g_and_its_head():
  config = _nce_config()
  method = load_method(config)
  rng = np.random.default_rng(0)
  s, b = config.data.image_size, config.data.batch_size
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (b, s, s, 1)), jnp.float32)}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  assert set(state.params) == {"generator", "discriminator", "nce_head"}
  x, c_org = method.real_domains(batch, jax.random.key(2))
  c_trg = method.sample_targets(jax.random.key(3), c_org)
  total, (_, m) = method.generator_loss(state.params, state.model_state, x, c_org, c_trg,
                                        jax.random.key(4))
  paper = load_method(load_experiment("translation/stargan_digits", "smoke"))
  params = {k: state.params[k] for k in ("generator", "discriminator")}
  base, (_, mb) = paper.generator_loss(params, state.model_state, x, c_org, c_trg)
  assert "g_nce" not in mb and 0.0 < float(m["g_nce"]) < 2 * np.log(64.0)
  np.testing.assert_allclose(total, base + m["g_nce"], rtol=1e-5)
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["g_nce"]))
  for net in ("generator", "nce_head"):
    before, after = jax.tree.leaves(state.params[net]), jax.tree.leaves(new.params[net])
    assert any(not np.allclose(a, bb) for a, bb in zip(before, after)), net


def test_stargan_nce_errors():
  with pytest.raises(ValueError, match="nce_layers"):
    load_method(_nce_config(nce_layers=()))
  with pytest.raises(ValueError, match="nce_layers"):
    load_method(_nce_config(nce_layers=("stem", "block_9")))
  with pytest.raises(ValueError, match="lambda_nce"):
    load_method(_nce_config(lambda_nce=-1.0))


def test_stargan_nce_query_target_reads_the_translation_with_the_target_domain():
  config = _nce_config(nce_query="target")
  method = load_method(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
  state = method.init(jax.random.key(0), {"image": x})
  c_org, c_trg = jnp.zeros((4, 3)), jnp.ones((4, 3))
  _, (_, m) = method.generator_loss(state.params, state.model_state, x, c_org, c_trg,
                                    jax.random.key(4))
  g = state.params["generator"]
  fake, keys = method.encode(g, x, c_trg)
  _, queries = method.encode(g, fake, c_trg)
  want = patch_nce.patch_nce_loss(method.nce_head, state.params["nce_head"], keys, queries,
                                  jax.random.key(4), num_patches=method.nce_patches)
  np.testing.assert_allclose(m["g_nce"], want, rtol=1e-6)
  _, way_back = method.encode(g, fake, c_org)
  other = patch_nce.patch_nce_loss(method.nce_head, state.params["nce_head"], keys, way_back,
                                   jax.random.key(4), num_patches=method.nce_patches)
  assert abs(float(other) - float(want)) > 1e-6
  with pytest.raises(ValueError, match="nce_query"):
    load_method(_nce_config(nce_query="forward"))
