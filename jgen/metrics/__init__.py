"""Sample metrics of generative models and the networks they are computed with.

FID (`fid`), KID (`mmd`), Inception Score (`classifier_score`), improved precision & recall and
density & coverage (`precision_recall`), perceptual path length (`ppl`) over a `FeatureNet`
(`networks.load`: the FID Inception of `inception`, or a small domain classifier of
`domain`), LPIPS (`lpips`), and `evaluate`, which ties them to a sampler and a dataset.

The names below are imported on first use (PEP 562), so that ``import jgen.metrics`` stays
light and ``python -m jgen.metrics.fid`` / ``jgen.metrics.domain`` run their module once.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": ("METRICS", "auto_features", "evaluate_config", "image_metrics",
                 "parse_metrics", "reference_features", "sample_metrics"),
    "feature_net": ("FeatureNet", "as_uint8", "to_uint8"),
    "networks": ("load_feature_net",),
    "fid": ("GaussianStats", "accumulate", "fid_from_stats", "frechet_distance", "load_stats",
            "reference_stats", "save_stats"),
    "classifier_score": ("inception_score",),
    "mmd": ("kid", "mmd2_unbiased", "polynomial_kernel"),
    "lpips": ("LPIPS", "lpips_distance", "lpips_variables"),
    "ppl": ("feature_distance", "filtered_mean", "float_features_fn", "lerp",
            "path_length_distances", "perceptual_path_length", "slerp"),
    "precision_recall": ("knn_radii", "pairwise_distances", "prdc"),
}
_RENAMED = {"load_feature_net": "load"}  # networks.load, exported under a clearer name
_SUBMODULES = ("classifier_score", "domain", "evaluate", "feature_net", "fid", "inception",
               "lpips", "mmd", "networks", "ppl", "precision_recall", "weights")
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
  if name in _WHERE:
    module = importlib.import_module(f"jgen.metrics.{_WHERE[name]}")
    value = getattr(module, _RENAMED.get(name, name))
  elif name in _SUBMODULES:
    value = importlib.import_module(f"jgen.metrics.{name}")
  else:
    raise AttributeError(f"module 'jgen.metrics' has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
