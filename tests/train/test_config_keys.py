"""Every experiment config's declared variants build and use only defined fields; a misspelled
field or config argument is an error that names it, before any work."""

import os
import re
import time

import pytest

import jgen.run
from jgen.data.sources import DatasetUnavailableError
from jgen.errors import ConfigError
from jgen.train import CheckpointError, InitFromError
from jgen.train.config import check_config_keys, experiment_module, parse_arg, variants
from jgen.train.method import load_method
from tests.conftest import REPO

EXPERIMENTS = REPO / "experiments"
# experiments/<family>/<name>.py; `base*.py` are the families' shared bases, not experiments.
CONFIGS = sorted(str(p.relative_to(EXPERIMENTS))[:-3] for p in EXPERIMENTS.glob("*/*.py")
                 if not p.name.startswith("base"))
# What a method may need from this machine to be made: its dataset, another run's checkpoint.
_ABSENT = (DatasetUnavailableError, FileNotFoundError, InitFromError, CheckpointError)
_ABSENT_MESSAGES = ("run_record.json", "init_from.base.workdir=", "init_from.workdir=<",
                    "weight files, not found")
ALIASES = sorted(p.name[:-3] for p in EXPERIMENTS.glob("*.py"))


def test_a_misspelled_field_is_an_error_with_a_suggestion(tmp_path, smoke_config):
  smoke_config.train.chekpoint_every = 100
  with pytest.raises(ConfigError, match=r"train.chekpoint_every \(did you mean "
                                        r"train.checkpoint_every\?\)"):
    jgen.run.main(smoke_config, workdir=str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused before anything was written


def _cases():
  for name in CONFIGS:
    module = experiment_module(name, str(EXPERIMENTS / "_"))
    assert isinstance(getattr(module, "ARGS", None), dict), (
        f"experiments/{name}.py declares no ARGS (the defaults of its parse_arg)")
    for arg in variants(module.ARGS):
      yield pytest.param(name, arg, id=f"{name}:{arg or ''}")


@pytest.mark.parametrize(("name", "arg"), list(_cases()))
def test_every_variant_of_every_experiment_builds(name, arg):
  """`get_config(arg)` for each variant its ARGS declare, the fields checked, and the method
  object made from it (no init, no compile; a method that needs another run's work directory
  to be made is an error that says so, which counts as built)."""
  config = experiment_module(name, str(EXPERIMENTS / "_")).get_config(arg)
  check_config_keys(config)
  start = time.perf_counter()
  try:
    load_method(config)
  except (*_ABSENT, ValueError) as e:
    if isinstance(e, ConfigError) or not (isinstance(e, _ABSENT) or any(
        m in str(e) for m in _ABSENT_MESSAGES)):
      raise
  assert time.perf_counter() - start < 10


@pytest.mark.parametrize("name", ALIASES)
def test_the_old_flat_paths_are_aliases_of_the_new_ones(name):
  module = experiment_module(name, str(EXPERIMENTS / "_"))
  assert "(until 0.2)" in module.__doc__
  target = module.__doc__.split("experiments/")[1].split(".py")[0]
  new = experiment_module(target, str(EXPERIMENTS / "_"))
  first = next(a for a in variants(new.ARGS) if a) if new.ARGS else None
  assert module.get_config().to_dict() == new.get_config().to_dict()
  if first and "=" not in first:  # a flag means the same at both paths
    assert module.get_config(first).to_dict() == new.get_config(first).to_dict()


def test_an_unknown_or_bad_config_argument_is_an_error_naming_the_valid_ones():
  module = experiment_module("gan/cifar", str(EXPERIMENTS / "_"))
  with pytest.raises(ConfigError, match=r"unknown config argument 'methd' \(did you mean "
                                        r"method\?\).*valid: method=wgan_gp\|dcgan"):
    module.get_config("methd=dcgan")
  with pytest.raises(ConfigError, match=r"method is one of wgan_gp, dcgan, cgan, wgan"):
    module.get_config("method=stylegan")
  with pytest.raises(ConfigError, match=r"unknown config argument 'smoek'.*valid: smoke"):
    experiment_module("ddpm/digits", str(EXPERIMENTS / "_")).get_config("smoek")


def test_parse_arg_types_values_from_the_defaults():
  a = parse_arg("smoke,steps=3,lr=1e-3,name=x,cond=false",
                smoke=False, cond=True, steps=1, lr=0.1, name="", kind=("a", "b"))
  assert (a.smoke, a.cond, a.steps, a.lr, a.name, a.kind) == (True, False, 3, 1e-3, "x", "a")
  assert parse_arg(None, smoke=False).smoke is False
  for bad, match in (("steps=x", "steps is a int"), ("smoke=maybe", "smoke is a flag"),
                     ("steps", "steps needs a value"), ("smoke,smoke", "given twice")):
    with pytest.raises(ConfigError, match=match):
      parse_arg(bad, smoke=False, steps=1)
  assert variants({"smoke": False, "cond": False, "kind": ("a", "b")}) == (
      None, "smoke", "cond", "kind=b", "cond,smoke", "kind=b,smoke")


def test_the_launch_path_with_a_variant_loads_like_config_flags():
  """absl's config_flags splits `--config PATH:ARG` on the first ':' and calls get_config(ARG)."""
  path = os.path.join(EXPERIMENTS, "ddpm", "digits.py")
  assert os.path.isfile(path)
  config = experiment_module("ddpm/digits", str(EXPERIMENTS / "_")).get_config("smoke")
  assert config.data.image_size == 8


_COMMAND = re.compile(r"experiments/([a-z0-9_/]+)\.py(?::([A-Za-z0-9_,=./-]*[A-Za-z0-9_]))?")


def test_every_config_path_the_docs_name_loads_with_its_argument():
  """`experiments/<path>.py[:ARG]` in README, docs, docstrings and benchmarks: the file is there and
  `get_config(ARG)` builds (ARG in capitals is a placeholder, as is one naming a path, e.g.
  ``init_from=/tmp/run``: that run need not exist; a family base is only checked to be there)."""
  named = set()
  docs = [p for p in REPO.glob("docs/**/*.md")
          if p.name != "add_method.md"]  # its experiments/gaussian/ is the template it writes
  for path in [REPO / "README.md", *docs, *REPO.glob("experiments/**/*.py"),
               *REPO.glob("jgen/**/*.py"), *REPO.glob("benchmarks/*.py"), REPO / "launch.py"]:
    named |= set(_COMMAND.findall(path.read_text()))
  assert len(named) > 50
  for name, arg in sorted(named):
    assert (EXPERIMENTS / f"{name}.py").is_file(), name
    if os.path.basename(name).startswith("base") or re.search(r"[A-Z]{3}|/", arg):
      continue
    check_config_keys(experiment_module(name, str(EXPERIMENTS / "_")).get_config(arg or None))
