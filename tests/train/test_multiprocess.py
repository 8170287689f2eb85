"""Two real processes (`jax.distributed` with a coordinator on 127.0.0.1, 2 CPU devices each):
a SIGTERM to one of them stops both at one agreed step with its checkpoint, the resume finishes
the run, and the parameters equal a single process's with the same 4 devices."""

import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jgen.train import inference, preemption
from tests.conftest import REPO, checkpoint_steps, load_experiment, subprocess_env

pytestmark = pytest.mark.slow  # about 3 minutes on 2 cores: launches of two processes

STEPS = 300
_OVERRIDES = [f"--config.train.num_steps={STEPS}", "--config.train.eval_every=0",
              "--config.train.sample_every=0", "--config.train.checkpoint_every=1000",
              "--config.train.log_every=50"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, *extra):
  return [sys.executable, str(REPO / "launch.py"), "--config",
          str(REPO / "experiments" / "ddpm" / "digits.py") + ":smoke", "--workdir", str(workdir),
          "--nocompilation_cache", *_OVERRIDES, *extra]


def _start(workdir, devices, *extra):
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen(_cmd(workdir, *extra), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _start_pair(workdir):
  port = _free_port()
  return [_start(workdir, 2, "--distributed", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}") for i in range(2)]


def _finish(procs):
  errs = [p.communicate(timeout=600)[1] for p in procs]
  return [p.returncode for p in procs], errs


def _params(workdir):
  config = load_experiment("ddpm/digits", "smoke")
  _, _, state = inference.restore_for_inference(config, str(workdir))
  assert int(state.step) == STEPS
  # Attention key biases are left out: they add q.b_k to every logit of a query, which softmax
  # ignores, so their gradient is zero up to rounding, and Adam turns that rounding (another
  # reduction order on another device layout) into +-lr steps: after 300 steps they differ by
  # ~3e-4 at a size of ~1e-4, while every other leaf agrees to 1e-5.
  return [np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]
          if not jax.tree_util.keystr(path).endswith("['k']['bias']")]


def test_two_processes_preempt_resume_and_match_one_process(tmp_path):
  single = _start(tmp_path / "single", 4)
  rcs, errs = _finish([single])
  assert rcs == [0], errs[0][-3000:]

  workdir = tmp_path / "pair"
  procs = _start_pair(workdir)
  deadline = time.time() + 400
  while not (workdir / "run_record.json").exists():
    assert all(p.poll() is None for p in procs) and time.time() < deadline, "ended early"
    time.sleep(0.1)
  time.sleep(3.0)
  procs[1].send_signal(signal.SIGTERM)  # one host is preempted: both must stop at one step
  rcs, errs = _finish(procs)
  assert rcs == [preemption.EXIT_PREEMPTED] * 2, "\n".join(e[-2000:] for e in errs)
  steps = checkpoint_steps(workdir)
  assert len(steps) == 1 and 0 < steps[0] < STEPS, steps
  for err in errs:
    assert f"stopped at step {steps[0]} on SIGTERM" in err

  rcs, errs = _finish(_start_pair(workdir))
  assert rcs == [0, 0], "\n".join(e[-2000:] for e in errs)
  assert all(f"resumed from checkpoint step {steps[0]}" in e for e in errs)
  for a, b in zip(_params(tmp_path / "single"), _params(workdir), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # 300 Adam steps apart

  # --mode=sample spreads the samples over both processes' devices and gathers them: the
  # pair writes the single process's images (uint8; parameters equal to float tolerance).
  extra = ["--mode=sample", "--config.sample.num=8", "--config.sample.batch_size=8"]
  rcs, errs = _finish([_start(tmp_path / "single", 4, *extra)])
  assert rcs == [0], errs[0][-3000:]
  port = _free_port()
  rcs, errs = _finish([_start(workdir, 2, *extra, "--distributed",
                              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                              f"--process_id={i}") for i in range(2)])
  assert rcs == [0, 0], "\n".join(e[-2000:] for e in errs)
  single, = (tmp_path / "single" / "samples").glob("*.npz")
  pair, = (workdir / "samples").glob("*.npz")
  a = np.load(single)["images"].astype(int)
  b = np.load(pair)["images"].astype(int)
  assert a.shape == b.shape == (8, 8, 8, 1)
  assert np.abs(a - b).max() <= 1
