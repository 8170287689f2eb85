"""init_from: a frozen VQ-VAE under a second method, fine-tuning with rules, clear errors."""

import json
import os

import jax
import numpy as np
import pytest

import jgen.data
import jgen.run
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train import rules as rules_lib
from tests.conftest import load_experiment


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _size(tree):
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory):
  """A tiny trained VQ-VAE (stage one)."""
  workdir = str(tmp_path_factory.mktemp("vqvae"))
  config = load_experiment("autoencoder/vqvae_digits", "smoke")
  config.train.num_steps = 4
  config.train.checkpoint_every = 4
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


def _stage_two(vqvae_workdir):
  config = load_experiment("autoencoder/vqvae_digits", "smoke")
  config.method = "tests.train.latent_method"
  config.init_from.workdir = vqvae_workdir
  config.init_from.into = "frozen/autoencoder"
  config.train.num_steps = 6
  config.train.checkpoint_every = 3
  config.train.eval_every = 0
  return config


def test_frozen_autoencoder_two_stages(tmp_path, vqvae_run, monkeypatch):
  config = _stage_two(vqvae_run)
  loaded, step = init_from_lib.load(init_from_lib.InitFrom(vqvae_run))
  assert step == 4
  straight = jgen.run.main(config, workdir=str(tmp_path / "a"))

  # The frozen arrays are the trained VQ-VAE's EMA parameters, bitwise, and stay so.
  for a, b in zip(_leaves(straight.frozen["autoencoder"]), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(a, b)
  # No optimizer state or EMA for them: Adam keeps 2 moments of the denoiser only.
  assert _size(straight.opt_state) == 2 * _size(straight.params) + 2  # + two step counters
  assert set(straight.emas["ema"]) == {"denoiser"}
  record = json.loads((tmp_path / "a" / "init_from.json").read_text())
  assert record[0]["into"] == "frozen/autoencoder" and record[0]["step"] == 4
  assert record[0]["fingerprint"] == init_from_lib.fingerprint(loaded)

  # Arguments of the compiled step, not constants: closing over them grows the program.
  method = load_method(config)
  batch = jgen.data.shard_batch(
      {"image": np.zeros((config.data.batch_size, 16, 16, 1), np.float32),
       "label": np.zeros((config.data.batch_size,), np.int32)},
      jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  step_fn = lambda s, b: method.train_step(s, b, s.step_rng())
  as_args = jax.jit(step_fn).lower(straight, batch).as_text()
  frozen = straight.frozen
  closed = jax.jit(lambda s, b: step_fn(s.replace(frozen=frozen), b)).lower(
      straight.replace(frozen={}), batch).as_text()
  assert len(closed) > len(as_args) + 4 * _size(frozen)
  n_args = len(jax.tree.leaves((straight, batch)))
  assert as_args.count("%arg") >= n_args

  # Kill during step 5 (after the step-3 checkpoint), resume: bitwise equal to straight.
  real_iterate = jgen.data.iterate

  def killed_after_four(ds, start, **kw):
    it = real_iterate(ds, start, **kw)
    for _ in range(4):
      yield next(it)
    raise KeyboardInterrupt

  workdir = str(tmp_path / "b")
  monkeypatch.setattr(jgen.data, "iterate", killed_after_four)
  with pytest.raises(KeyboardInterrupt):
    jgen.run.main(config, workdir=workdir)
  monkeypatch.setattr(jgen.data, "iterate", real_iterate)
  resumed = jgen.run.main(config, workdir=workdir)
  for a, b in zip(_leaves(straight.checkpoint_items()), _leaves(resumed.checkpoint_items()),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_tampered_frozen_record_is_detected(tmp_path, vqvae_run):
  config = _stage_two(vqvae_run)
  config.train.num_steps = 3
  workdir = tmp_path / "run"
  jgen.run.main(config, workdir=str(workdir))
  record = json.loads((workdir / "init_from.json").read_text())
  record[0]["fingerprint"] = "0" * 64
  (workdir / "init_from.json").write_text(json.dumps(record))
  config.train.num_steps = 4
  with pytest.raises(init_from_lib.InitFromError, match="differ"):
    jgen.run.main(config, workdir=str(workdir))


def test_fine_tune_with_rules(tmp_path):
  base = load_experiment("ddpm/digits", "smoke")
  base.train.num_steps = 2
  base.train.eval_every = 0
  jgen.run.main(base, workdir=str(tmp_path / "base"))
  pretrained, _ = init_from_lib.load(init_from_lib.InitFrom(str(tmp_path / "base")))

  tune = load_experiment("ddpm/digits", "smoke")
  tune.train.num_steps = 2
  tune.train.eval_every = 0
  tune.init_from.workdir = str(tmp_path / "base")
  tune.optim.rules = ((".*conv_out.*", 1.0), (".*", "frozen"))
  state = jgen.run.main(tune, workdir=str(tmp_path / "tune"))
  before, after = rules_lib.flat(pretrained), rules_lib.flat(state.params)
  changed = {k for k in before if not np.array_equal(before[k], np.asarray(after[k]))}
  trainable = {k for k in before if "conv_out" in k}
  assert trainable and changed and changed <= trainable
  for k in set(before) - trainable:
    np.testing.assert_array_equal(before[k], np.asarray(after[k]))
  assert set(rules_lib.flat(state.opt_state[1][0].mu)) == trainable
  assert set(rules_lib.flat(state.emas["ema"])) == trainable


def test_shape_mismatch_lists_every_path_before_compiling(tmp_path):
  base = load_experiment("ddpm/digits", "smoke")
  base.train.num_steps = 1
  base.train.eval_every = 0
  jgen.run.main(base, workdir=str(tmp_path / "base"))
  wider = load_experiment("ddpm/digits", "smoke")
  wider.model.ch = base.model.ch * 2
  wider.init_from.workdir = str(tmp_path / "base")
  with pytest.raises(init_from_lib.InitFromError, match=r"problem\(s\)") as e:
    jgen.run.main(wider, workdir=str(tmp_path / "wider"))
  lines = [l for l in str(e.value).splitlines() if "checkpoint (" in l]
  assert len(lines) > 5 and all(" vs model " in l for l in lines)
  assert not os.path.exists(tmp_path / "wider" / "checkpoints" / "1")


def test_bad_init_from_specs(tmp_path):
  with pytest.raises(init_from_lib.InitFromError, match="no checkpoints"):
    init_from_lib.load(init_from_lib.InitFrom(str(tmp_path)))
  with pytest.raises(init_from_lib.InitFromError, match="frozen/<name>"):
    init_from_lib.InitFrom(str(tmp_path), into="frozen")
  config = load_experiment("ddpm/digits", "smoke")
  config.init_from.workdir = "/x"
  config.init_from.into = "frozen/teacher"
  (spec,) = init_from_lib.parse_init_from(config)
  assert spec.workdir == "/x" and spec.into == "frozen/teacher"
