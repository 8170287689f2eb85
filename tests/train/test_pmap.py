"""`config.parallel = "pmap"`: the same step under jax.pmap matches the jit path on 8 simulated
devices (a deterministic method: the autoencoder), resumes bitwise, and trains a stochastic
method (the DDPM) with the gradients averaged over the replicas."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jgen.train import parallel
from tests.conftest import REPO, subprocess_env


def test_replica_mean_is_the_identity_under_jit_and_the_mean_under_pmap():
  x = {"w": jnp.arange(3.0)}
  assert parallel.replica_mean(x) is x

  def f(v):
    with parallel.replica_axis():
      return parallel.replica_mean(v)

  n = jax.local_device_count()
  values = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  out = jax.pmap(f, axis_name=parallel.AXIS)(values)
  np.testing.assert_allclose(np.asarray(out), np.broadcast_to(values.mean(0), (n, 2)))


def test_split_batch_and_mode_errors():
  out = parallel.split_batch({"image": np.zeros((8, 3))}, 4)
  assert out["image"].shape == (4, 2, 3)
  with pytest.raises(ValueError, match="does not split over its 3 local devices"):
    parallel.split_batch({"image": np.zeros((8, 3))}, 3)
  c = ml_collections.ConfigDict({"parallel": "pmap", "mesh": {"fsdp": 2}})
  with pytest.raises(ValueError, match="cannot shard it"):
    parallel.mode_from_config(c)
  c = ml_collections.ConfigDict({"parallel": "vmap", "mesh": {"fsdp": 1}})
  with pytest.raises(ValueError, match=r"parallel='vmap': use one of \('jit', 'pmap'\)"):
    parallel.mode_from_config(c)


_SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {repo!r})
import jgen.run
from tests.conftest import load_experiment

def run(name, mode, workdir, steps, checkpoint_every=2):
  c = load_experiment(name, "smoke")
  c.parallel = mode
  c.data.batch_size = 16
  c.train.num_steps = steps
  c.train.checkpoint_every = checkpoint_every
  c.train.eval_every = 0
  c.train.sample_every = 0
  state = jgen.run.main(c, workdir=workdir, compilation_cache=False)
  return [np.asarray(x, np.float64).ravel().tolist() for x in jax.tree.leaves(state.params)]

root = {root!r}
out = {{"devices": jax.device_count()}}
if {ddpm}:  # a stochastic method, started under jit and resumed under pmap
  before = run("ddpm/digits", "jit", root + "/ddpm", 2)
  after = run("ddpm/digits", "pmap", root + "/ddpm", 4)
  out["ddpm_moved"] = max(abs(a - b) for x, y in zip(before, after) for a, b in zip(x, y))
else:
  out["jit"] = run("autoencoder/ae_digits", "jit", root + "/jit", 4)
  out["pmap"] = run("autoencoder/ae_digits", "pmap", root + "/pmap", 4)
  run("autoencoder/ae_digits", "pmap", root + "/resumed", 2)
  out["resumed"] = run("autoencoder/ae_digits", "pmap", root + "/resumed", 4)
print(json.dumps(out))
"""


def _run(tmp_path, *, ddpm: bool):
  script = _SCRIPT.format(repo=str(REPO), root=str(tmp_path), ddpm=ddpm)
  env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(pmap)" in proc.stderr  # the loop logs its mode
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  return out


def test_pmap_matches_jit_on_8_devices_and_resumes_bitwise(tmp_path):
  out = _run(tmp_path, ddpm=False)
  for a, b in zip(out["jit"], out["pmap"], strict=True):
    # The pmean of 8 per-device mean gradients against one mean over the global batch: the
    # same number summed in another order (differences ~1e-6 after 4 Adam steps).
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)
  for a, b in zip(out["pmap"], out["resumed"], strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # two DDPM compiles, about a minute
def test_a_jit_run_resumes_under_pmap(tmp_path):
  out = _run(tmp_path, ddpm=True)
  assert 0 < out["ddpm_moved"] < 1.0  # trains on, finitely
