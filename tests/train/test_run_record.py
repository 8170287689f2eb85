"""The run record: one entry per start, the config round-trips, bad records are clear errors."""

import importlib.metadata
import json

import pytest

import jgen.run
from jgen.train import run_record
from tests.conftest import load_experiment


def test_every_train_start_appends_its_config(tmp_path, smoke_config):
  workdir = str(tmp_path / "run")
  jgen.run.main(smoke_config, workdir=workdir, mode="train")
  smoke_config.train.num_steps = 8  # a longer run resumes at step 6
  jgen.run.main(smoke_config, workdir=workdir, mode="train")
  record = json.loads((tmp_path / "run" / run_record.RECORD).read_text())
  assert [e["start"] for e in record] == [0, 1]
  assert [e["step"] for e in record] == [0, 6]
  assert [e["config"]["train"]["num_steps"] for e in record] == [6, 8]
  assert record[0]["versions"]["jax"] == importlib.metadata.version("jax")
  latest = run_record.latest_config(workdir)
  # Tuples come back as lists; everything else as the config held it.
  assert latest.model.ch_mult == list(smoke_config.model.ch_mult)
  assert json.dumps(latest.to_dict(), sort_keys=True) == json.dumps(
      json.loads(json.dumps(smoke_config.to_dict())), sort_keys=True)


def test_missing_and_corrupt_records(tmp_path):
  assert run_record.read(str(tmp_path)) == []
  with pytest.raises(run_record.RunRecordError, match="train it again"):
    run_record.latest_config(str(tmp_path))
  (tmp_path / run_record.RECORD).write_text("{not json")
  with pytest.raises(run_record.RunRecordError, match="not valid JSON"):
    run_record.read(str(tmp_path))
  (tmp_path / run_record.RECORD).write_text("{}")
  with pytest.raises(run_record.RunRecordError, match="expected a list"):
    run_record.read(str(tmp_path))


def test_append_keeps_earlier_entries(tmp_path):
  config = load_experiment("ddpm/digits", "smoke")
  run_record.append_start(str(tmp_path), config, step=0)
  config.seed = 7
  entry = run_record.append_start(str(tmp_path), config, step=3)
  assert entry["start"] == 1
  assert [e["config"]["seed"] for e in run_record.read(str(tmp_path))] == [0, 7]
  assert not (tmp_path / f"{run_record.RECORD}.tmp").exists()


def test_resume_with_a_changed_config_is_an_error_that_lists_the_fields(tmp_path, smoke_config):
  workdir = str(tmp_path / "run")
  jgen.run.main(smoke_config, workdir=workdir, mode="train")
  changed = load_experiment("ddpm/digits", "smoke")
  changed.train.num_steps = 8
  changed.optim.lr = 1e-2
  changed.diffusion.beta_end = 0.03
  changed.sample.steps = 3          # sampling settings may change freely
  with pytest.raises(run_record.ConfigChangeError) as err:
    jgen.run.main(changed, workdir=workdir, mode="train")
  message = str(err.value)
  assert "optim.lr: 0.002 -> 0.01" in message and "diffusion.beta_end: 0.02 -> 0.03" in message
  assert "2 field(s)" in message and "allow_config_change" in message
  assert "sample.steps" not in message and "num_steps" not in message
  assert len(run_record.read(workdir)) == 1  # nothing was started
  changed.train.allow_config_change = True
  state = jgen.run.main(changed, workdir=workdir, mode="train")
  assert int(state.step) == 8 and len(run_record.read(workdir)) == 2


def test_config_changes_splits_blocking_from_allowed():
  old = {"model": {"ch": 8}, "train": {"num_steps": 6}, "optim": {"lr": 0.1, "rules": []},
         "seed": 0}
  new = {"model": {"ch": 16, "extra": 1}, "train": {"num_steps": 9}, "optim": {"lr": 0.1,
         "rules": []}, "seed": 0}
  blocking, allowed = run_record.config_changes(old, new)
  assert blocking == [("model.ch", 8, 16), ("model.extra", "<absent>", 1)]
  assert allowed == [("train.num_steps", 6, 9)]


def test_a_field_added_to_the_base_later_at_its_default_is_not_a_change(smoke_config):
  from jgen.train import run_record as rr
  old = rr._config_dict(smoke_config)  # pylint: disable=protected-access
  del old["optim"]["decay_rate"]       # a run recorded before optim.decay_rate existed
  blocking, allowed = rr.config_changes(old, smoke_config)
  assert not blocking and [p for p, _, _ in allowed] == ["optim.decay_rate"]
  smoke_config.optim.decay_rate = 0.9  # but not at another value
  blocking, _ = rr.config_changes(old, smoke_config)
  assert [p for p, _, _ in blocking] == ["optim.decay_rate"]
