"""StarGAN: the loss terms by hand, the reconstruction's domain, the penalty, one jitted step,
translation shapes, the CelebA config on a fake batch, and the loop with resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgen.run
from jgen.gan import domains, stargan
from jgen.train import load_method
from jgen.train.method import Evaluates, Translates
from tests.conftest import checkpoint_steps, load_experiment


def _digits_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  s, b = config.data.image_size, config.data.batch_size
  return {"image": jnp.asarray(rng.uniform(-1, 1, (b, s, s, config.data.channels)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, b), jnp.int32)}


@pytest.fixture(scope="module")
def smoke():
  config = load_experiment("translation/stargan_digits", "smoke")
  method = load_method(config)
  batch = _digits_batch(config)
  return config, method, batch, jax.jit(method.init)(jax.random.key(0), batch)


def test_config_fields_are_the_papers():
  config = load_experiment("translation/stargan_digits")
  method = load_method(config)
  assert isinstance(method, Translates) and isinstance(method, Evaluates)
  assert (method.n_critic, method.lambda_gp, method.lambda_cls, method.lambda_rec) == (
      5, 10.0, 1.0, 10.0)
  assert (config.optim.lr, config.optim.b1, config.optim.b2) == (1e-4, 0.5, 0.999)
  assert method.translation_names[0] == "clean" and len(method.translation_names) == 8
  assert config.data.batch_size == 5 * 16


def test_classification_loss_by_hand():
  logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], np.float32)
  c = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  ref = np.mean(np.sum(-(c * np.log(p) + (1 - c) * np.log(1 - p)), axis=-1))
  np.testing.assert_allclose(stargan.classification_loss(jnp.asarray(logits), jnp.asarray(c)),
                             ref, rtol=1e-6)
  big = jnp.array([[80.0, -80.0]])  # stable where sigmoid saturates
  np.testing.assert_allclose(stargan.classification_loss(big, jnp.array([[1.0, 0.0]])), 0.0,
                             atol=1e-6)


class _DomainPlaneG(nn.Module):
  """Stub G(x, c) = c_0 everywhere (ignores x): its output names the domain it was given."""

  @nn.compact
  def __call__(self, x, c, *, train=False):
    bias = self.param("bias", nn.initializers.zeros, ())
    return jnp.broadcast_to(c[:, :1, None, None], x.shape) + bias


class _ZeroD(nn.Module):
  k: int

  @nn.compact
  def __call__(self, x, *, train=False):
    w = self.param("w", nn.initializers.zeros, ())
    return jnp.zeros(x.shape[:3]) + w, jnp.zeros((x.shape[0], self.k)) + w


def _stub_method(**kw):
  tx = optax.adam(1e-3)
  return stargan.StarGAN(generator=_DomainPlaneG(), discriminator=_ZeroD(3), tx_g=tx, tx_d=tx,
                         attribute_names=("inverted", "thick", "rot90"), **kw)


def test_reconstruction_goes_back_to_the_original_domain():
  method = _stub_method()
  x = jnp.zeros((4, 4, 4, 1))
  state = method.init(jax.random.key(0), {"image": x})
  c_org, c_trg = jnp.ones((4, 3)), jnp.zeros((4, 3))
  # G(G(x, c_trg), c_org) = 1 everywhere: |x - 1| = 1; with c_trg it would be 0.
  total, (_, m) = method.generator_loss(state.params, state.model_state, x, c_org, c_trg)
  np.testing.assert_allclose(m["g_rec"], 1.0)
  # D's logits are 0: adversarial 0, each attribute's BCE log 2
  np.testing.assert_allclose(m["g_cls"], 3 * np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(total, 3 * np.log(2.0) + 10.0 * 1.0, rtol=1e-6)
  _, (_, m) = method.generator_loss(state.params, state.model_state, x, c_trg, c_org)
  np.testing.assert_allclose(m["g_rec"], 0.0)


def test_identity_term_translates_to_the_source_domain():
  x = jnp.zeros((4, 4, 4, 1))
  c_org, c_trg = jnp.ones((4, 3)), jnp.zeros((4, 3))
  paper = _stub_method()
  state = paper.init(jax.random.key(0), {"image": x})
  base, (_, m) = paper.generator_loss(state.params, state.model_state, x, c_org, c_trg)
  assert "g_id" not in m  # lambda_id = 0 (the paper): no identity term, no extra G pass
  method = _stub_method(lambda_id=5.0)
  total, (_, m) = method.generator_loss(state.params, state.model_state, x, c_org, c_trg)
  # G(x, c_org) = c_org_0 = 1 everywhere: E|x - 1| = 1; with c_trg (0) it would be 0.
  np.testing.assert_allclose(m["g_id"], 1.0)
  np.testing.assert_allclose(total, base + 5.0 * 1.0, rtol=1e-6)
  _, (_, m) = method.generator_loss(state.params, state.model_state, x, c_trg, c_org)
  np.testing.assert_allclose(m["g_id"], 0.0)
  with pytest.raises(ValueError, match="lambda_id"):
    _stub_method(lambda_id=-1.0)


def test_critic_loss_by_hand():
  method = _stub_method()
  x = jnp.zeros((2, 4, 4, 1))
  state = method.init(jax.random.key(0), {"image": x})
  c = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
  total, (_, m) = method.critic_loss(state.params, state.model_state, x, c, x)
  np.testing.assert_allclose(m["d_cls"], 3 * np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(total, 3 * np.log(2.0), rtol=1e-6)


def test_train_step_updates_both_networks_with_the_penalty(smoke):
  config, method, batch, state = smoke
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert int(new.step) == 1
  for net in ("generator", "discriminator"):
    before, after = jax.tree.leaves(state.params[net]), jax.tree.leaves(new.params[net])
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), net
  for key in ("d_loss", "d_cls", "gp", "g_loss", "g_cls", "g_rec", "wasserstein"):
    assert np.isfinite(float(metrics[key])), key
  assert float(metrics["gp"]) > 0.0  # the WGAN-GP regularizer ran on the critic
  ema, g = jax.tree.leaves(new.emas["ema"]["generator"]), jax.tree.leaves(new.params["generator"])
  assert len(ema) == len(g)


def test_no_penalty_is_refused():
  with pytest.raises(ValueError, match="lambda_gp"):
    _stub_method(lambda_gp=0.0)


def test_translate_and_translation_inputs(smoke):
  config, method, batch, state = smoke
  d = len(method.translation_names)
  out = jax.jit(method.translate)(state, jax.random.key(2), batch["image"][:3])
  assert out.shape == (3, d, 8, 8, 1) and np.isfinite(out).all()
  inputs = method.translation_inputs(batch)
  np.testing.assert_array_equal(inputs["source"], batch["image"])
  np.testing.assert_array_equal(inputs["label"], batch["label"])
  assert inputs["target"].shape == (batch["image"].shape[0], d, 8, 8, 1)
  names = method.translation_names
  np.testing.assert_array_equal(inputs["target"][:, names.index("clean")], batch["image"])
  np.testing.assert_array_equal(inputs["target"][:, names.index("inverted")], -batch["image"])
  np.testing.assert_array_equal(inputs["target"][:, names.index("inverted+rot90")],
                                -np.rot90(np.asarray(batch["image"]), 1, axes=(1, 2)))


def test_evaluate_metrics(smoke):
  config, method, batch, state = smoke
  m = jax.jit(method.evaluate)(state, batch, jax.random.key(3))
  for key in ("l1", "psnr", "copy_l1", "rec_l1", "cls_acc", "loss", "l1_inverted+thick"):
    assert np.isfinite(float(m[key])), key
  assert 0.0 <= float(m["l1"]) <= 1.0


def test_real_domains_synthetic_and_attributes(smoke):
  config, method, batch, _ = smoke
  x, c = method.real_domains(batch, jax.random.key(4))
  np.testing.assert_array_equal(x, domains.apply_domain(batch["image"], c, method.attribute_names))
  assert set(np.unique(c)) <= {0.0, 1.0} and c.shape == (batch["image"].shape[0], 3)


def test_target_table_with_exclusive_hair():
  table = stargan.target_table(("black", "blond", "brown", "male", "young"), ((0, 1, 2),))
  assert table.shape == (12, 5)
  np.testing.assert_array_equal(table[:, :3].sum(-1), 1.0)
  with pytest.raises(ValueError, match="disjoint"):
    stargan.target_table(("a", "b"), ((0, 1), (1,)))


def test_celeba_config_on_a_fake_batch():
  config = load_experiment("translation/stargan_celeba")
  assert config.gan.attribute_indices == (8, 9, 11, 20, 39)
  assert (config.train.num_steps * config.gan.n_critic, config.data.image_size,
          config.data.batch_size // config.gan.n_critic) == (200_000, 128, 16)
  method = load_method(config)
  assert method.discriminator.n_layers == 6 and method.generator.n_blocks == 6
  assert len(method.translation_names) == 12 and "blond_hair+male+young" in method.translation_names
  config = load_experiment("translation/stargan_celeba", "smoke")
  method = load_method(config)
  rng = np.random.default_rng(0)
  b, s = config.data.batch_size, config.data.image_size
  attrs = rng.integers(0, 2, (b, 40)).astype(np.float32)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (b, s, s, 3)), jnp.float32),
           "attributes": jnp.asarray(attrs)}
  _, c = method.real_domains(batch, jax.random.key(0))
  np.testing.assert_array_equal(c, attrs[:, [8, 9, 11, 20, 39]])
  state = jax.jit(method.init)(jax.random.key(0), batch)
  state, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert "target" not in method.translation_inputs(batch)
  assert method.translate(state, jax.random.key(0), batch["image"][:2]).shape == (2, 12, s, s, 3)
  with pytest.raises(ValueError, match="attributes"):
    method.real_domains({"image": batch["image"]}, jax.random.key(0))


@pytest.mark.slow  # ~55 s on 2 cores: the default suite stays under 20 minutes
def test_loop_train_and_resume(tmp_path):
  config = load_experiment("translation/stargan_digits", "smoke")
  workdir = str(tmp_path)
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 4 and checkpoint_steps(workdir) == [4]
  config.train.num_steps = 6
  config.train.checkpoint_every = 2
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 6 and 6 in checkpoint_steps(workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert "stargan_ema" in paths["npz"]
  data = np.load(paths["npz"])
  names = tuple(data["names"])
  assert names == load_method(config).translation_names
  assert data["images"].shape == (config.sample.num, 8, 8, 8, 1)
  np.testing.assert_array_equal(data["target"][:, names.index("clean")], data["source"])
  config.eval.num_samples = 40
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  for key in ("l1", "translation/l1", "translation/psnr", "translation/content",
              "translation/domain_success"):
    assert np.isfinite(result[key]), key
