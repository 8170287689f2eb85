"""The whole loop on a tiny config: train, checkpoint, resume, sample, eval, bad inputs."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.data
import jgen.run
from jgen.train import CheckpointError, Checkpointer, NonFiniteLossError, load_method
from tests.conftest import REPO, checkpoint_steps, load_experiment, subprocess_env


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.checkpoint_items())]


def test_train_checkpoint_sample_eval(tmp_path, smoke_config):
  workdir = str(tmp_path / "run")
  state = jgen.run.main(smoke_config, workdir=workdir, mode="train")
  assert int(state.step) == smoke_config.train.num_steps
  assert checkpoint_steps(workdir) == [3, 6]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000006.png"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))

  paths = jgen.run.main(smoke_config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (smoke_config.sample.num, 8, 8, 1) and images.dtype == np.uint8
  assert os.path.exists(paths["png"])

  result = jgen.run.main(smoke_config, workdir=workdir, mode="eval")
  assert result["step"] == 6 and np.isfinite(result["loss"])

  smoke_config.eval.checkpoint_step = 3   # an earlier kept checkpoint (a FID-vs-steps curve)
  earlier = jgen.run.main(smoke_config, workdir=workdir, mode="eval")
  assert earlier["step"] == 3 and earlier["loss"] != result["loss"]
  assert os.path.exists(os.path.join(workdir, "eval_step3.json"))
  assert "step3_" in jgen.run.main(smoke_config, workdir=workdir, mode="sample")["png"]
  smoke_config.eval.checkpoint_step = 4
  with pytest.raises(CheckpointError, match=r"keeps steps \[3, 6\]"):
    jgen.run.main(smoke_config, workdir=workdir, mode="eval")


def test_kill_and_resume_is_bitwise_equal(tmp_path, smoke_config, monkeypatch):
  straight = jgen.run.main(smoke_config, workdir=str(tmp_path / "a"))

  real_iterate = jgen.data.iterate

  def killed_after_four(ds, start, **kw):
    it = real_iterate(ds, start, **kw)
    for _ in range(4):
      yield next(it)
    raise KeyboardInterrupt  # the run dies during step 5, after the step-3 checkpoint

  workdir = str(tmp_path / "b")
  monkeypatch.setattr(jgen.data, "iterate", killed_after_four)
  with pytest.raises(KeyboardInterrupt):
    jgen.run.main(smoke_config, workdir=workdir)
  monkeypatch.setattr(jgen.data, "iterate", real_iterate)
  assert checkpoint_steps(workdir) == [3]
  resumed = jgen.run.main(smoke_config, workdir=workdir)

  for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, smoke_config):
  config = smoke_config
  config.method = "tests.train.nan_method"
  config.nan_after = 4
  workdir = str(tmp_path / "run")
  config.train.log_every = 100   # no log step before the end: the on-device flag finds it
  with pytest.raises(NonFiniteLossError, match="last good checkpoint") as err:
    jgen.run.main(config, workdir=workdir)
  # The 5th update (state.step 4 -> 5) is the first on NaN inputs; its loss is named.
  assert "non-finite at step 5" in str(err.value) and "'loss': nan" in str(err.value)
  assert checkpoint_steps(workdir) == [3]
  method = load_method(config)
  abstract = jax.eval_shape(method.init, jax.random.key(0), {
      "image": jax.ShapeDtypeStruct((8, 8, 8, 1), np.float32)})
  with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    restored = ckpt.restore(abstract.checkpoint_items())
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["params"]))


def test_save_guard_refuses_a_state_with_nan_params_and_finite_metrics(tmp_path, smoke_config):
  config = smoke_config
  config.method = "tests.train.nan_method"
  config.nan_after = 5            # the last update (step 6) leaves NaN params, finite metrics
  config.nan_mode = "params"
  workdir = str(tmp_path / "run")
  with pytest.raises(NonFiniteLossError, match=r"non-finite params in the state at step 6"):
    jgen.run.main(config, workdir=workdir)
  assert checkpoint_steps(workdir) == [3]


def test_corrupt_checkpoint_gives_clear_error(tmp_path, smoke_config):
  workdir = str(tmp_path / "run")
  smoke_config.train.num_steps = 3
  jgen.run.main(smoke_config, workdir=workdir)
  step_dir = os.path.join(workdir, "checkpoints", "3")
  for root, _, files in os.walk(step_dir):
    for f in files:
      if not f.startswith("_"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  with pytest.raises(CheckpointError, match="corrupt"):
    jgen.run.main(smoke_config, workdir=workdir, mode="sample")


def test_unknown_method_fails_before_data(tmp_path, smoke_config):
  smoke_config.method = "diffusion.nope"
  smoke_config.data.source = "folder:/does/not/exist"
  with pytest.raises(ValueError, match="unknown method 'diffusion.nope'"):
    jgen.run.main(smoke_config, workdir=str(tmp_path))


def test_unknown_mode(tmp_path, smoke_config):
  with pytest.raises(ValueError, match="unknown mode"):
    jgen.run.main(smoke_config, workdir=str(tmp_path), mode="fly")


def test_missing_dataset_says_how_to_provide_it(tmp_path, smoke_config):
  smoke_config.data.source = f"folder:{tmp_path}/no_such_dir"
  with pytest.raises(jgen.data.DatasetUnavailableError, match="folder"):
    jgen.run.main(smoke_config, workdir=str(tmp_path / "run"))


def test_image_shape_mismatch(tmp_path, smoke_config):
  smoke_config.data.resize = False  # digits are 8x8x1: ask for 3 channels
  smoke_config.data.channels = 3
  with pytest.raises(ValueError, match="channels"):
    jgen.run.main(smoke_config, workdir=str(tmp_path))


def test_cifar_config_builds_the_paper_model():
  config = load_experiment("ddpm/cifar")
  method = load_method(config)
  batch = {"image": jax.ShapeDtypeStruct((128, 32, 32, 3), np.float32)}
  state = jax.eval_shape(method.init, jax.random.key(0), batch)
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))
  assert abs(n - 35.7e6) / 35.7e6 < 0.005
  assert method.schedule.num_timesteps == 1000
  np.testing.assert_allclose(np.asarray(method.schedule.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)


_DEVICES_SCRIPT = """
import json, sys, jax, numpy as np
sys.path.insert(0, {repo!r})
import jgen.run
from tests.conftest import load_experiment
c = load_experiment("ddpm/digits", "smoke")
c.train.num_steps = 2
c.train.eval_every = 0
c.data.batch_size = 8
state = jgen.run.main(c, workdir={workdir!r})
leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.params)]
error = None
if {bad_batch}:  # in the same process: one JAX start less
    c.data.batch_size = {bad_batch}
    try:
        jgen.run.main(c, workdir={workdir!r} + "_bad")
    except ValueError as e:
        error = str(e)
print(json.dumps({{"devices": jax.device_count(), "error": error,
                  "params": [float(np.sum(x * x)) for x in leaves]}}))
"""


def _run_devices(n, tmp_path, bad_batch=0):
  """A 2-step run on `n` devices at batch 8; then, if `bad_batch`, the error of a run at that
  batch size."""
  script = _DEVICES_SCRIPT.format(repo=str(REPO), workdir=str(tmp_path / f"d{n}"),
                                  bad_batch=bad_batch)
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device(tmp_path):
  one, eight = _run_devices(1, tmp_path), _run_devices(8, tmp_path, bad_batch=12)
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(one["params"], eight["params"], rtol=1e-4)
  assert "batch_size" in eight["error"] and "8" in eight["error"]


def test_launch_py_with_overrides(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, str(REPO / "launch.py"),
         "--config", str(REPO / "experiments" / "ddpm" / "digits.py") + ":smoke",
         "--workdir", workdir, "--config.train.num_steps=2", "--config.train.eval_every=0",
         ]
  out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600,
                       check=False, cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  assert checkpoint_steps(workdir) == [2]
  shutil.rmtree(workdir)


def test_model_state_is_checkpointed_only_when_present():
  import optax
  from jgen.train.state import TrainState
  tx = optax.sgd(0.1)
  params = {"w": jnp.ones(3)}
  plain = TrainState.create(params=params, tx=tx, rng=jax.random.key(0), ema_decay=0.9)
  assert "model_state" not in plain.checkpoint_items()
  stats = {"mean": jnp.zeros(3)}
  with_state = TrainState.create(params=params, tx=tx, rng=jax.random.key(0), ema_decay=0.9,
                                 model_state=stats)
  items = with_state.checkpoint_items()
  assert items["model_state"] == stats
  restored = plain.from_checkpoint_items({**items, "model_state": {"mean": jnp.ones(3)}})
  assert float(restored.model_state["mean"].sum()) == 3.0
