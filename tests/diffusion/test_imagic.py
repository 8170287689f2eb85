"""Imagic (`diffusion.imagic`) on a text latent diffusion smoke run: stage 1 moves the embedding
offset alone, stage 2 the U-Net alone (the offset bitwise fixed), the text encoder never; the
sweep's ends are e_opt and e_tgt from the same noise."""

import os

import jax
import numpy as np
import pytest

import jgen.run
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train import inference
from jgen.train.rules import flat
from tests.conftest import load_experiment


def _config(fs_run, base):
  config = load_experiment("personalize/imagic_digits", "smoke")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = base
  config.train.checkpoint_every = 2
  return config


def _params(workdir, step):
  return flat(init_from_lib.load(init_from_lib.InitFrom(workdir, step=step,
                                                        source="params"))[0])


@pytest.mark.slow  # two loop runs and a sweep: about 2 min on 2 cores
def test_stages_train_their_own_parameters(tmp_path, fs_run, text_base):
  config = _config(fs_run, text_base)
  workdir = str(tmp_path / "imagic")
  jgen.run.main(config, workdir=workdir)
  base = flat(init_from_lib.load(init_from_lib.InitFrom(text_base))[0])
  one, two = _params(workdir, 2), _params(workdir, 4)
  for p, v in base.items():  # stage 1: the model is the base's
    np.testing.assert_array_equal(one[p], np.asarray(v), err_msg=p)
  assert np.abs(one["imagic/delta"]).max() > 0
  np.testing.assert_array_equal(two["imagic/delta"], one["imagic/delta"])  # fixed in stage 2
  moved = [p for p in base if not np.array_equal(two[p], np.asarray(base[p]))]
  assert moved and all(p.startswith("unet/") for p in moved)

  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape[0] == 11
  # The sweep's ends: eta = 0 is e_opt, eta = 1 is e_tgt, each from the sweep's one noise.
  method, _, state = inference.restore_for_inference(config, workdir)
  sweep = np.asarray(jax.jit(method.sample, static_argnums=2)(state, jax.random.key(0), 3))
  ends = [np.asarray(jax.jit(method.sample_eta, static_argnums=3)(state, jax.random.key(0), e,
                                                                    1))[0] for e in (0.0, 1.0)]
  np.testing.assert_allclose(sweep[0], ends[0], atol=1e-4)
  np.testing.assert_allclose(sweep[-1], ends[1], atol=1e-4)
  assert os.path.exists(paths["png"])


def test_bad_settings_are_refused(fs_run, text_base):
  config = _config(fs_run, text_base)
  config.imagic.embed_steps = 4
  with pytest.raises(ValueError, match="embed_steps"):
    load_method(config)
  config = _config(fs_run, text_base)
  config.imagic.target = "a handwritten zebra"
  with pytest.raises(ValueError, match="zebra"):
    load_method(config)
