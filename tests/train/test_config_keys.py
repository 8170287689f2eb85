"""A field the spine's closed config blocks do not define is an error naming it, before any
work; every shipped experiment config passes the check."""

import glob
import os

import pytest

import jgen.run
from jgen.train.config import check_config_keys, experiment_module
from tests.conftest import REPO

# Experiments whose argument is required, with one valid value each.
_ARGS = {"autoencoder_cifar": "vae", "autoencoder_mnist": "vqvae", "flow_cifar": "glow",
         "flow_mnist": "realnvp", "gan_cifar": "wgan_gp", "gan_mnist": "dcgan"}


def test_a_misspelled_field_is_an_error_with_a_suggestion(tmp_path, smoke_config):
  smoke_config.train.chekpoint_every = 100
  with pytest.raises(ValueError, match=r"train.chekpoint_every \(did you mean "
                                       r"train.checkpoint_every\?\)"):
    jgen.run.main(smoke_config, workdir=str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "experiments" / "*.py"))),
                         ids=os.path.basename)
def test_every_experiment_uses_only_defined_fields(path):
  name = os.path.basename(path)[:-3]
  if name.startswith("base_"):
    pytest.skip("a base, not an experiment")
  module = experiment_module(name, path)
  for arg in (_ARGS.get(name), "smoke" if name not in _ARGS else f"{_ARGS[name]},smoke"):
    try:
      config = module.get_config(arg)
    except ValueError:
      continue  # the experiment has no such variant
    check_config_keys(config)
