"""Each GAN family through the whole loop on its smoke config, and the adversarial step's
contracts: who updates what, clipping, the penalty, the batch split, conditioning."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgen.run
from jgen.gan import adversarial, updates
from jgen.train import Checkpointer, load_method
from jgen.train.method import Conditional
from tests.conftest import checkpoint_steps, load_experiment

NAMES = ("dcgan_digits", "cgan_digits", "wgan_digits", "wgan_gp_digits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Smoke runs, each trained once on first use: name -> (config, workdir, final state)."""
  cache = {}

  def get(name):
    if name not in cache:
      config = load_experiment(f"gan/{name}", "smoke")
      workdir = str(tmp_path_factory.mktemp(name))
      cache[name] = (config, workdir, jgen.run.main(config, workdir=workdir, mode="train"))
    return cache[name]

  return get


@pytest.mark.parametrize("name", NAMES)
def test_train_then_sample(runs, name):
  config, workdir, state = runs(name)
  assert int(state.step) == config.train.num_steps
  assert checkpoint_steps(workdir) == [4]
  assert set(state.params) == {"generator", "discriminator"}
  assert set(state.emas["ema"]) == {"generator"}  # only the generator is averaged
  assert set(state.ema_params) == {"generator", "discriminator"}
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and images.dtype == np.uint8
  assert os.path.exists(paths["png"]) and images.std() > 0
  if name == "wgan_digits":  # every critic weight stays clipped
    for leaf in jax.tree.leaves(state.params["discriminator"]):
      assert float(jnp.max(jnp.abs(leaf))) <= config.gan.clip + 1e-7


def test_conditional_samples_carry_their_labels(runs):
  config, workdir, _ = runs("cgan_digits")
  data = np.load(jgen.run.main(config, workdir=workdir, mode="sample")["npz"])
  np.testing.assert_array_equal(data["labels"], np.arange(config.sample.num) % 10)
  config.sample.labels = "3,5"
  data = np.load(jgen.run.main(config, workdir=workdir, mode="sample")["npz"])
  np.testing.assert_array_equal(data["labels"], np.resize([3, 5], config.sample.num))
  unconditional, workdir, _ = runs("dcgan_digits")
  data = np.load(jgen.run.main(unconditional, workdir=workdir, mode="sample")["npz"])
  assert "labels" not in data


def test_batch_norm_statistics_are_checkpointed(runs):
  config, workdir, state = runs("dcgan_digits")
  stats = state.model_state["generator"]["batch_stats"]
  assert not np.allclose(jax.tree.leaves(stats)[0], 0.0) or not np.allclose(
      jax.tree.leaves(stats)[1], 1.0)
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    restored = ckpt.restore(state.checkpoint_items())
  for a, b in zip(jax.tree.leaves(restored["model_state"]), jax.tree.leaves(state.model_state)):
    np.testing.assert_array_equal(a, b)


def _tiny(name, **overrides):
  config = load_experiment(f"gan/{name}", "smoke")
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, s = config.data.batch_size, config.data.image_size
  return {"image": jnp.asarray(rng.uniform(-1, 1, (b, s, s, 1)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 10, b), jnp.int32)}


def _step(method, config, seed=0):
  batch = _batch(config, seed)
  state = method.init(jax.random.key(seed), batch)
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(seed + 1))
  return state, new, metrics


def _changed(a, b):
  return [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


@pytest.mark.parametrize("frozen", ["generator", "discriminator"])
def test_each_update_touches_only_its_own_network(frozen):
  """With one network's learning rate at 0 its parameters stay bitwise equal; every kernel of
  the other moves. (WGAN-GP: no batch norm in D, a gradient penalty and 5 critic steps; the
  critic's output bias gets no gradient from the Wasserstein loss, mean(fake) - mean(real).)"""
  config = _tiny("wgan_gp_digits")
  if frozen == "generator":  # optim_d follows optim unless set on its own
    config.optim.lr, config.optim_d.lr = 0.0, 1e-4
  else:
    config.optim_d.lr = 0.0
  method = load_method(config)
  state, new, metrics = _step(method, config)
  other = "discriminator" if frozen == "generator" else "generator"
  assert not any(_changed(state.params[frozen], new.params[frozen]))
  kernels = lambda p: {jax.tree_util.keystr(k): v
                       for k, v in jax.tree_util.tree_flatten_with_path(p)[0]
                       if "kernel" in jax.tree_util.keystr(k)}
  assert kernels(state.params[other]) and all(_changed(kernels(state.params[other]),
                                                       kernels(new.params[other])))
  assert int(new.step) == 1 and np.isfinite(metrics["gp"]) and metrics["gp"] > 0
  # Adam's step count: 5 critic updates, 1 generator update.
  count = lambda s: int(jax.tree.leaves(s, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState))[0].count)
  assert count(new.opt_state["discriminator"]) == 5 and count(new.opt_state["generator"]) == 1


def test_each_update_leaves_the_other_network_alone():
  """discriminator_update changes only D (and its optimizer state); generator_update only G,
  its optimizer state, its EMA and the step; the critic sees the fakes as constants."""
  config = _tiny("dcgan_digits")
  method = load_method(config)
  batch = _batch(config)
  state = method.init(jax.random.key(0), batch)
  z = jax.random.normal(jax.random.key(1), (4, method.z_dim))
  fake, _ = method.generate(state.params["generator"], state.model_state["generator"], z)
  d_new, _ = updates.discriminator_update(state, method.d_apply, batch["image"][:4], fake,
                                          rng=jax.random.key(2), loss=method.loss)
  assert all(_changed(state.params["discriminator"], d_new.params["discriminator"]))
  for tree in ("params", "opt_state", "emas"):
    assert not any(_changed(getattr(state, tree)["generator"] if tree != "emas"
                            else state.emas["ema"], getattr(d_new, tree)["generator"]
                            if tree != "emas" else d_new.emas["ema"]))
  assert int(d_new.step) == 0
  g_new, m = updates.generator_update(state, method.g_apply, method.d_apply, z,
                                      rng=jax.random.key(3), loss=method.loss)
  assert not any(_changed(state.params["discriminator"], g_new.params["discriminator"]))
  assert not any(_changed(state.opt_state["discriminator"], g_new.opt_state["discriminator"]))
  assert all(_changed(state.params["generator"], g_new.params["generator"]))
  assert any(_changed(state.emas["ema"], g_new.emas["ema"]))
  assert int(g_new.step) == 1 and float(m["g_grad_norm"]) > 0


def test_optim_d_follows_optim_unless_set():
  config = _tiny("wgan_gp_digits")
  assert adversarial.discriminator_optim(config) == {
      k: v for k, v in config.optim.items() if k != "rules"}
  config.optim.lr = 3e-4
  config.optim_d.b2 = 0.99
  d = adversarial.discriminator_optim(config)
  assert d["lr"] == 3e-4 and d["b2"] == 0.99 and config.optim.b2 == 0.9
  assert d["name"] == "adam" and d["b1"] == 0.0


def test_wgan_clips_and_uses_rmsprop():
  config = _tiny("wgan_digits")
  method = load_method(config)
  _, new, _ = _step(method, config)
  leaves = jax.tree.leaves(new.params["discriminator"])
  assert max(float(jnp.max(jnp.abs(x))) for x in leaves) <= 0.01
  assert any(float(jnp.max(jnp.abs(x))) == pytest.approx(0.01) for x in leaves)
  assert method.n_critic == 5 and method.loss == "wasserstein"


def test_split_critic_batches():
  x = jnp.arange(12)
  chunks = adversarial.split_critic_batches(x, 3)
  np.testing.assert_array_equal(chunks, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
  with pytest.raises(ValueError, match="multiple of n_critic"):
    adversarial.split_critic_batches(jnp.arange(10), 3)


def test_cgan_samples_follow_labels():
  config = _tiny("cgan_digits")
  method = load_method(config)
  state = method.init(jax.random.key(0), _batch(config))
  np.testing.assert_array_equal(method.sample_labels(12), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
  rng = jax.random.key(3)
  a = method.sample_with_labels(state, rng, jnp.zeros(4, jnp.int32), 4)
  b = method.sample_with_labels(state, rng, jnp.full(4, 7, jnp.int32), 4)
  assert a.shape == (4, 8, 8, 1) and not np.allclose(a, b)
  assert method.num_classes == 10 and isinstance(method, Conditional)
  c = method.sample_conditional(state, rng, {"label": jnp.full(4, 7, jnp.int32)}, 4)
  np.testing.assert_array_equal(b, c)
  assert not isinstance(load_method(_tiny("dcgan_digits")), Conditional)


def test_bad_configs():
  with pytest.raises(ValueError, match="batch norm"):
    load_method(_tiny("wgan_gp_digits", **{"model.d_norm": "batch"}))
  with pytest.raises(ValueError, match="num_classes"):
    load_method(_tiny("cgan_digits", **{"gan.num_classes": 0}))
  with pytest.raises(ValueError, match="Wasserstein"):
    load_method(_tiny("dcgan_digits", **{"gan.loss": "wasserstein"}))
  with pytest.raises(ValueError, match="clip"):
    load_method(_tiny("wgan_digits", **{"gan.clip": 0.0}))
  with pytest.raises(ValueError, match="architecture"):
    load_method(_tiny("dcgan_digits", **{"model.arch": "vit"}))


@pytest.mark.parametrize("name", ["gan/mnist", "gan/cifar"])
@pytest.mark.parametrize("method", ["dcgan", "cgan", "wgan", "wgan_gp"])
def test_full_size_configs_build(name, method):
  config = load_experiment(name, f"method={method}")
  m = load_method(config)
  size, ch = config.data.image_size, config.data.channels
  batch = {"image": jax.ShapeDtypeStruct((config.data.batch_size, size, size, ch), jnp.float32),
           "label": jax.ShapeDtypeStruct((config.data.batch_size,), jnp.int32)}
  state = jax.eval_shape(m.init, jax.random.key(0), batch)
  _, metrics = jax.eval_shape(m.train_step, state, batch, jax.random.key(1))
  assert "g_loss" in metrics
  images = jax.eval_shape(lambda s, r: m.sample(s, r, 8), state, jax.random.key(1))
  assert images.shape == (8, size, size, ch)
