"""Range checks of an experiment config's common fields, at the boundary, before data or compile.

`validate_config` reads the spine's blocks (`data`, `train`, `optim` and a GAN's `optim_d`,
`sample`, `eval`, `mesh`, `lora`, `model.dtype`, `parallel`, `method`) and every probability
anywhere in the config (a field named ``dropout``, ``top_p``, ``drop_*`` or ``*_prob``), and
raises one `ConfigError` listing each field that is out of range: its name, its value and what
it accepts (`check_ranges`); then each `init_from` load's work directory must hold a
``checkpoints/`` folder (`InitFromError` otherwise). A field the config does not have is not
checked (family bases add their own fields; `check_config_keys` catches misspelled ones).
Family-specific consistency (a U-Net's levels against the image size, a GAN's phases) stays
with the family's ``make_method``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from typing import Any

from jgen import errors
from jgen.nn.dtypes import COMPUTE_DTYPES
from jgen.train import init_from as init_from_lib
from jgen.train import optim as optim_lib
from jgen.train import parallel

__all__ = ["RULES", "check_ranges", "validate_config"]

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what it accepts in words)


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int = 0, *, none: bool = False) -> Rule:
  """An integer >= `lo` (or None when `none`)."""
  return ((lambda v: (none and v is None) or (_is_int(v) and v >= lo)),
          f"an integer >= {lo}" + (" or None" if none else ""))


def number(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           none: bool = False) -> Rule:
  """A number in [lo, hi] (open ends where asked; no upper bound when `hi` is None)."""
  def ok(v):
    if none and v is None:
      return True
    if not _is_number(v):
      return False
    above = v > lo if lo_open else v >= lo
    below = hi is None or (v < hi if hi_open else v <= hi)
    return above and below
  upper = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
  span = f"{'(' if lo_open else '['}{lo}, {upper}"
  return ok, f"a number in {span}" + (" or None" if none else "")


def one_of(choices: tuple) -> Rule:
  return (lambda v: v in choices), f"one of {', '.join(map(repr, choices))}"


_BOOL: Rule = ((lambda v: isinstance(v, bool)), "True or False")
_PROBABILITY = number(0.0, 1.0)
_POSITIVE = integer(1)
_COUNT = integer(0)

_OPTIM: dict[str, Rule] = {
    "name": one_of(optim_lib.OPTIMIZERS), "lr": number(0.0),
    "b1": number(0.0, 1.0, hi_open=True), "b2": number(0.0, 1.0, hi_open=True),
    "eps": number(0.0, lo_open=True), "weight_decay": number(0.0),
    "warmup_steps": _COUNT, "schedule": one_of(optim_lib.SCHEDULES),
    "decay_from": _PROBABILITY, "decay_rate": number(0.0, 1.0, lo_open=True),
    "decay": number(0.0, 1.0, hi_open=True), "momentum": number(0.0, 1.0, hi_open=True),
    "grad_clip_norm": number(0.0, none=True),
}

# "block.field" -> rule; `validate_config` checks the fields a config has.
RULES: dict[str, Rule] = {
    "seed": _COUNT,
    "data.image_size": _POSITIVE, "data.channels": one_of((1, 3)),
    "data.batch_size": _POSITIVE, "data.resize": _BOOL, "data.random_flip": _BOOL,
    "data.prefetch": _COUNT, "data.cache": _BOOL, "data.skip_corrupt": _BOOL,
    "data.train_examples": _COUNT, "data.canvas": _COUNT,
    "model.dtype": one_of(tuple(COMPUTE_DTYPES)),
    **{f"optim.{k}": r for k, r in _OPTIM.items()},
    **{f"optim_d.{k}": (lambda v, ok=ok: v is None or ok(v), f"{words} or None (as optim)")
       for k, (ok, words) in _OPTIM.items()},
    "lora.rank": _COUNT, "lora.alpha": number(0.0, lo_open=True, none=True),
    "lora.init": one_of(("kaiming", "gaussian")),
    "mesh.fsdp": _POSITIVE, "parallel": one_of(parallel.MODES),
    "train.num_steps": _COUNT, "train.ema_decay": _PROBABILITY, "train.log_every": _POSITIVE,
    "train.checkpoint_every": _POSITIVE, "train.keep_checkpoints": _POSITIVE,
    "train.sample_every": _COUNT, "train.eval_every": _COUNT, "train.eval_batches": _POSITIVE,
    "sample.num": _POSITIVE, "sample.batch_size": _POSITIVE,
    "eval.num_samples": _POSITIVE, "eval.batch_size": _POSITIVE,
    "eval.dtype": one_of(tuple(COMPUTE_DTYPES)),
    "eval.reference_max_images": integer(1, none=True),
    "eval.num_reference_features": integer(1, none=True),
    "eval.is_splits": _POSITIVE, "eval.pr_k": _POSITIVE, "eval.kid_subsets": _POSITIVE,
    "eval.kid_subset_size": _POSITIVE, "eval.ppl_samples": _POSITIVE,
    "eval.ppl_epsilon": number(0.0, lo_open=True), "eval.ppl_sampling": one_of(("end", "full")),
}

# Fields that are probabilities wherever they appear (a model's dropout, a condition's drop rate).
_PROBABILITY_NAME = re.compile(r"^(dropout|top_p|drop_\w+|\w+_prob)$")


def _lookup(config: Any, dotted: str) -> tuple[bool, Any]:
  node = config
  for key in dotted.split("."):
    if not hasattr(node, "keys") or key not in node:
      return False, None
    node = node[key]
  return True, node


def _probabilities(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
  out = []
  for key in node.keys():
    value, name = node[key], f"{prefix}{key}"
    if hasattr(value, "keys"):
      out += _probabilities(value, f"{name}.")
    elif _PROBABILITY_NAME.match(str(key)) and _is_number(value):
      out.append((name, value))
  return out


def _method_problem(name: Any) -> str | None:
  """Why `config.method` names no importable module (None when it does), without importing it."""
  if not isinstance(name, str) or not name:
    return f"unknown method {name!r}: set --config.method to a module path such as 'diffusion.ddpm'"
  for candidate in (f"jgen.{name}", name):
    try:
      if importlib.util.find_spec(candidate) is not None:
        return None
    except (ModuleNotFoundError, ValueError):
      continue  # a parent package that does not exist
  return (f"unknown method {name!r}: neither jgen.{name} nor {name} is a module; set "
          "--config.method to a module under jgen/ that defines make_method(config), e.g. "
          "'diffusion.ddpm'")


def check_ranges(config: Any) -> None:
  """Checks the ranges of `config`'s common fields (see the module docstring); reads no file.

  Raises:
    ConfigError: every field out of range, each as ``--config.<field>=<value>: <field> must be
      <what it accepts>``.
  """
  problems = []
  for field, (ok, accepted) in RULES.items():
    present, value = _lookup(config, field)
    if present and not ok(value):
      problems.append(f"--config.{field}={value!r}: {field} must be {accepted}")
  for field, value in _probabilities(config):
    if not _PROBABILITY[0](value):
      problems.append(f"--config.{field}={value!r}: {field} is a probability, in [0, 1]")
  if "method" in config:
    problem = _method_problem(config.method)
    if problem:
      problems.append(problem)
  if problems:
    raise errors.ConfigError("; ".join(problems))


def validate_config(config: Any) -> None:
  """`check_ranges`, then the work directory of each `init_from` load: before data or compile.

  Raises:
    ConfigError: a field out of range (`check_ranges`).
    InitFromError: an `init_from` field that does not exist, or a load whose work directory
      holds no ``checkpoints/`` folder.
  """
  check_ranges(config)
  for spec in init_from_lib.parse_init_from(config):
    init_from_lib.checkpoints_dir(spec.workdir)  # InitFromError when the run is not there
