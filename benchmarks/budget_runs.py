"""Runs of launch.py under a wall-time budget, and their results: shared by the real-data tables
(`fashion_mnist.py`, `cifar_ladder.py`).

* `launch`: one `launch.py` invocation; a training run still going at the budget gets SIGTERM,
  which the loop answers by finishing its step, saving it and exiting with code 75
  (`jgen.train.preemption.EXIT_PREEMPTED`), so no run trains longer than the budget and the
  step it reached is kept.
* `set_aside`: a retrained model starts from a fresh work directory; the old one is renamed,
  never deleted (and never resumed by mistake: a kept checkpoint would make launch.py resume).
* `Results`: a JSON file of per-model records, written atomically after every stage, so an
  interrupted table resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from jgen.train.preemption import EXIT_PREEMPTED

REPO = pathlib.Path(__file__).resolve().parents[1]


def launch(config: str, workdir: str, mode: str, overrides: Sequence[str], *,
           budget_s: float | None = None) -> float:
  """Runs `launch.py --config=config --workdir=workdir --mode=mode --config.<o>...` from the
  repository root and returns its wall time in seconds (SIGTERM at `budget_s`, if given).

  Raises:
    subprocess.CalledProcessError: the run failed (an exit code other than 0 and 75).
  """
  cmd = [sys.executable, str(REPO / "launch.py"), f"--config={REPO / config}",
         f"--workdir={workdir}", f"--mode={mode}", *(f"--config.{o}" for o in overrides)]
  print("+", " ".join(cmd), flush=True)
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO)
  try:
    rc = proc.wait(timeout=budget_s)
  except subprocess.TimeoutExpired:
    print(f"{workdir}: budget of {budget_s / 60:.1f} minutes reached: SIGTERM", flush=True)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait()
  if rc not in (0, EXIT_PREEMPTED):
    raise subprocess.CalledProcessError(rc, cmd)
  return time.perf_counter() - t0


def set_aside(workdir: str) -> str | None:
  """Renames an existing `workdir` to `workdir.replaced-<unix time>` (returned; None if there
  was none), so that a retrained model starts fresh and the old run is kept."""
  if not os.path.exists(workdir):
    return None
  dest = f"{workdir.rstrip('/')}.replaced-{int(time.time())}"
  os.replace(workdir, dest)
  print(f"moved the previous run {workdir} to {dest}", flush=True)
  return dest


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the run's kept checkpoints (orbax step directories), ascending."""
  folder = pathlib.Path(workdir, "checkpoints")
  if not folder.is_dir():
    raise FileNotFoundError(f"no checkpoints folder in {workdir}: train first")
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def eval_record(workdir: str, step: int | None = None) -> dict:
  """`eval_step<step>.json` of a run (None: the newest)."""
  files = {int(p.stem.removeprefix("eval_step")): p
           for p in pathlib.Path(workdir).glob("eval_step*.json")}
  if not files:
    raise FileNotFoundError(f"no eval_step*.json in {workdir}: run --mode=eval first")
  key = max(files) if step is None else step
  if key not in files:
    raise FileNotFoundError(f"no eval_step{key}.json in {workdir} (have {sorted(files)})")
  return json.loads(files[key].read_text())


class Results:
  """`{model: record}` kept in a JSON file, saved atomically."""

  def __init__(self, path: str):
    self.path = path
    self.data: dict = {}
    if os.path.exists(path):
      with open(path) as f:
        self.data = json.load(f)

  def record(self, name: str) -> dict:
    return self.data.setdefault(name, {})

  def save(self) -> None:
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    with open(self.path + ".tmp", "w") as f:
      json.dump(self.data, f, indent=1)
    os.replace(self.path + ".tmp", self.path)


def selected(models: Sequence[str] | None, known: Sequence[str]) -> list[str]:
  """The --models a table runs (all `known` when None), in the order given.

  Raises:
    ValueError: a name that is not in `known`.
  """
  names = list(models or known)
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise ValueError(f"unknown --models {unknown}; choose from {sorted(known)}")
  return names


def copy_newest_grid(workdir: str, dest: str) -> bool:
  """Copies the run's newest `samples/step*.png` to `dest`; False when it has none."""
  grids = sorted(pathlib.Path(workdir, "samples").glob("step*.png"), key=os.path.getmtime)
  if grids:
    shutil.copyfile(grids[-1], dest)
  return bool(grids)


def fmt(value, digits: int = 2) -> str:
  return "-" if value is None else f"{value:.{digits}f}"
