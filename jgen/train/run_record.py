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

RECORD = "run_record.json"
_PACKAGES = ("jgen", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint")

__all__ = ["RECORD", "RunRecordError", "append_start", "latest_config", "read"]


class RunRecordError(ValueError):
  """A work directory has no (readable) run record."""


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
