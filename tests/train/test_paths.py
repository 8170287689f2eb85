"""Every loop write goes through etils.epath (a gs:// work directory, faked without network by
`epath.testing.mock_epath`), and bad work directories / splits / eval batches fail clearly."""

import os

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

import jgen.run
from jgen.train import inputs, loop, run_record
from jgen.train.writers import MetricWriter, save_image_grid, save_json, save_npz

BUCKET = "gs://jgen-test-bucket/run"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """gs://BUCKET/... lands in tmp_path/gcs/BUCKET/...; the test runs in an empty cwd, so a
  write that bypasses epath would show up as a local folder named 'gs:'."""
  root = tmp_path / "gcs"
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  opened = []

  def local(path):
    path = os.fspath(path)
    if path.startswith("gs://"):
      opened.append(path)
      return str(root / path[len("gs://"):])
    return path

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(local(path), local(dst), *args, **kwargs)

  def glob(fn, pattern):
    return [p.replace(str(root) + "/", "gs://") for p in fn(local(pattern))]

  def listdir(fn, path):
    return fn(local(path))

  with epath_testing.mock_epath(open=one, exists=one, isdir=one, makedirs=one, mkdir=one,
                                remove=one, rmtree=one, stat=one, listdir=listdir, glob=glob,
                                rename=two, replace=two, copy=two):
    yield root / BUCKET[len("gs://"):], opened
  assert not os.path.exists(cwd / "gs:"), "a write bypassed epath"


def test_png_npz_json_run_record_and_events_go_to_gs(fake_gcs, smoke_config):
  local, opened = fake_gcs
  images = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1)
  save_image_grid(images, f"{BUCKET}/samples/grid.png", ncol=2)
  save_npz(f"{BUCKET}/samples/s.npz", images=np.arange(6, dtype=np.uint8))
  save_json(f"{BUCKET}/eval_step3.json", {"step": 3, "loss": 0.5})
  loop.check_writable(BUCKET)
  run_record.append_start(BUCKET, smoke_config, step=0)
  writer = MetricWriter(BUCKET)
  writer.write_scalars(1, {"train/loss": 0.25})
  writer.close()

  assert (local / "samples" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  np.testing.assert_array_equal(np.load(local / "samples" / "s.npz")["images"], np.arange(6))
  assert '"loss": 0.5' in (local / "eval_step3.json").read_text()
  assert run_record.read(BUCKET)[0]["config"]["method"] == smoke_config.method
  events = [p for p in os.listdir(local) if p.startswith("events.out.tfevents")]
  assert len(events) == 1 and (local / events[0]).stat().st_size > 0
  assert all(p.startswith(BUCKET) for p in opened)


def test_unwritable_workdir_fails_before_data(tmp_path, smoke_config, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  monkeypatch.setattr(inputs, "load_data", lambda *a, **k: pytest.fail("data was loaded"))
  with pytest.raises(ValueError, match="not writable.*--workdir"):
    jgen.run.main(smoke_config, workdir=str(blocker / "run"))


def test_read_only_bucket_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)

  def refuse(fn, path, mode="r", *a, **k):
    raise PermissionError(f"403 Forbidden: {path}")

  def exists(fn, path, **k):
    return None
  with epath_testing.mock_epath(open=refuse, mkdir=exists, makedirs=exists):
    with pytest.raises(ValueError, match="gs://jgen-test-bucket/run is not writable"):
      loop.check_writable(BUCKET)


def test_empty_split_names_its_source(tmp_path, smoke_config):
  path = tmp_path / "empty.npz"
  np.savez(path, images=np.zeros((0, 8, 8, 1), np.uint8))
  smoke_config.data.source = f"npz:{path}"
  with pytest.raises(ValueError,
                     match=f"npz:{path} split 'train' has no images.*--config.data.split"):
    jgen.run.main(smoke_config, workdir=str(tmp_path / "run"))


def test_eval_checks_batch_divisibility(tmp_path, smoke_config):
  workdir = str(tmp_path / "run")
  jgen.run.main(smoke_config, workdir=workdir)
  smoke_config.data.batch_size = 0
  with pytest.raises(ValueError, match="batch_size"):
    jgen.run.main(smoke_config, workdir=workdir, mode="eval")
  assert epath.Path(workdir, "checkpoints").exists()
