"""pix2pix: the losses against hand computations, D's view of the pair, translate/evaluate, and
a train + resume run of the loop on edges -> digits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgen.run
from jgen import data as jdata
from jgen.gan import pix2pix
from jgen.nn.translation import PatchDiscriminator, UNetGenerator
from jgen.train import load_method
from jgen.train.method import Evaluates, Translates
from tests.conftest import checkpoint_steps, load_experiment


def _softplus(x):
  return np.logaddexp(0.0, x)


@pytest.fixture(scope="module")
def batch():
  src = jdata.load_source("derived:edges:digits", split="train", image_size=16, channels=1,
                          resize=True)
  return {k: jnp.asarray(v) for k, v in jdata.read_batch(src, range(8)).items()}


def _method(tx_d=None, **kw):
  return pix2pix.Pix2Pix(
      generator=UNetGenerator(kw.pop("out_channels", 1), ngf=4, num_downs=4),
      discriminator=PatchDiscriminator(ndf=4, n_layers=2),
      tx_g=optax.adam(2e-3, b1=0.5), tx_d=tx_d or optax.adam(2e-3, b1=0.5), **kw)


def test_generator_loss_by_hand():
  logits = jnp.array([[[0.5, -1.0], [2.0, 0.0]]])
  fake = jnp.array([[[[0.2], [-0.4]], [[1.0], [0.0]]]])
  target = jnp.array([[[[0.0], [0.0]], [[0.5], [-1.0]]]])
  total, m = pix2pix.pix2pix_generator_loss(logits, fake, target, l1_weight=100.0)
  adv = np.mean(_softplus(-np.array([0.5, -1.0, 2.0, 0.0])))   # -log sigmoid(D(s, G(s)))
  l1 = np.mean([0.2, 0.4, 0.5, 1.0])
  np.testing.assert_allclose([m["g_adv"], m["l1"], total], [adv, l1, adv + 100 * l1],
                             rtol=1e-6)


def test_train_step_losses_are_the_hand_computed_ones(batch):
  """With D's learning rate 0, the step's G loss is L_adv(D(s, G(s))) + 100 |G(s) - t| of the
  initial networks (the dropout key fold_in(rng, 0)), and its D loss half the BCE of
  D(s, t) vs D(s, G(s))."""
  method = _method(tx_d=optax.sgd(0.0))
  state = method.init(jax.random.key(0), batch)
  rng = jax.random.key(5)
  _, metrics = jax.jit(method.train_step)(state, batch, rng)

  s, t = batch["source"], batch["target"]
  g_vars = {"params": state.params["generator"], **state.model_state["generator"]}
  fake, _ = method.generator.apply(g_vars, s, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": jax.random.fold_in(rng, 0)})
  d_vars = {"params": state.params["discriminator"], **state.model_state["discriminator"]}
  d = lambda y: np.asarray(method.discriminator.apply(
      d_vars, jnp.concatenate([s, y], -1), train=True, mutable=["batch_stats"])[0])
  real_logits, fake_logits = d(t), d(fake)
  d_loss = 0.5 * (np.mean(_softplus(-real_logits)) + np.mean(_softplus(fake_logits)))
  adv = np.mean(_softplus(-fake_logits))
  l1 = np.mean(np.abs(np.asarray(fake) - np.asarray(t)))
  np.testing.assert_allclose(float(metrics["d_loss"]), d_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["g_adv"]), adv, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["l1"]), l1, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["g_loss"]), adv + 100 * l1, rtol=1e-5)


def test_discriminator_sees_the_concatenated_pair(batch):
  """D's input has the source's and the target's channels (1 + 3 here)."""
  method = _method(out_channels=3)
  color = {**batch, "target": jnp.repeat(batch["target"], 3, axis=-1)}
  state = method.init(jax.random.key(0), color)
  assert state.params["discriminator"]["Conv_0"]["kernel"].shape[2] == 1 + 3
  assert state.params["generator"]["down_0"]["kernel"].shape[2] == 1
  assert state.params["generator"]["up_0"]["kernel"].shape[-1] == 3
  _, metrics = jax.jit(method.train_step)(state, color, jax.random.key(1))
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_bad_batches_and_fields_are_explained(batch):
  method = _method()
  with pytest.raises(ValueError, match="needs fields 'source' and 'target'"):
    method.init(jax.random.key(0), {"image": batch["target"]})
  with pytest.raises(ValueError, match="set data.channels"):
    _method(out_channels=3).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="gan.loss"):
    _method(loss="wasserstein")


def test_translate_evaluate_and_inputs(batch):
  method = _method()
  assert isinstance(method, Translates) and isinstance(method, Evaluates)
  assert method.translation_names == ("target",)
  state = method.init(jax.random.key(0), batch)
  translate = jax.jit(method.translate)
  a, a2, b = (translate(state, jax.random.key(k), batch["source"]) for k in (1, 1, 2))
  assert a.shape == (8, 1, 16, 16, 1)
  np.testing.assert_array_equal(a, a2)                   # the rng is the dropout key
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4           # dropout is on at test time

  m = jax.jit(method.evaluate)(state, batch, jax.random.key(1))
  y, t = (np.asarray(a[:, 0], np.float64) + 1) / 2, (np.asarray(batch["target"]) + 1) / 2
  mse = ((y - t) ** 2).reshape(8, -1).mean(-1)
  np.testing.assert_allclose(float(m["l1"]), np.abs(y - t).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(m["psnr"]), np.mean(10 * np.log10(1 / mse)), rtol=1e-5)

  inputs = method.translation_inputs(batch)
  assert set(inputs) == {"source", "target", "label"}
  assert inputs["target"].shape == (8, 1, 16, 16, 1)
  assert set(method.translation_inputs({k: batch[k] for k in ("source", "target")})) == {
      "source", "target"}


def test_test_batch_stats_normalizes_each_image_on_its_own(batch):
  """The paper's test protocol: an image's translation does not depend on its batch-mates."""
  method = _method(test_batch_stats=True)
  state, _ = jax.jit(method.train_step)(method.init(jax.random.key(0), batch), batch,
                                        jax.random.key(1))
  s = batch["source"]
  one = jax.jit(method.translate)(state, jax.random.key(3), s[:4])
  other = jax.jit(method.translate)(state, jax.random.key(3),
                                    jnp.concatenate([s[:1], s[5:8]]))
  np.testing.assert_allclose(one[0], other[0], atol=1e-6)
  running = jax.jit(_method().translate)(state, jax.random.key(3), s[:4])
  assert float(jnp.max(jnp.abs(running - one))) > 1e-4  # running averages differ


def test_jitted_steps_fit_the_pairs_and_average_only_the_generator(batch):
  method = _method(ema_decay=0.9)
  state = method.init(jax.random.key(0), batch)
  assert set(state.emas["ema"]) == {"generator"}
  step = jax.jit(method.train_step)
  first = None
  for i in range(25):
    state, metrics = step(state, batch, jax.random.key(i))
    first = first if first is not None else float(metrics["l1"])
  assert int(state.step) == 25
  assert float(metrics["l1"]) < 0.8 * first
  assert method.sample_tag == "pix2pix_ema"


def test_config_builds_the_paper_objective():
  c = load_experiment("translation/pix2pix_digits")
  method = load_method(c)
  assert isinstance(method, pix2pix.Pix2Pix)
  assert (method.l1_weight, method.loss, method.ema_decay) == (100.0, "non_saturating", 0.0)
  assert (method.generator.num_downs, method.discriminator.n_layers) == (4, 2)
  for name, steps, source in (("translation/pix2pix_facades", 80000, "paired_btoa:"),
                              ("translation/pix2pix_maps", 219200, "paired:")):
    p = load_experiment(name)
    assert (p.train.num_steps, p.data.batch_size, p.data.image_size) == (steps, 1, 256)
    assert p.data.source.startswith(source)
    assert (p.model.num_downs, p.model.n_layers, p.gan.l1_weight) == (8, 3, 100.0)
    load_method(p)
  colorize = load_method(load_experiment("translation/pix2pix_cifar_colorize"))
  assert colorize.generator.num_downs == 5 and colorize.generator.out_channels == 3


@pytest.mark.slow  # ~80 s on 2 cores: the default suite stays under 20 minutes
def test_loop_trains_resumes_samples_and_evaluates(tmp_path):
  config = load_experiment("translation/pix2pix_digits", "smoke")
  workdir = str(tmp_path / "run")
  jgen.run.main(config, workdir=workdir, mode="train")
  assert checkpoint_steps(workdir) == [3]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000003.png"))

  config.train.num_steps = 5
  state = jgen.run.main(config, workdir=workdir, mode="train")  # resumes from step 3
  assert int(state.step) == 5 and checkpoint_steps(workdir)[-1] == 5

  data = np.load(jgen.run.main(config, workdir=workdir, mode="sample")["npz"])
  assert data["images"].shape == (4, 1, 16, 16, 1) and data["target"].shape == (4, 1, 16, 16, 1)
  assert list(data["names"]) == ["target"]
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  for key in ("l1", "psnr", "translation/l1", "translation/psnr"):
    assert np.isfinite(result[key]), key


def test_paper_config_runs_on_a_paired_folder(tmp_path):
  """facades' `:smoke` on a folder of A|B images with train/ and val/ splits: BtoA pairs, each
  test image normalized by its own batch statistics."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for split, n in (("train", 4), ("val", 2)):
    (tmp_path / "facades" / split).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(
          tmp_path / "facades" / split / f"{i}.png")
  config = load_experiment("translation/pix2pix_facades", "smoke")
  config.data.source = f"paired_btoa:{tmp_path / 'facades'}"
  assert config.gan.test_batch_stats
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 8
  data = np.load(jgen.run.main(config, workdir=workdir, mode="sample")["npz"])
  assert data["images"].shape == (2, 1, 32, 32, 3)
