"""User mistakes: the JgenError family, the one-message command-line report, and the config
range checks at the boundary (before data or compile)."""

import os
import re
import subprocess
import sys

import pytest

from jgen import errors
from jgen.convert import common, files, lora, to_diffusers, unet
from jgen.data import sources
from jgen.export import ExportError
from jgen.metrics import weights
from jgen.train import checkpoint, init_from, run_record
from jgen.train.validate import check_ranges, validate_config
from tests.conftest import REPO, load_experiment, subprocess_env

# (class, its JgenError kind, the built-in it subclassed before the family existed)
_FAMILY = [
    (common.ConversionError, errors.ConversionError, ValueError),
    (unet.UNetConfigError, errors.ConversionError, ValueError),
    (files.UnknownFormatError, errors.ConversionError, ValueError),
    (lora.LoraFormatError, errors.ConversionError, ValueError),
    (to_diffusers.ExportError, errors.ConversionError, ValueError),
    (ExportError, errors.ConversionError, ValueError),
    (init_from.InitFromError, errors.InitFromError, ValueError),
    (run_record.RunRecordError, errors.CheckpointError, ValueError),
    (run_record.ConfigChangeError, errors.ConfigError, ValueError),
    (checkpoint.CheckpointError, errors.CheckpointError, RuntimeError),
    (sources.DatasetUnavailableError, errors.DataError, RuntimeError),
    (sources.EmptySourceError, errors.DataError, ValueError),
    (sources.CorruptImageError, errors.DataError, ValueError),
    (weights.InceptionWeightsNotFoundError, errors.DataError, FileNotFoundError),
    (weights.LPIPSWeightsNotFoundError, errors.DataError, FileNotFoundError),
]


@pytest.mark.parametrize("cls,kind,builtin", _FAMILY, ids=lambda x: getattr(x, "__name__", ""))
def test_every_user_error_is_a_jgen_error_and_keeps_its_builtin(cls, kind, builtin):
  assert issubclass(cls, kind) and issubclass(cls, errors.JgenError) and issubclass(cls, builtin)


def test_report_is_one_line_and_verbose_adds_the_traceback(capsys, monkeypatch):
  monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
  with pytest.raises(SystemExit) as exit_info, errors.reported("prog", verbose=False):
    raise errors.DataError("no images in /x: check the path")
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "prog: error: no images in /x: check the path\n"
  with pytest.raises(SystemExit), errors.reported("prog", verbose=True):
    raise errors.ConfigError("bad")
  err = capsys.readouterr().err
  assert "Traceback" in err and err.endswith("prog: error: bad\n")
  with pytest.raises(KeyError), errors.reported("prog"):  # a bug keeps its traceback
    raise KeyError("bug")
  assert not errors.verbose_requested([])
  monkeypatch.setenv(errors.VERBOSE_ENV, "1")
  assert errors.verbose_requested([])
  monkeypatch.setenv(errors.VERBOSE_ENV, "0")
  assert errors.verbose_requested(["--verbose"]) and not errors.verbose_requested([])


# ------------------------------------------------------------------------------ the validator


def test_shipped_configs_pass_and_each_field_out_of_range_is_named():
  config = load_experiment("ddpm/digits", "smoke")
  check_ranges(config)
  for field, value, accepted in [
      ("data.image_size", -3, "an integer >= 1"), ("data.batch_size", 0, "an integer >= 1"),
      ("data.channels", 2, "one of 1, 3"), ("optim.lr", -1e-4, "[0.0, inf)"),
      ("optim.b2", 1.0, "[0.0, 1.0)"), ("optim.name", "adamm", "one of 'adam'"),
      ("optim.schedule", "step", "one of 'constant'"), ("train.num_steps", -1, ">= 0"),
      ("train.ema_decay", 1.5, "[0.0, 1.0]"), ("train.log_every", 0, ">= 1"),
      ("model.dtype", "float16", "one of 'float32', 'bfloat16'"), ("mesh.fsdp", 0, ">= 1"),
      ("parallel", "vmap", "one of 'jit', 'pmap'"), ("eval.ppl_sampling", "mid", "'end'"),
      ("sample.batch_size", 0, ">= 1"), ("lora.rank", -1, ">= 0")]:
    bad = config.copy_and_resolve_references()
    block, _, key = field.rpartition(".")
    (bad[block] if block else bad)[key] = value
    with pytest.raises(errors.ConfigError) as info:
      check_ranges(bad)
    assert f"--config.{field}={value!r}: {field} must be" in str(info.value), field
    assert accepted in str(info.value), (field, str(info.value))


def test_probabilities_method_and_several_problems_at_once():
  config = load_experiment("ddpm/digits", "smoke")
  config.model.dropout = 1.5
  config.method = "diffusion.ddmp"
  config.data.image_size = -3
  with pytest.raises(errors.ConfigError) as info:
    check_ranges(config)
  message = str(info.value)
  assert "--config.model.dropout=1.5: model.dropout is a probability, in [0, 1]" in message
  assert "neither jgen.diffusion.ddmp nor diffusion.ddmp is a module" in message
  assert "data.image_size must be" in message
  assert "\n" not in message


def test_gan_discriminator_optimizer_follows_with_none_and_is_checked():
  config = load_experiment("gan/dcgan_digits", "smoke")
  check_ranges(config)  # optim_d's None fields follow optim
  config.optim_d.lr = -1.0
  with pytest.raises(errors.ConfigError, match=r"optim_d.lr must be a number in \[0.0, inf\)"):
    check_ranges(config)


def test_init_from_workdir_is_checked_at_the_boundary(tmp_path):
  config = load_experiment("ddpm/digits", "smoke")
  config.init_from.workdir = str(tmp_path / "nowhere")
  with pytest.raises(errors.InitFromError, match="has no checkpoints/ folder"):
    validate_config(config)
  (tmp_path / "nowhere" / "checkpoints").mkdir(parents=True)
  validate_config(config)


# ------------------------------------------------------------------------------ launch.py

# The model's own compiles (the jitted init, step, sampler, evaluation): a user mistake must
# stop before any of them (array constants such as a schedule's may compile before).
_MODEL_COMPILE = re.compile(r"Compiling (jit|pmap)\((flat|step|pstep|sample|evaluate|init|"
                            r"_all_finite)\)")


def _launch(tmp_path, *args):
  cmd = [sys.executable, "launch.py", "--config", "experiments/ddpm/digits.py:smoke",
         "--workdir", str(tmp_path / "run"), "--nocompilation_cache", *args]
  out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(JAX_LOG_COMPILES="1"),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-3000:]
  assert not _MODEL_COMPILE.search(out.stderr), out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith("jgen: error: ")]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0], out.stderr


@pytest.mark.parametrize("args,expected", [
    (["--mode=sample"], "no checkpoint found in .*; train first"),
    (["--config.data.source=folder:/nonexistent/data.zip"], "'/nonexistent/data.zip' does not "
     "exist. Local data is read with --config.data.source=folder:PATH"),
    (["--config.init_from.workdir=/nonexistent/run"], "init_from.workdir='/nonexistent/run' has "
     "no checkpoints/ folder"),
    (["--config.data.image_size=-3"], "--config.data.image_size=-3: data.image_size must be an "
     "integer >= 1"),
    (["--config.data.imag_size=3"], "names a field the config does not have: 'imag_size' Did you "
     "mean \"image_size\""),
    (["--config=experiments/nope.py:smoke"], "experiments/nope.py is not a file"),
], ids=["sample_without_checkpoint", "missing_data", "bad_init_from", "image_size", "typo",
        "missing_config_file"])
def test_launch_prints_one_message_and_exits_2(tmp_path, args, expected):
  line, stderr = _launch(tmp_path, *args)
  assert re.search(expected, line), line
  assert "Traceback" not in stderr


def test_launch_verbose_shows_the_traceback(tmp_path):
  line, stderr = _launch(tmp_path, "--mode=sample", "--verbose")
  assert "Traceback" in stderr and "CheckpointError" in stderr and "train first" in line


def test_launch_reports_a_jgen_error_of_the_config_file(tmp_path):
  path = tmp_path / "bad_variant.py"
  path.write_text("from jgen.errors import ConfigError\n\n\ndef get_config(arg=None):\n"
                  "  raise ConfigError(f'no variant {arg!r}; choose one of small, large')\n")
  cmd = [sys.executable, "launch.py", "--config", f"{path}:huge", "--workdir",
         str(tmp_path / "run")]
  out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.strip() == "jgen: error: no variant 'huge'; choose one of small, large"
  assert not os.path.exists(tmp_path / "run")
