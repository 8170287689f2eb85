"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over splits.

  IS = exp( mean_x sum_y p(y|x) (log p(y|x) - log p(y)) ),  p(y) = mean_x p(y|x),

computed on each of `splits` consecutive slices of the samples (10 in the reference code, with
p(y) the marginal *of the slice*), reported as the mean and standard deviation over the slices.
p(y|x) is the softmax of the classifier's logits: for the FID Inception, its 1008 logits
*without* the fc bias (``logits_unbiased`` of `jgen.metrics.inception`), as the original
OpenAI code (``matmul(pool3, w)``) and torch-fidelity compute it; for a domain classifier
(`jgen.metrics.domain`), its 10 class logits ("domain IS": between 1 and 10, comparable only
to other domain IS of the same network).

Computed in float64 with log-softmax, so confident (near one-hot) predictions are exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inception_score", "log_softmax", "logits_for_is"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis, in float64."""
  x = np.asarray(logits, np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logits_for_is(outputs: dict[str, np.ndarray]) -> np.ndarray:
  """The logits IS is computed from: ``logits_unbiased`` where a network gives them (the FID
  Inception, as the reference IS code), else ``logits``.

  Raises:
    ValueError: the network gives no logits.
  """
  for key in ("logits_unbiased", "logits"):
    if key in outputs:
      return outputs[key]
  raise ValueError(f"IS needs class logits; the feature network gives only {sorted(outputs)}")


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
  """IS of samples from their classifier logits [N, K]: (mean, std) over `splits` slices.

  Args:
    logits: class logits [N, K] (not probabilities).
    splits: number of consecutive, near-equal slices (``np.array_split``); each needs >= 1
      sample.

  Returns:
    (mean, std) of the per-slice scores (std with ddof = 0, as the reference code); between 1
    (every sample predicted alike) and K (confident predictions, uniform over the classes).

  Raises:
    ValueError: for non-2-D logits or fewer samples than splits.
  """
  log_p = log_softmax(logits)
  if log_p.ndim != 2:
    raise ValueError(f"expected logits [N, K], got shape {log_p.shape}")
  if splits < 1 or len(log_p) < splits:
    raise ValueError(f"need at least one sample per split: {len(log_p)} samples, {splits} splits")
  scores = []
  for part in np.array_split(log_p, splits):
    p = np.exp(part)
    with np.errstate(divide="ignore", invalid="ignore"):
      log_marginal = np.log(p.mean(axis=0))  # -inf for a class that no sample predicts
      terms = np.where(p > 0, p * (part - log_marginal), 0.0)  # 0 log 0 = 0
    kl = terms.sum(axis=1)
    scores.append(np.exp(kl.mean()))
  scores = np.asarray(scores)
  return float(scores.mean()), float(scores.std())
