"""Shared test fixtures: repo paths and the tiny experiment configs."""

import functools
import os
import pathlib
import tempfile

import pytest

# XLA:CPU builds the tests' programs with LLVM's optimizations off (`TEST_XLA_FLAGS`), set here
# before JAX starts its backends: the suite's tiny programs spend far longer compiling than
# running (a ddpm_digits:smoke train/sample run: 27.7 s of CPU against 51.3 s at XLA's default
# level, cold cache). Convolutions and dots still run in XLA's libraries, but the generated
# element-wise code is slower, so a test that runs long loops of small jitted steps pays for it
# (a 600-step judge took test_translation_loop's eval test to 437 s against 39.7 s at the
# default level; that test now trains a 20-step judge). XLA:CPU's MLIR fusion emitters are off
# too: its older LLVM IR emitters compile the same fusions faster (that smoke run: 18-21 s of
# CPU against 28 s, cold cache; the translation eval test runs as fast with either).
# JGEN_TEST_XLA_OPT=1 keeps XLA's defaults, and a value that XLA_FLAGS already names wins.
TEST_XLA_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}


def with_test_xla_flags(flags: str) -> str:
  """`flags` (an XLA_FLAGS value) with `TEST_XLA_FLAGS` added, unless it names them already or
  JGEN_TEST_XLA_OPT=1."""
  if os.environ.get("JGEN_TEST_XLA_OPT") == "1":
    return flags
  for name, value in TEST_XLA_FLAGS.items():
    if f"--{name}=" not in flags:
      flags = f"{flags} --{name}={value}".strip()
  return flags


_flags = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))
if _flags:
  os.environ["XLA_FLAGS"] = _flags

import jgen.run  # noqa: E402
from jgen.train import Checkpointer  # noqa: E402  (after XLA_FLAGS: JAX may start on import)
from jgen.train.config import experiment_module  # noqa: E402

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


@pytest.fixture(scope="session")
def ddpm_smoke_run(tmp_path_factory):
  """The workdir of one ddpm_digits:smoke training run, trained once per session (per xdist
  worker): the base of the ControlNet, LoRA and classifier-guidance tests. Tests may add samples
  to it; none trains in it or changes its checkpoints."""
  workdir = str(tmp_path_factory.mktemp("ddpm_smoke"))
  jgen.run.main(load_experiment("ddpm/digits", "smoke"), workdir=workdir)
  return workdir


def subprocess_env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  flags = with_test_xla_flags(env.get("XLA_FLAGS", ""))
  if flags:
    env["XLA_FLAGS"] = flags
  return env


def checkpoint_steps(workdir: str) -> list[int]:
  """The checkpoint steps a run left in `workdir`."""
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    return ckpt.all_steps()


# Session fixtures that several test files train on. Under `pytest -n`, each xdist worker builds
# every session fixture that its tests use, so setup.cfg runs xdist with `--dist loadfile` and
# the scheduler below sends all the test files that name one of these fixtures to one worker,
# as one unit (the first fixture here that a file names): it builds the fixture once. Every
# other file is a unit of its own, as in loadfile, so a module-scoped fixture is built once too.
# (xdist's own `--dist loadgroup` marks do not group tests under pytest 9: xdist 3.8 renames
# node ids through an attribute that pytest 9 no longer reads.)
SHARED_RUNS = ("fs_run", "ddpm_smoke_run")


@functools.cache
def _scheduling_unit(path: str) -> str:
  """The first of `SHARED_RUNS` that the test file `path` (relative to the repo) names, else
  `path`."""
  try:
    text = (REPO / path).read_text()
  except OSError:
    return path
  return next((name for name in SHARED_RUNS if name in text), path)


# The heaviest scheduling units, heaviest first (summed test seconds of a cold `-n 2` run, in
# brackets). xdist hands out units in collection order once its reordering by test count is off;
# by count these few-test units came last and one worker ran the last of them alone (the other
# idle about 100 s of a 903 s run).
HEAVY_FIRST = (
    "fs_run",                                   # the latent-diffusion files (~300)
    "ddpm_smoke_run",                           # ControlNet, classifier guidance, LoRA (~160)
    "tests/train/test_loop.py",                 # (99)
    "tests/train/test_preemption.py",           # (70)
    "tests/train/test_fsdp.py",                 # (62)
    "tests/diffusion/test_personalize.py",      # (62)
    "tests/metrics/test_fid_reference.py",      # (45)
    "tests/train/test_run_record.py",           # (34)
    "tests/train/test_translation_loop.py",     # (31)
    "tests/gan/test_stylegan2.py",              # (30)
)


def pytest_collection_modifyitems(config, items):
  """In an xdist worker, the `HEAVY_FIRST` units' tests first (a stable sort): every worker
  collects the same order, and the scheduler below deals the units out in it."""
  if not hasattr(config, "workerinput"):
    return
  rank = {unit: i for i, unit in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(
      _scheduling_unit(item.nodeid.split("::")[0]), len(HEAVY_FIRST)))


def pytest_xdist_make_scheduler(config, log):
  if config.getvalue("dist") != "loadfile":
    return None
  config.option.loadscopereorder = False  # keep the collection order (HEAVY_FIRST)
  from xdist.scheduler import LoadFileScheduling  # noqa: PLC0415 (only under xdist)

  class SharedRunScheduling(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
      return _scheduling_unit(super()._split_scope(nodeid))

  return SharedRunScheduling(config, log)
