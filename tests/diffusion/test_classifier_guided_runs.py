"""Classifier guidance through the loop: a classifier run guides a DDPM run at sample time."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jgen.run
from jgen.diffusion import classifier_grad_fn, classifier_guided_eps_fn, ddim_sample
from jgen.diffusion.ddpm import DDPM, ConditionalDDPM
from jgen.diffusion.noisy_classifier import load_guiding_classifier
from jgen.train import load_method
from jgen.train.inference import restore_for_inference
from jgen.train.sampling import jit_sampler
from jgen.train.run_record import RunRecordError
from tests.conftest import load_experiment


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ddpm_smoke_run):
  """(classifier workdir, DDPM workdir): the smoke runs of both experiments (8x8, T = 20)."""
  clf = str(tmp_path_factory.mktemp("guided") / "clf")
  jgen.run.main(load_experiment("ddpm/noisy_classifier_digits", "smoke"), workdir=clf, mode="train")
  return clf, ddpm_smoke_run


def _guided_config(clf: str, scale: float, **sample):
  config = load_experiment("ddpm/digits", "smoke")
  config.sample.classifier.workdir = clf
  config.sample.classifier_scale = scale
  for k, v in sample.items():
    config.sample[k] = v
  return config


def _restored_ema(workdir: str):
  """The EMA parameters of a run's latest checkpoint, read with Orbax directly."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  items = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return items["emas"]["ema"]


def test_classifier_loads_from_its_run_record(runs):
  clf, _ = runs
  guide = load_guiding_classifier(clf)
  config = load_experiment("ddpm/noisy_classifier_digits", "smoke")
  assert guide.step == config.train.num_steps and guide.num_classes == 10
  assert guide.image_shape == (8, 8, 1) and guide.schedule.num_timesteps == 20
  # The EMA parameters, as the checkpoint holds them.
  want = _restored_ema(clf)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, guide.params),
               jax.tree.map(np.asarray, want))


def test_guided_sampling_equals_the_pure_composition(runs):
  clf, ddpm = runs
  scale = 50.0  # a 4-step classifier is nearly flat: a large s makes the shift visible
  config = _guided_config(clf, scale, sampler="ddim")
  method, mesh, state = restore_for_inference(config, ddpm)
  assert isinstance(method, ConditionalDDPM) and method.num_classes == 10
  assert method.model.num_classes == 0  # the U-Net stays unconditional
  labels = jnp.asarray([0, 3, 7, 9], jnp.int32)
  got = jit_sampler(method, mesh)(state, jax.random.key(5), labels)

  # The same sampler built from the public pure functions and independently read weights.
  guide = load_guiding_classifier(clf)
  ema = _restored_ema(clf)
  eps_fn = DDPM.eps_fn(method, state.ema_params)
  grad_fn = classifier_grad_fn(lambda x, t: guide.model.apply(ema, x, t, train=False), labels)
  want = ddim_sample(classifier_guided_eps_fn(eps_fn, grad_fn, method.schedule, scale),
                     method.schedule, jax.random.key(5), (4, 8, 8, 1),
                     steps=config.sample.steps, eta=0.0, spacing="uniform")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)

  # Guidance moves the samples; scale 0 gives the unguided model's samples for the same key.
  unguided = jax.jit(load_method(load_experiment("ddpm/digits", "smoke")).sample,
                     static_argnums=2)(state, jax.random.key(5), 4)
  assert np.max(np.abs(np.asarray(got) - np.asarray(unguided))) > 1e-3  # float noise: ~1e-6
  method0, mesh0, _ = restore_for_inference(_guided_config(clf, 0.0), ddpm)
  zero = jit_sampler(method0, mesh0)(state, jax.random.key(5), labels)
  np.testing.assert_allclose(np.asarray(zero), np.asarray(unguided), atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m"])
def test_sample_mode_writes_guided_samples_with_labels(runs, sampler):
  clf, ddpm = runs
  config = _guided_config(clf, 2.0, sampler=sampler, labels="3,5")
  paths = jgen.run.main(config, workdir=ddpm, mode="sample")
  assert "clf2" in paths["npz"]
  data = np.load(paths["npz"])
  n = config.sample.num
  np.testing.assert_array_equal(data["labels"], np.resize([3, 5], n))
  assert data["images"].shape == (n, 8, 8, 1)
  # The classifier is a sampling input, never part of the DDPM run's checkpoint.
  assert "classifier" not in restore_for_inference(config, ddpm)[2].frozen


def test_bad_classifier_setups_are_clear_errors(runs, tmp_path):
  clf, ddpm = runs
  config = load_experiment("ddpm/digits", "smoke")
  config.sample.classifier_scale = 2.0
  with pytest.raises(ValueError, match="sample.classifier.workdir"):
    load_method(config)
  with pytest.raises(ValueError, match="'diffusion.ddpm' run"):
    load_method(_guided_config(ddpm, 1.0))
  with pytest.raises(RunRecordError, match="no run_record.json"):
    load_method(_guided_config(str(tmp_path), 1.0))
  other_t = _guided_config(clf, 1.0)
  other_t.diffusion.num_timesteps = 30
  with pytest.raises(ValueError, match="num_timesteps 30 vs the classifier's 20"):
    load_method(other_t)
  other_size = _guided_config(clf, 1.0)
  other_size.data.image_size = 16
  with pytest.raises(ValueError, match=r"image shape \(16, 16, 1\)"):
    load_method(other_size)
  cond = load_experiment("ddpm/cond_digits", "smoke")
  cond.model.num_classes = 7
  cond.sample.classifier.workdir = clf
  with pytest.raises(ValueError, match="7 classes"):
    load_method(cond)
  # Without a sampler-side frozen classifier, sample_conditional says how to pass it.
  method, _, state = restore_for_inference(_guided_config(clf, 1.0), ddpm)
  with pytest.raises(ValueError, match="jit_sampler"):
    method.sample_conditional(state, jax.random.key(0), {"label": jnp.zeros((2,), jnp.int32)},
                              2)


def test_cfg_and_classifier_guidance_compose(runs, tmp_path):
  clf, _ = runs
  cond = load_experiment("ddpm/cond_digits", "smoke")
  workdir = str(tmp_path / "cond")
  jgen.run.main(cond, workdir=workdir, mode="train")
  cond.sample.classifier.workdir = clf
  cond.sample.classifier_scale = 1.5
  cond.sample.guidance_scale = 3.0
  paths = jgen.run.main(cond, workdir=workdir, mode="sample")
  assert "w3_clf1.5" in paths["npz"]
  record = json.loads(open(os.path.join(workdir, "run_record.json")).read())
  assert len(record) == 1 and record[0]["config"]["model"]["num_classes"] == 10
