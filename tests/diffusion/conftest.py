"""Fixtures shared by the latent-diffusion tests."""

import pytest

import jgen.run
from tests.conftest import load_experiment


@pytest.fixture(scope="session")
def fs_run(tmp_path_factory):
  """The workdir of a tiny trained VQ-GAN (vqgan_digits:smoke: stage 1, 8x8 -> 4x4x4 latents),
  trained once per session: every latent-diffusion test builds on it and none writes to it."""
  workdir = str(tmp_path_factory.mktemp("vqgan"))
  config = load_experiment("first_stage/vqgan_digits", "smoke")
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


@pytest.fixture(scope="session")
def text_base(tmp_path_factory, fs_run):
  """The workdir of an ldm_text_digits:smoke run on `fs_run`: the base that IP-Adapter and
  Imagic adapt (none of their tests writes to it)."""
  workdir = str(tmp_path_factory.mktemp("ldm_text_base"))
  config = load_experiment("ldm/text_digits", "smoke")
  config.init_from.workdir = fs_run
  config.train.eval_every = 0  # a base to adapt: its eval loss is never read
  jgen.run.main(config, workdir=workdir)
  return workdir
