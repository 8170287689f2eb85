"""Start a run from another run's checkpoint: frozen arrays or pretrained parameters.

`config.init_from` names one load (``workdir``, ``step`` ...) or holds named loads as
sub-dicts (``config.init_from.teacher.workdir=...``). One load:

* ``workdir``: the other run's work directory (its ``checkpoints/`` are read; never written).
* ``step``: which checkpoint (None: the latest).
* ``source``: the tree to take: an EMA name (default ``"ema"``: the parameters the run samples
  with, ``params`` with that EMA's leaves put in; a run without EMAs gives its ``params``),
  ``"params"``, ``"model_state"`` or ``"frozen"``.
* ``subtree``: a '/'-path inside it ("" = all, "generator" = the generator of a GAN run).
* ``into``: where it goes in the new state: ``"frozen/<name>"`` (the arrays become
  ``state.frozen[name]``; the method declares their structure in ``init``), ``"params"`` or
  ``"params/<path>"`` (fine-tuning: the loaded leaves replace the initial ones there).
* ``match``: a regex over the loaded tree's paths (``re.fullmatch``): only matching leaves are
  loaded into ``params`` (".*" = all).

Every loaded leaf must exist in the target with the same shape and dtype; all mismatches are
listed in one error, raised before anything compiles. The run records each load (path, step,
a sha256 content fingerprint) in ``workdir/init_from.json``. Frozen arrays are stored in every
checkpoint of the new run (so a resume needs neither the other run nor its checkpoint still
being kept: ``max_to_keep`` may have deleted it), and a resume checks them against the
recorded fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jgen.errors import InitFromError
from jgen.train import rules as rules_lib

PyTree = Any

__all__ = ["InitFrom", "InitFromError", "apply_loads", "check_loads", "checkpoints_dir",
           "fingerprint", "frozen_load", "fit_problems", "load", "parse_init_from",
           "raise_problems", "read_record", "subtree", "verify_frozen", "write_record"]

RECORD = "init_from.json"
SOURCES_FIXED = ("params", "model_state", "frozen")


@dataclasses.dataclass(frozen=True)
class InitFrom:
  """One load (see the module docstring)."""

  workdir: str
  step: int | None = None
  source: str = "ema"
  subtree: str = ""
  into: str = "params"
  match: str = ".*"
  name: str = "init_from"

  def __post_init__(self):
    head, _, rest = self.into.partition("/")
    if head not in ("params", "frozen") or (head == "frozen" and not rest):
      raise InitFromError(f"init_from.into={self.into!r}: use 'params', 'params/<path>' or "
                          "'frozen/<name>'")


def parse_init_from(config: Any) -> list[InitFrom]:
  """The loads of `config.init_from` (empty without one or with an empty `workdir`)."""
  block = config.get("init_from") if hasattr(config, "get") else None
  if not block:
    return []
  fields = {f.name for f in dataclasses.fields(InitFrom)}

  def one(d: Mapping[str, Any], name: str) -> InitFrom | None:
    values = {k: v for k, v in d.items() if k in fields and not isinstance(v, Mapping)}
    unknown = [k for k, v in d.items() if k not in fields and not isinstance(v, Mapping)]
    if unknown:
      raise InitFromError(f"init_from{'.' + name if name != 'init_from' else ''}: unknown "
                          f"field(s) {unknown}; known: {sorted(fields - {'name'})}")
    if not values.get("workdir"):
      return None
    return InitFrom(**{**values, "name": name})

  block = block.to_dict() if hasattr(block, "to_dict") else dict(block)
  loads = [one(block, "init_from")]
  loads += [one(v, k) for k, v in block.items() if isinstance(v, Mapping)]
  return [x for x in loads if x is not None]


def frozen_load(config: Any, name: str, *, needs: str, hint: str = "") -> InitFrom:
  """The load of `config.init_from` that fills ``state.frozen[name]``: the run a method is built
  on (a teacher, a first stage), whose record and weights it reads before compiling.

  Args:
    config: the experiment config.
    name: the frozen entry (the load's ``into`` is ``frozen/<name>``).
    needs: the start of the error: what the method needs, e.g. "diffusion.ldm trains on the
      latents of a trained first stage: set --config.init_from.workdir=<an
      autoencoder.first_stage run's workdir>".
    hint: more of the error after the ``into`` it names (another field, which config sets it).

  Raises:
    InitFromError: no load goes into ``frozen/<name>``; the error lists the loads found.
  """
  loads = parse_init_from(config)
  for spec in loads:
    if spec.into == f"frozen/{name}":
      return spec
  found = [f"{s.name}: into={s.into!r}" for s in loads]
  raise InitFromError(f"{needs} with init_from.into='frozen/{name}'{hint}"
                   + (f"; found {found}" if found else "; init_from.workdir is empty"))


def checkpoints_dir(workdir: str) -> epath.Path:
  """``workdir/checkpoints``; raises InitFromError when it is not there."""
  path = epath.Path(workdir) / "checkpoints"
  if not path.exists():
    raise InitFromError(f"init_from.workdir={workdir!r} has no checkpoints/ folder: point it "
                        "at the work directory of a trained run")
  return path


def _manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(checkpoints_dir(workdir),
                               item_handlers=ocp.StandardCheckpointHandler())


def subtree(tree: Mapping[str, Any], path: str, what: str) -> Any:
  """The node at the '/'-path `path` of a nested mapping ('' = `tree`).

  Raises:
    InitFromError: a key is missing (the message starts with `what`).
  """
  node = tree
  for key in filter(None, path.split("/")):
    if not isinstance(node, Mapping) or key not in node:
      have = sorted(node) if isinstance(node, Mapping) else type(node).__name__
      raise InitFromError(f"{what}: no {key!r} at {path!r} (found {have})")
    node = node[key]
  return node


def load(spec: InitFrom) -> tuple[PyTree, int]:
  """`(tree of numpy arrays, step)` of one load, read on the host.

  The whole checkpoint is read (Orbax restores the tree its metadata describes) and the
  selected part kept.

  Raises:
    InitFromError: no such run, step, source or subtree.
  """
  manager = _manager(spec.workdir)
  try:
    step = manager.latest_step() if spec.step is None else int(spec.step)
    if step is None or step not in manager.all_steps():
      raise InitFromError(f"init_from: no checkpoint step {spec.step} in {spec.workdir} "
                          f"(steps: {list(manager.all_steps())})")
    meta = manager.item_metadata(step)
    meta = getattr(meta, "tree", meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    template = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            dict(meta))
    items = manager.restore(step, args=ocp.args.StandardRestore(template))
  finally:
    manager.close()
  items = jax.tree.map(np.asarray, items)
  what = f"init_from {spec.workdir} step {step}"
  if spec.source in SOURCES_FIXED:
    tree = items.get(spec.source, {})
  else:
    emas = items.get("emas", {})
    if spec.source in emas:
      tree = rules_lib.merge(items["params"], emas[spec.source])
    elif not emas and spec.source == "ema":
      tree = items["params"]
    else:
      raise InitFromError(f"{what}: no EMA {spec.source!r} (EMAs: {sorted(emas)}); set "
                          f"init_from.source to one of those or to {SOURCES_FIXED}")
  tree = subtree(tree, spec.subtree, what)
  if not isinstance(tree, Mapping):
    return tree, step
  tree = rules_lib.select(tree, lambda k: re.fullmatch(spec.match, k) is not None)
  if not tree:
    raise InitFromError(f"{what}: init_from.match={spec.match!r} selects no leaf of "
                        f"{spec.source}/{spec.subtree}")
  return tree, step


def fingerprint(tree: PyTree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes, in sorted path order."""
  h = hashlib.sha256()
  items = rules_lib.flat(tree) if isinstance(tree, Mapping) else {"": tree}
  for path in sorted(items):
    x = np.ascontiguousarray(np.asarray(items[path]))
    h.update(f"{path}|{x.dtype.str}|{x.shape}|".encode())
    h.update(x.tobytes())
  return h.hexdigest()


def _target(spec: InitFrom) -> tuple[str, str]:
  head, _, rest = spec.into.partition("/")
  return head, rest


def fit_problems(target: PyTree, tree: PyTree, *, where: str, what: str,
                 require_all: bool) -> list[str]:
  """Each leaf of the loaded `tree` that is absent in `target` or differs in shape or dtype
  (and, with `require_all`, each target leaf the tree lacks), as messages under `where`."""
  want = rules_lib.flat(target) if isinstance(target, Mapping) else {"": target}
  have = rules_lib.flat(tree) if isinstance(tree, Mapping) else {"": tree}
  problems = []
  for path, x in sorted(have.items()):
    at = f"{where}/{path}".rstrip("/")
    if path not in want:
      problems.append(f"{at}: in the checkpoint {x.shape} {x.dtype}, absent in this model")
    elif tuple(want[path].shape) != tuple(x.shape) or want[path].dtype != x.dtype:
      problems.append(f"{at}: checkpoint {tuple(x.shape)} {x.dtype} vs model "
                      f"{tuple(want[path].shape)} {want[path].dtype}")
  if require_all:
    for path in sorted(set(want) - set(have)):
      problems.append(f"{where}/{path}: the model needs it, the checkpoint ({what}) has no "
                      "such leaf")
  return problems


def raise_problems(problems: list[str], *, what: str = "init_from") -> None:
  """One `InitFromError` listing every problem (nothing when there are none)."""
  if problems:
    raise InitFromError(f"{what} does not fit this model ({len(problems)} problem(s)):\n  "
                        + "\n  ".join(problems)
                        + "\nLoad a matching subtree (init_from.subtree / init_from.match) or "
                        "change the model config to the checkpoint's.")


def check_loads(abstract_state: Any, loads: list[tuple[InitFrom, PyTree]]) -> None:
  """Raises one `InitFromError` listing every loaded path whose target is missing or differs in
  shape or dtype (runs on shapes only, before any compile)."""
  problems = []
  for spec, tree in loads:
    head, rest = _target(spec)
    root = abstract_state.params if head == "params" else abstract_state.frozen
    try:
      target = subtree(root, rest, f"init_from.into={spec.into!r}")
    except InitFromError as e:
      problems.append(str(e))
      continue
    problems += fit_problems(target, tree, where=spec.into,
                             what=f"{spec.source}/{spec.subtree}", require_all=head == "frozen")
  raise_problems(problems)


def apply_loads(state: Any, loads: list[tuple[InitFrom, PyTree]]) -> Any:
  """`state` with each loaded tree put in its `into` place (inside jit: loads are arguments)."""
  params, frozen = state.params, state.frozen
  for spec, tree in loads:
    head, rest = _target(spec)
    placed = tree
    for key in reversed([k for k in rest.split("/") if k]):
      placed = {key: placed}
    if head == "params":
      params = rules_lib.merge(params, placed)
    else:
      frozen = rules_lib.merge(frozen, placed)
  return state.replace(params=params, frozen=frozen)


def write_record(workdir: str, loads: list[tuple[InitFrom, PyTree]], steps: list[int]) -> None:
  """Writes `workdir/init_from.json`: each load's fields, step and fingerprint."""
  record = [{**dataclasses.asdict(spec), "step": step, "fingerprint": fingerprint(tree),
             "num_arrays": len(jax.tree.leaves(tree))}
            for (spec, tree), step in zip(loads, steps)]
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))


def read_record(workdir: str) -> list[dict[str, Any]]:
  """The loads recorded in `workdir/init_from.json` ([] without one)."""
  path = epath.Path(workdir) / RECORD
  return json.loads(path.read_text()) if path.exists() else []


def verify_frozen(workdir: str, frozen: PyTree) -> None:
  """Checks restored frozen arrays against the fingerprints recorded at the run's start.

  Raises:
    InitFromError: a frozen subtree's content differs from what was loaded.
  """
  for entry in read_record(workdir):
    head, _, rest = entry["into"].partition("/")
    if head != "frozen":
      continue
    got = fingerprint(jax.device_get(subtree(frozen, rest, "restored frozen arrays")))
    if got != entry["fingerprint"]:
      raise InitFromError(
          f"the frozen arrays {entry['into']} restored from {workdir} differ from those loaded "
          f"at the run's start from {entry['workdir']} step {entry['step']} (fingerprint "
          f"{got[:12]} vs {entry['fingerprint'][:12]}): the checkpoint is corrupt; move its "
          "step directory away to resume from an earlier one")
