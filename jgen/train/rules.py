"""What trains: regex rules over parameter paths, and the nested-dict views they select.

A *rule* is ``(pattern, action)``: ``pattern`` is a regular expression that must match a whole
parameter path (``re.fullmatch``; paths join the nested dict keys with ``/``, e.g.
``"unet/down_0/conv/kernel"``), ``action`` is a learning-rate multiplier (a float; 1.0 trains
as configured, 0.1 at a tenth of the rate) or ``"frozen"``. For each leaf the first matching
rule wins; leaves no rule matches train with multiplier 1.0. A rule that matches no leaf at all
is an error (a typo would otherwise silently train everything), in the spirit of big_vision's
optax rules.

Frozen leaves are left out of the *trainable view* (`select`), so they get no gradient, no
optimizer state and no EMA copy; the view is a nested dict holding only the kept leaves (no
``None`` placeholders, which checkpointers and optimizers treat inconsistently).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jgen.ops.trees import flat, unflat

PyTree = Any
Rule = tuple[str, float | None]  # (pattern, multiplier); None = frozen

__all__ = ["FROZEN", "Rule", "flat", "leaf_multipliers", "merge", "parse_rules", "select",
           "unflat"]

FROZEN = "frozen"


def parse_rules(spec: Sequence[Any] | str | None) -> tuple[Rule, ...]:
  """Normalizes `config.optim.rules` into `((pattern, multiplier or None), ...)`.

  Args:
    spec: a sequence of `(pattern, action)` pairs, its Python literal as a string (what a
      `--config.optim.rules="(('lora/.*', 1.0), ('.*', 'frozen'))"` override gives), or
      None/empty for "everything trains".

  Raises:
    ValueError: a malformed rule or pattern, or a negative multiplier.
  """
  if not spec:
    return ()
  if isinstance(spec, str):
    try:
      spec = ast.literal_eval(spec)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"cannot parse optim.rules {spec!r}: write a tuple of (regex, "
                       "multiplier or 'frozen') pairs, e.g. "
                       "\"(('lora/.*', 1.0), ('.*', 'frozen'))\"") from e
  if isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str):
    spec = (spec,)  # one pair
  rules = []
  for rule in spec:
    if not (isinstance(rule, Sequence) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ValueError(f"optim.rules entry {rule!r} is not a (regex, multiplier or 'frozen') "
                       "pair")
    pattern, action = rule
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"optim.rules pattern {pattern!r} is not a regular expression: {e}") from e
    if action == FROZEN or action is None:
      rules.append((pattern, None))
    elif isinstance(action, (int, float)) and not isinstance(action, bool) and action >= 0:
      rules.append((pattern, float(action)))
    else:
      raise ValueError(f"optim.rules action {action!r} for {pattern!r} must be a "
                       "non-negative learning-rate multiplier or 'frozen'")
  return tuple(rules)


def leaf_multipliers(paths: Sequence[str], rules: Sequence[Rule], *, what: str = "parameter"
                     ) -> dict[str, float | None]:
  """`{path: multiplier or None (frozen)}`: the first matching rule wins, default 1.0.

  Raises:
    ValueError: a rule matches none of `paths` (the message lists a few paths).
  """
  out: dict[str, float | None] = {}
  used = [False] * len(rules)
  for path in paths:
    out[path] = 1.0
    for i, (pattern, mult) in enumerate(rules):
      if re.fullmatch(pattern, path):
        out[path], used[i] = mult, True
        break
  unused = [rules[i][0] for i, u in enumerate(used) if not u]
  if unused:
    sample = ", ".join(sorted(paths)[:8])
    raise ValueError(f"rule pattern(s) {unused} match no {what} path (patterns must match a "
                     f"whole path, '/'-separated; an earlier rule may have taken every match). "
                     f"{len(paths)} paths, e.g. {sample}")
  return out


def select(tree: Mapping[str, Any], keep: Callable[[str], bool] | Mapping[str, Any]
           ) -> dict[str, Any]:
  """The nested dict of `tree`'s leaves whose path `keep` takes (a predicate or a set of paths)."""
  pred = keep if callable(keep) else keep.__contains__
  return unflat({k: v for k, v in flat(tree).items() if pred(k)})


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
  """`base` with the leaves of `override` (a sub-selection of the same paths) put in.

  Raises:
    KeyError: `override` has a path that `base` lacks.
  """
  items = flat(base)
  for k, v in flat(override).items():
    if k not in items:
      raise KeyError(f"{k!r} is not a path of the tree being merged into")
    items[k] = v
  return unflat(items)
