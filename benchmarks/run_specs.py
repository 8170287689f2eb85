"""The `--run CONFIG[:VARIANT]=WORKDIR[@KEY=VALUE;...]` specs the digits benchmarks take.

`parse_run` splits a spec; `load_config` builds the config of `CONFIG[:VARIANT]` with the
overrides (Python literals, `;`-separated), e.g. the fields a run was trained with on the
command line, so that its checkpoint restores into the same networks.
"""

from __future__ import annotations

import ast
import os

import ml_collections

from jgen.train.config import experiment_module


def parse_run(run: str) -> tuple[str, str, str]:
  """`CONFIG[:VARIANT]=WORKDIR[@OVERRIDES]` -> (spec, workdir, overrides)."""
  spec, _, rest = run.partition("=")
  workdir, _, overrides = rest.partition("@")
  return spec, workdir, overrides


def load_config(spec: str, overrides: str = "") -> ml_collections.ConfigDict:
  """The config of `CONFIG[:VARIANT]` with `KEY=VALUE;...` overrides (Python literals)."""
  path, _, arg = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  config = experiment_module(name, path).get_config(arg or None)
  for item in filter(None, overrides.split(";")):
    key, _, value = item.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    parsed = ast.literal_eval(value)
    node[leaf] = parsed if node[leaf] is None else type(node[leaf])(parsed)
  return config
