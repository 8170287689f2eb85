"""Shared test fixtures: repo paths and the tiny experiment configs."""

import os
import pathlib
import tempfile

import pytest

from jgen.train import Checkpointer
from jgen.train.config import experiment_module

# One persistent XLA compilation cache for the whole test session (and its subprocesses): the
# loop tests run the same tiny config several times, and compiling dominates their time.
os.environ.setdefault("JGEN_COMPILATION_CACHE",
                      os.path.join(tempfile.gettempdir(), "jgen-test-xla-cache"))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_experiment(name: str, arg: str | None = None):
  """`get_config(arg)` of experiments/<name>.py (`name`: "ddpm/digits"), as launch.py's --config
  would load it."""
  return experiment_module(name, str(REPO / "experiments" / "_")).get_config(arg)


@pytest.fixture
def smoke_config():
  return load_experiment("ddpm/digits", "smoke")


def subprocess_env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


def checkpoint_steps(workdir: str) -> list[int]:
  """The checkpoint steps a run left in `workdir`."""
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return ckpt.all_steps()
