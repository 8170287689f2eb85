"""Preemption with real processes: SIGTERM mid-run saves the step it stopped at and exits 75;
kill -9 during an async save resumes from the last committed step; both end bitwise equal to
an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jgen.train import inference, preemption
from tests.conftest import REPO, checkpoint_steps, load_experiment, subprocess_env

STEPS = 300
_OVERRIDES = [f"--config.train.num_steps={STEPS}", "--config.train.eval_every=0",
              "--config.train.sample_every=0", "--config.train.checkpoint_every=100",
              "--config.train.log_every=50", "--config.train.keep_checkpoints=10"]


def _launch_cmd(workdir, *, cache: bool = True):
  """launch.py on ddpm_digits:smoke for `STEPS` steps. With the session's compilation cache
  (`cache`) only the first run compiles the step; the SIGTERM test's run compiles it afresh
  (`cache=False`), so the signal lands while the step compiles or early in the run, never
  after its last step."""
  return [sys.executable, str(REPO / "launch.py"), "--config",
          str(REPO / "experiments" / "ddpm" / "digits.py") + ":smoke", "--workdir", str(workdir),
          *([] if cache else ["--nocompilation_cache"]), *_OVERRIDES]


def _run(cmd, **kw):
  out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600,
                       check=False, **kw)
  return out.returncode, out.stderr


def _final_leaves(workdir):
  config = load_experiment("ddpm/digits", "smoke")
  config.train.num_steps = STEPS
  _, _, state = inference.restore_for_inference(config, str(workdir))
  assert int(state.step) == STEPS
  return [np.asarray(x) for x in jax.tree.leaves(state.checkpoint_items())]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  rc, err = _run(_launch_cmd(workdir))
  assert rc == 0, err[-3000:]
  return _final_leaves(workdir)


def _assert_bitwise(a, b):
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_the_step_it_stopped_at_and_resume_is_bitwise_equal(tmp_path, straight):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_launch_cmd(workdir, cache=False), env=subprocess_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  deadline = time.time() + 300
  # run_record.json is written after train() has caught SIGTERM, before the first step.
  while not (workdir / "run_record.json").exists():
    assert proc.poll() is None and time.time() < deadline, "the run ended before training"
    time.sleep(0.1)
  time.sleep(2.0)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == preemption.EXIT_PREEMPTED, err[-3000:]
  stopped = int(re.search(r"stopped at step (\d+) on SIGTERM", err).group(1))
  assert 0 < stopped < STEPS, err[-3000:]
  assert checkpoint_steps(workdir) == [s for s in (100, 200) if s < stopped] + [stopped]

  rc, err = _run(_launch_cmd(workdir))
  assert rc == 0, err[-3000:]
  assert f"resumed from checkpoint step {stopped}" in err
  _assert_bitwise(straight, _final_leaves(workdir))


_KILL_DURING_SAVE = """
import os, signal, sys
sys.argv = {argv!r}
from jgen.train import checkpoint
real_save = checkpoint.Checkpointer.save
def save_then_die(self, step, items, **kw):
  result = real_save(self, step, items, **kw)
  if step == 200:  # the async write of step 200 has started and is not committed yet
    os.kill(os.getpid(), signal.SIGKILL)
  return result
checkpoint.Checkpointer.save = save_then_die
import runpy
runpy.run_path({launch!r}, run_name="__main__")
"""


def test_kill_9_during_async_save_resumes_from_the_last_committed_step(tmp_path, straight):
  workdir = tmp_path / "run"
  cmd = _launch_cmd(workdir)
  script = _KILL_DURING_SAVE.format(argv=cmd[1:], launch=cmd[1])
  rc, err = _run([sys.executable, "-c", script])
  assert rc == -signal.SIGKILL, err[-3000:]
  assert checkpoint_steps(workdir) == [100]  # step 200 was in flight: never taken for one
  leftovers = [p for p in os.listdir(workdir / "checkpoints") if p != "100"]
  assert leftovers and all("tmp" in p for p in leftovers), leftovers

  rc, err = _run(_launch_cmd(workdir))
  assert rc == 0, err[-3000:]
  assert "resumed from checkpoint step 100" in err
  _assert_bitwise(straight, _final_leaves(workdir))
