"""Nested-dict parameter trees as flat ``{"a/b/c": leaf}`` dicts (the paths rules match)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.traverse_util as traverse_util

__all__ = ["flat", "unflat"]


def flat(tree: Mapping[str, Any]) -> dict[str, Any]:
  """`{"a/b/c": leaf}` of a nested dict (empty dicts dropped)."""
  if not isinstance(tree, Mapping):
    raise TypeError(f"parameters must be nested dicts, got {type(tree).__name__}")
  return traverse_util.flatten_dict(dict(tree), sep="/")


def unflat(items: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `flat`."""
  return traverse_util.unflatten_dict(dict(items), sep="/")
