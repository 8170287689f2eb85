"""DreamBooth and textual inversion (`jgen.diffusion.personalize`): the identifier's row is the
class row plus the learned offset (NumPy), the DreamBooth loss is the base model's instance loss
plus lambda times its loss on the class images (the base computes both terms here), textual
inversion leaves every other leaf bitwise unchanged, the class images are made once by the
frozen base and cached, and DreamBooth with LoRA trains the adapters and the identifier only."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import personalize
from jgen.diffusion.losses import ddpm_loss
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.rules import flat
from tests.conftest import load_experiment


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cond_base"))
  config = load_experiment("ddpm/cond_digits", "smoke")
  config.train.eval_every = 0  # a base to adapt: its eval loss is never read
  jgen.run.main(config, workdir=workdir)
  return workdir


def _config(name, base_workdir, variant="smoke"):
  config = load_experiment(name, variant)
  config.init_from.workdir = base_workdir
  return config


def test_identifier_row_is_class_row_plus_offset():
  rng = np.random.default_rng(0)
  table = rng.standard_normal((11, 6)).astype(np.float32)
  offset = rng.standard_normal(6).astype(np.float32)
  stored = {"params": {"label_emb": {"embedding": jnp.asarray(table)}, "x": jnp.ones(2)},
            "identifier": {"offset": jnp.asarray(offset)}}
  out = personalize.IdentifierView(num_classes=10, subject_class=7)(stored)
  got = np.asarray(out["params"]["label_emb"]["embedding"])
  want = np.concatenate([table[:10], (table[7] + offset)[None], table[10:]])
  np.testing.assert_array_equal(got, want)
  assert set(out) == {"params"} and set(out["params"]) == {"label_emb", "x"}


def test_dreambooth_loss_is_instance_plus_lambda_prior(base_run):
  config = _config("personalize/dreambooth_digits", base_run)
  config.personalize.prior_weight = 2.5
  method = load_method(config)
  base_params, _ = init_from_lib.load(init_from_lib.InitFrom(base_run))
  rng = np.random.default_rng(1)
  subject = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
  prior = jnp.asarray(rng.uniform(-1, 1, (8, 8, 8, 1)), jnp.float32)
  stored = {**base_params, "identifier": {"offset": jnp.zeros((32,), jnp.float32)}}
  key = jax.random.key(3)
  loss, metrics = method.loss_fn(method.view(stored), {"image": subject}, prior, key)

  # The same keys, the base model's own loss: at offset 0, [V] is class 7, and classes 0..9
  # keep their rows, so each term is the base's loss of its images labelled 7.
  inst_key, prior_key, pick_key = jax.random.split(key, 3)
  pick = np.asarray(jax.random.randint(pick_key, (4,), 0, 8))

  def base_term(images, k):
    noise_key, dropout_key, _ = jax.random.split(k, 3)
    fn = method.base.model_fn(base_params, {"label": jnp.full((len(images),), 7, jnp.int32)},
                              train=True, dropout_rng=dropout_key)
    return float(ddpm_loss(fn, method.base.schedule, images, noise_key)[0])

  instance, prior_loss = base_term(subject, inst_key), base_term(prior[pick], prior_key)
  np.testing.assert_allclose(float(metrics["instance_loss"]), instance, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["prior_loss"]), prior_loss, rtol=1e-5)
  np.testing.assert_allclose(float(loss), instance + 2.5 * prior_loss, rtol=1e-5)


def test_textual_inversion_changes_the_embedding_only(tmp_path, base_run):
  config = _config("personalize/textual_inversion_digits", base_run)
  config.optim.lr = 0.1
  base_params, _ = init_from_lib.load(init_from_lib.InitFrom(base_run))
  state = jgen.run.main(config, workdir=str(tmp_path / "ti"))
  stored = flat(state.params)
  assert set(stored) - set(flat(base_params)) == {"identifier/offset"}
  for p, v in flat(base_params).items():
    np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  assert np.abs(np.asarray(stored["identifier/offset"])).max() > 0
  assert set(flat(state.emas["ema"])) == {"identifier/offset"}
  paths = jgen.run.main(config, workdir=str(tmp_path / "ti"), mode="sample")
  assert os.path.exists(paths["png"])


def test_dreambooth_caches_class_images_and_trains(tmp_path, base_run):
  config = _config("personalize/dreambooth_digits", base_run)
  workdir = str(tmp_path / "db")
  state = jgen.run.main(config, workdir=workdir)
  cached = os.listdir(os.path.join(workdir, "prior"))
  assert len(cached) == 1 and cached[0].startswith("class7_n8_")
  images = np.load(os.path.join(workdir, "prior", cached[0]))["images"]
  assert images.shape == (8, 8, 8, 1) and images.dtype == np.uint8 and images.std() > 0
  # The class images in the state are the cached ones (the base's samples of 7).
  np.testing.assert_array_equal(
      np.asarray(state.frozen["prior"]), images.astype(np.float32) / 127.5 - 1.0)
  # A fresh method of a second run reads the cache instead of sampling again.
  again = load_method(config).prepare(workdir)
  np.testing.assert_array_equal(again.class_images, np.asarray(state.frozen["prior"]))


def test_dreambooth_lora_trains_adapters_and_identifier(tmp_path, base_run):
  config = _config("personalize/dreambooth_digits", base_run)
  config.lora.rank = 2
  config.lora.targets = "conv"
  config.optim.rules = (("(.*/)?lora/.*", 1.0), ("identifier/.*", 1.0), (".*", "frozen"))
  base_params, _ = init_from_lib.load(init_from_lib.InitFrom(base_run))
  state = jgen.run.main(config, workdir=str(tmp_path / "dbl"))
  stored = flat(state.params)
  for p, v in flat(base_params).items():
    np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  trained = set(flat(state.emas["ema"]))
  assert "identifier/offset" in trained and all(
      p == "identifier/offset" or p.startswith("lora/") for p in trained)


def test_bad_settings_are_refused(base_run):
  config = _config("personalize/textual_inversion_digits", base_run)
  config.optim.rules = ()
  with pytest.raises(ValueError, match="identifier's embedding only"):
    load_method(config)
  config = _config("personalize/dreambooth_digits", base_run)
  config.personalize.subject_class = 10
  with pytest.raises(ValueError, match="must be a class of the base"):
    load_method(config)
  config = _config("personalize/dreambooth_digits", base_run)
  config.lora.rank = 2
  config.lora.targets = "conv"  # without rules only the adapters would train
  with pytest.raises(ValueError, match="identifier's embedding is frozen"):
    load_method(config)
  config = _config("personalize/dreambooth_digits", base_run)
  config.init_from.workdir = None
  with pytest.raises(ValueError, match="init_from.workdir"):
    load_method(config).prepare("/tmp/unused")
