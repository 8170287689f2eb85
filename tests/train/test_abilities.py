"""The method abilities (`jgen.train.method`): one place dispatches the sampler on them, and the
train core imports none of the run layer."""

import subprocess
import sys

import pytest

from jgen.train import Conditional, Method, Reconstructs, Samples
from jgen.train.sampling import method_sampler
from tests.conftest import REPO


class _Base:
  def init(self, rng, batch):
    raise NotImplementedError

  def train_step(self, state, batch, rng):
    raise NotImplementedError


class _Sampler(_Base):
  def sample(self, state, rng, n):
    return ("sample", n)


class _Autoencoder(_Base):
  def reconstruct_images(self, state, images):
    return images

  def reconstructions(self, state, rng, n):
    return ("reconstructions", n)


class _ClassConditional(_Sampler):
  num_classes = 10

  def sample_conditional(self, state, rng, conditions, n):
    return ("conditional", n)


def test_an_autoencoder_reconstructs_and_does_not_sample():
  ae = _Autoencoder()
  assert isinstance(ae, Reconstructs) and not isinstance(ae, Samples)
  got = method_sampler(ae)
  assert got.fn(None, None, 3) == ("reconstructions", 3)
  assert not got.samples and not got.by_label


def test_the_sampler_follows_the_abilities():
  got = method_sampler(_Sampler())
  assert got.fn(None, None, 2) == ("sample", 2) and got.samples and not got.by_label
  cond = _ClassConditional()
  assert isinstance(cond, Conditional)
  got = method_sampler(cond)
  assert got.by_label and got.samples

  class Labels:
    shape = (4,)
  assert got.fn(None, None, Labels()) == ("conditional", 4)
  method: Method = _Base()
  with pytest.raises(ValueError, match="neither samples .* nor reconstructs"):
    method_sampler(method)


def test_the_train_core_and_the_families_import_no_run_module():
  code = ("import sys, jgen.train, jgen.autoencoder.ae, jgen.metrics.control, "
          "jgen.metrics.personalization\n"
          "bad = [m for m in sys.modules if m in ('jgen.train.loop', 'jgen.train.inference') "
          "or m.startswith('jgen.cli')]\n"
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
