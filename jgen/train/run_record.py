"""The run record: the resolved config and library versions of every start of a run.

`train` appends one entry to ``workdir/run_record.json`` each time it starts (fresh or
resumed), on the main process:

    [{"start": 0, "time": "2026-12-02T01:02:03+00:00", "step": 0,
      "versions": {"jgen": "0.1.0", "jax": "...", "flax": "...", "optax": "...",
                   "orbax-checkpoint": "..."},
      "config": {... config.to_dict(), tuples as lists ...}},
     ...]

Other runs read it to rebuild what a run trained: classifier guidance builds the guiding
classifier from the classifier run's recorded config (`latest_config`). Written and read with
`etils.epath`, so gs:// work directories work like local ones.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from typing import Any

import ml_collections
from etils import epath

from jgen import errors
from jgen.train.config import base_config

RECORD = "run_record.json"
_PACKAGES = ("jgen", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint")

__all__ = ["BLOCKING", "ConfigChangeError", "RECORD", "RunRecordError", "append_start",
           "check_resume", "config_changes", "latest_config", "read"]

# Config paths whose change on resume alters state shapes or the math of the run: a prefix
# ending in "." covers its whole block. Every other change (train.num_steps, log / eval /
# sample / checkpoint cadence, sample.*, eval.*, data.source ...) is allowed and logged.
BLOCKING = ("method", "seed", "model.", "diffusion.", "gan.", "classifier.", "data.image_size",
            "data.channels", "data.canvas", "data.batch_size", "optim.name", "optim.schedule",
            "optim.lr", "optim.warmup_steps", "optim.decay_from", "optim.decay_rate",
            "optim.b1", "optim.b2", "optim.rules", "bottleneck.", "loss.", "disc.",
            "pixelcnn.num_bins", "optim_d.", "lora.", "personalize.")


class RunRecordError(errors.CheckpointError, ValueError):
  """A work directory has no (readable) run record."""


class ConfigChangeError(errors.ConfigError):
  """A resumed run's config differs from the recorded one where it changes the run's math."""


def _versions() -> dict[str, str]:
  out = {}
  for name in _PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def _config_dict(config: Any) -> dict[str, Any]:
  """The config as plain JSON data (round-tripped: tuples become lists)."""
  data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(json.dumps(data, default=repr))


def read(workdir: str) -> list[dict[str, Any]]:
  """The entries of `workdir`'s run record ([] when it has none)."""
  path = epath.Path(workdir) / RECORD
  if not path.exists():
    return []
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise RunRecordError(f"{path} is not valid JSON ({e}); restore it from a backup or move "
                         "it away (the run then starts a new record)") from e
  if not isinstance(record, list):
    raise RunRecordError(f"{path} holds a {type(record).__name__}, expected a list of starts")
  return record


def append_start(workdir: str, config: Any, *, step: int) -> dict[str, Any]:
  """Appends this start (config, versions, the step it starts from) to the record.

  Returns:
    The entry written.
  """
  record = read(workdir)
  entry = {"start": len(record),
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "step": int(step), "versions": _versions(), "config": _config_dict(config)}
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  tmp = path / f"{RECORD}.tmp"
  tmp.write_text(json.dumps(record + [entry], indent=1, sort_keys=True))
  tmp.replace(path / RECORD)  # whole-file replace: a crash never leaves half a record
  return entry


def latest_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run's latest start, as a ConfigDict.

  Raises:
    RunRecordError: `workdir` has no run record (not a jgen run, or one trained before run
      records existed: train it again).
  """
  record = read(workdir)
  if not record:
    raise RunRecordError(
        f"{workdir} has no {RECORD}: it is not the work directory of a jgen run, or the run "
        "was trained before jgen wrote run records (train it again)")
  return ml_collections.ConfigDict(record[-1]["config"])


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _blocking(path: str) -> bool:
  return any(path == b or (b.endswith(".") and path.startswith(b)) for b in BLOCKING)


def config_changes(old: dict[str, Any], new: dict[str, Any]
                   ) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
  """`(blocking, allowed)`: every config path whose value differs between two config dicts, as
  (path, old, new) (a path absent on one side has the value "<absent>"), split by `BLOCKING`."""
  a, b = _flatten(old), _flatten(_config_dict(new))
  changed = [(k, a.get(k, "<absent>"), b.get(k, "<absent>"))
             for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
  # A field a later jgen added to the base config, at its default, is what the older run used.
  defaults = _flatten(_config_dict(base_config()))
  added = {k for k, o, n in changed if o == "<absent>" and k in defaults and n == defaults[k]}
  return ([c for c in changed if _blocking(c[0]) and c[0] not in added],
          [c for c in changed if not _blocking(c[0]) or c[0] in added])


def check_resume(workdir: str, config: Any, *, log: Any = None) -> None:
  """Before a resume: compares `config` with the run's latest recorded start.

  Raises:
    ConfigChangeError: a `BLOCKING` field changed and ``config.train.allow_config_change`` is
      not set. The message lists each field with its old and new value.
  """
  record = read(workdir)
  if not record:
    if log:
      log.warning("resuming %s, which has no %s (a run from before run records): the config "
                  "cannot be checked against the run's", workdir, RECORD)
    return
  blocking, allowed = config_changes(record[-1]["config"], config)
  for path, old, new in allowed:
    if log:
      log.info("config change on resume (allowed): %s: %r -> %r", path, old, new)
  if not blocking:
    return
  lines = "\n  ".join(f"{p}: {o!r} -> {n!r}" for p, o, n in blocking)
  if config.train.get("allow_config_change", False):
    if log:
      log.warning("config changes on resume accepted (train.allow_config_change):\n  %s", lines)
    return
  raise ConfigChangeError(
      f"resuming {workdir} (start {record[-1]['start']}, step {record[-1]['step']}) with a "
      f"config that changes the run ({len(blocking)} field(s)):\n  {lines}\n"
      "Use the run's config (its run_record.json), a new --workdir, or accept the change with "
      "--config.train.allow_config_change=True.")
