"""CycleGAN: its losses against hand-computed values, the learning-rate schedule, one jitted step
(all four networks move, the history buffers fill), evaluate / translate, and the whole loop
on the smoke config with a resume."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.ops.image import psnr
from jgen.gan import cyclegan
from jgen.train import Checkpointer, load_method
from jgen.train.method import Evaluates, Translates
from tests.conftest import checkpoint_steps, load_experiment

NETS = ("g_ab", "g_ba", "d_a", "d_b")


def _batch(config, n=None, seed=0):
  n = n or config.data.batch_size
  s, c = config.data.image_size, config.data.channels
  ka, kb = jax.random.split(jax.random.key(seed))
  return {"image_a": jax.random.uniform(ka, (n, s, s, c), minval=-1, maxval=1),
          "image_b": jax.random.uniform(kb, (n, s, s, c), minval=-1, maxval=1)}


@pytest.fixture(scope="module")
def smoke():
  config = load_experiment("translation/cyclegan_digits", "smoke")
  method = load_method(config)
  batch = _batch(config)
  state = jax.jit(method.init)(jax.random.key(0), batch)
  return config, method, batch, state


def test_cycle_and_identity_losses_by_hand():
  a = jnp.array([[0.0, 1.0], [-1.0, 0.5]])
  rec_a = jnp.array([[0.5, 1.0], [-1.0, 0.0]])     # |diff| = .5, 0, 0, .5 -> mean .25
  b = jnp.array([1.0, -1.0, 0.0, 0.0])
  rec_b = jnp.array([0.0, -1.0, 0.0, 2.0])          # 1, 0, 0, 2 -> mean .75
  np.testing.assert_allclose(cyclegan.l1(rec_a, a), 0.25)
  np.testing.assert_allclose(cyclegan.cycle_loss(a, rec_a, b, rec_b), 1.0)
  np.testing.assert_allclose(cyclegan.identity_loss(a, a + 0.1, b, b - 0.3), 0.4, rtol=1e-6)
  # The reference's criteria: LSGAN G = mean((s - 1)^2), D = (mean((r - 1)^2) + mean(f^2)) / 2.
  d_loss, g_loss = cyclegan.CRITERIA["least_squares"]
  real, fake = jnp.array([1.0, 0.0]), jnp.array([0.5, -1.0])
  np.testing.assert_allclose(g_loss(fake), (0.25 + 4.0) / 2)
  np.testing.assert_allclose(d_loss(real, fake), ((0.0 + 1.0) / 2 + (0.25 + 1.0) / 2) / 2)
  bce_d, bce_g = cyclegan.CRITERIA["non_saturating"]
  sp = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(bce_d(real, fake),
                             0.5 * (np.mean(sp(-np.asarray(real))) + np.mean(sp(np.asarray(fake)))),
                             rtol=1e-6)
  np.testing.assert_allclose(bce_g(fake), np.mean(sp(-np.asarray(fake))), rtol=1e-6)


def test_generator_objective_is_the_weighted_sum(smoke):
  config, method, batch, state = smoke
  loss, (_, m) = method.generator_loss_fn(batch["image_a"], batch["image_b"])(
      state.params, state.model_state, jax.random.key(0))
  lam, idt = config.gan.cycle_weight, config.gan.identity_weight
  expect = (m["g_adv_ab"] + m["g_adv_ba"] + lam * (m["cycle_a"] + m["cycle_b"])
            + lam * idt * (m["idt_a"] + m["idt_b"]))
  np.testing.assert_allclose(loss, expect, rtol=1e-6)
  fns = method.apply_fns()
  g = lambda k, x: fns[k](state.params[k], state.model_state[k], x, train=True)[0]
  a, b = batch["image_a"], batch["image_b"]
  np.testing.assert_allclose(m["cycle_a"], jnp.mean(jnp.abs(g("g_ba", g("g_ab", a)) - a)),
                             rtol=1e-5)
  np.testing.assert_allclose(m["idt_b"], jnp.mean(jnp.abs(g("g_ab", b) - b)), rtol=1e-5)
  np.testing.assert_allclose(m["g_adv_ab"], jnp.mean(jnp.square(
      fns["d_b"](state.params["d_b"], {}, g("g_ab", a), train=True)[0] - 1.0)), rtol=1e-5)


def test_one_jitted_step_moves_all_four_networks(smoke):
  config, method, batch, state = smoke
  assert set(state.params) == set(NETS) and not state.emas  # no EMA by default
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert int(new.step) == 1
  for k in NETS:
    moved = [not np.allclose(x, y) for x, y in zip(jax.tree.leaves(state.params[k]),
                                                    jax.tree.leaves(new.params[k]))]
    assert any(moved), k
  for k in ("g_loss", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a_loss", "d_b_loss",
            "g_grad_norm", "d_a_grad_norm", "loss"):
    assert np.isfinite(float(metrics[k])), k
  assert all(v.shape == () for v in metrics.values())  # the fakes are not in the metrics
  # The history buffers received this step's fakes (batch 4 < size 3? then fills up).
  size = config.gan.history_size
  for k in ("fake_a", "fake_b"):
    h = new.model_state["history"][k]
    assert int(h["count"]) == min(size, config.data.batch_size)
    assert float(jnp.abs(h["images"]).sum()) > 0


def test_history_buffer_is_in_the_checkpoint(smoke, tmp_path):
  config, method, batch, state = smoke
  state, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  items = state.checkpoint_items()
  assert set(items["model_state"]["history"]) == {"fake_a", "fake_b"}
  with Checkpointer(str(tmp_path / "ckpt"), async_save=False) as ckpt:
    ckpt.save(1, items)
    restored = ckpt.restore(items)
  for k in ("fake_a", "fake_b"):
    got = restored["model_state"]["history"][k]
    np.testing.assert_array_equal(got["images"], state.model_state["history"][k]["images"])
    assert int(got["count"]) == int(state.model_state["history"][k]["count"])


def test_history_off_and_ema_on(smoke):
  config, _, batch, _ = smoke
  config = config.copy_and_resolve_references()
  config.gan.history_size = 0
  config.train.ema_decay = 0.9
  method = load_method(config)
  state = method.init(jax.random.key(0), batch)
  assert "history" not in state.model_state
  assert set(state.emas["ema"]) == {"g_ab", "g_ba"}
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert not np.allclose(jax.tree.leaves(new.emas["ema"]["g_ab"])[0],
                         jax.tree.leaves(state.emas["ema"]["g_ab"])[0])


def test_identity_needs_equal_channels(smoke):
  config, _, _, _ = smoke
  method = load_method(config)
  bad = {"image_a": jnp.zeros((2, 8, 8, 1)), "image_b": jnp.zeros((2, 8, 8, 3))}
  with pytest.raises(ValueError, match="identity_weight=0"):
    method.init(jax.random.key(0), bad)
  gray_to_rgb = dataclasses.replace(
      method, g_ab=method.g_ab.clone(out_channels=3), identity_weight=0.0)
  state = jax.eval_shape(gray_to_rgb.init, jax.random.key(0), bad)  # fine without identity
  assert set(state.params) == set(NETS)
  with pytest.raises(ValueError, match="g_ba makes 1-channel images"):
    dataclasses.replace(gray_to_rgb, g_ab=method.g_ab).init(
        jax.random.key(0), {"image_a": bad["image_b"], "image_b": bad["image_a"]})
  with pytest.raises(ValueError, match="unknown loss"):
    cyclegan.CycleGAN(method.g_ab, method.g_ba, method.d_a, method.d_b, method.tx_g,
                      method.tx_d, loss="hinge")
  with pytest.raises(ValueError, match="direction"):
    cyclegan.CycleGAN(method.g_ab, method.g_ba, method.d_a, method.d_b, method.tx_g,
                      method.tx_d, direction="AB")


def test_evaluate_and_translates(smoke):
  config, method, batch, state = smoke
  assert isinstance(method, Translates) and isinstance(method, Evaluates)
  assert method.translation_names == ("B",)
  out = jax.jit(method.evaluate)(state, batch, jax.random.key(0))
  assert set(out) == {"cycle_a", "cycle_b"}
  paired = {**batch, "paired": jnp.ones((batch["image_a"].shape[0],)),
            "label": jnp.arange(batch["image_a"].shape[0])}
  out = jax.jit(method.evaluate)(state, paired, jax.random.key(0))
  assert set(out) == {"cycle_a", "cycle_b", "l1_ab", "psnr_ab", "l1_ba", "psnr_ba"}
  fake_b = method.translate(state, jax.random.key(0), batch["image_a"])
  assert fake_b.shape == (batch["image_a"].shape[0], 1, *batch["image_b"].shape[1:])
  np.testing.assert_allclose(out["l1_ab"], jnp.mean(jnp.abs(fake_b[:, 0] - batch["image_b"])),
                             rtol=1e-5)
  mse = jnp.mean(jnp.square((fake_b[:, 0] - batch["image_b"]) / 2), axis=(1, 2, 3))
  np.testing.assert_allclose(out["psnr_ab"], jnp.mean(-10 * jnp.log10(mse)), rtol=1e-5)
  inputs = method.translation_inputs(paired)
  assert inputs["target"].shape == (batch["image_b"].shape[0], 1, *batch["image_b"].shape[1:])
  np.testing.assert_array_equal(inputs["source"], batch["image_a"])
  np.testing.assert_array_equal(inputs["label"], paired["label"])
  unpaired = method.translation_inputs({**batch, "label_a": jnp.arange(4), "label_b": jnp.ones(4)})
  assert set(unpaired) == {"source", "label"} and unpaired["label"][1] == 1
  config = config.copy_and_resolve_references()
  config.sample.direction = "BtoA"
  back = load_method(config)
  assert back.translation_names == ("A",)
  np.testing.assert_array_equal(back.translation_inputs(paired)["target"][:, 0],
                                batch["image_a"])
  np.testing.assert_allclose(back.translate(state, jax.random.key(0), batch["image_b"])[:, 0],
                             method.translate_with(state.params, state.model_state,
                                                   batch["image_b"], direction="BtoA"))


def test_psnr_closed_form():
  x = jnp.zeros((1, 2, 2, 1))
  y = jnp.full((1, 2, 2, 1), 0.2)          # on [0, 1] the error is 0.1 -> MSE 0.01 -> 20 dB
  np.testing.assert_allclose(psnr(x, y), [20.0], rtol=1e-5)
  np.testing.assert_allclose(psnr(y, y), [100.0])


@pytest.mark.slow  # ~70 s on 2 cores: the default suite stays under 20 minutes
def test_loop_trains_resumes_samples_and_evaluates(tmp_path):
  config = load_experiment("translation/cyclegan_digits", "smoke")
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 4 and checkpoint_steps(workdir) == [4]
  assert int(state.model_state["history"]["fake_a"]["count"]) == config.gan.history_size
  config.train.num_steps = 6
  resumed = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(resumed.step) == 6 and checkpoint_steps(workdir) == [4, 6]
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  data = np.load(paths["npz"])
  assert data["images"].shape == (config.sample.num, 1, 8, 8, 1)
  assert data["target"].shape == data["images"].shape and "label" in data
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert np.isfinite(result["l1_ab"]) and np.isfinite(result["psnr_ab"])


@pytest.mark.parametrize("name", ["translation/cyclegan_digits",
                                  "translation/cyclegan_mnist_digits",
                                  "translation/cyclegan_horse2zebra"])
def test_configs_build(name):
  for arg in (None, "smoke"):
    config = load_experiment(name, arg)
    method = load_method(config)
    assert isinstance(method, cyclegan.CycleGAN) and config.method == "gan.cyclegan"
    assert config.train.num_steps >= 4
  smoke = load_experiment(name, "smoke")
  batch = _batch(smoke)
  assert jax.eval_shape(load_method(smoke).init, jax.random.key(0), batch).step.shape == ()
  with pytest.raises(ValueError, match="unknown config argument"):
    load_experiment(name, "huge")


def test_horse2zebra_has_the_papers_settings():
  c = load_experiment("translation/cyclegan_horse2zebra")
  assert (c.data.image_size, c.data.batch_size, c.model.n_blocks, c.model.d_layers) == (
      256, 1, 9, 3)
  assert c.train.num_steps == 200 * 1067 and c.optim.decay_from == 0.5  # 100 + 100 epochs
  assert (c.optim.lr, c.optim.b1, c.optim.b2, c.optim.schedule) == (
      2e-4, 0.5, 0.999, "linear")
  assert (c.gan.loss, c.gan.cycle_weight, c.gan.identity_weight, c.gan.history_size) == (
      "least_squares", 10.0, 0.5, 50)
  assert c.model.g_norm == c.model.d_norm == "instance"
